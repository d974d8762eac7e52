//! `dashctl session` against a real dashd: what it says before a bridge is configured,
//! when the bridge cannot be reached, and the session list. Pairing through a running
//! bridge process is tested with the bridges themselves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::net::TcpListener;

use common::Env;

/// A local URL nothing listens on.
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_commands_explain_what_is_missing() {
    let env = Env::start().await;
    env.bot_with(None).await;
    // No bridge anywhere yet.
    let run = env.ctl(&["session", "list"]).await.ok();
    assert!(
        run.stderr.contains("no bridge sessions yet"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.ctl(&["-o", "json", "session", "list"])
            .await
            .ok()
            .json(),
        serde_json::json!([])
    );
    // The chain has no bridge.
    env.ctl(&["session", "pair", "acme/ventas"])
        .await
        .fails(2, "has no provider paired by QR code");
    env.ctl(&["session", "pair", "acme/ventas", "--provider", "meta"])
        .await
        .fails(2, "has no sessions to pair");
    // venom has no pairing codes.
    env.ctl(&[
        "session",
        "pair",
        "acme/ventas",
        "--provider",
        "venom",
        "--pairing-code",
        "+15551234567",
    ])
    .await
    .fails(2, "venom cannot pair by code");
    // In the chain, but not configured.
    env.ctl(&["chain", "set", "acme/ventas", "baileys,sandbox"])
        .await
        .ok();
    env.ctl(&["session", "pair", "acme/ventas"])
        .await
        .fails(5, "has no baileys settings");
    // Configured, but the bridge is not running: dashd says so.
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "bridge-token\n").unwrap();
    let secret = format!("token=@{}", token.path().display());
    let url = closed_port_url();
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "baileys",
        "--set",
        &format!("base_url={url}"),
        "--secret",
        &secret,
    ])
    .await
    .ok();
    env.ctl(&["session", "pair", "acme/ventas", "--timeout", "5"])
        .await
        .fails(1, "the baileys bridge");
    env.stop().await;
}

/// An Evolution API stand-in speaking its documented instance calls (the `apikey`
/// header, `/instance/create`, `/instance/connect`, `/instance/connectionState`,
/// `/instance/logout`), holding one instance's state.
mod evolution {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{delete, get, post};
    use serde_json::{Value, json};

    pub const API_KEY: &str = "evolution-global-key";

    #[derive(Default)]
    pub struct Instance {
        pub created: bool,
        /// `close`, `connecting` or `open`.
        pub state: String,
        pub qrs: u32,
        pub calls: Vec<String>,
    }

    pub type Shared = Arc<Mutex<Instance>>;

    pub async fn start() -> (String, Shared) {
        let shared: Shared = Arc::default();
        let app = Router::new()
            .route("/instance/create", post(create))
            .route("/instance/connect/{name}", get(connect))
            .route("/instance/connectionState/{name}", get(state))
            .route("/instance/logout/{name}", delete(logout))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, shared)
    }

    fn refused(headers: &HeaderMap) -> Option<(StatusCode, axum::Json<Value>)> {
        (headers.get("apikey").and_then(|v| v.to_str().ok()) != Some(API_KEY)).then(|| {
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}})),
            )
        })
    }

    fn missing(name: &str) -> (StatusCode, axum::Json<Value>) {
        (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"status": 404, "error": "Not Found", "response": {"message": [format!("The \"{name}\" instance does not exist")]}}),
            ),
        )
    }

    async fn create(
        State(shared): State<Shared>,
        headers: HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> (StatusCode, axum::Json<Value>) {
        if let Some(refused) = refused(&headers) {
            return refused;
        }
        let mut instance = shared.lock().unwrap();
        instance
            .calls
            .push(format!("create {}", body["instanceName"]));
        instance.created = true;
        instance.state = "close".into();
        (
            StatusCode::CREATED,
            axum::Json(
                json!({"instance": {"instanceName": body["instanceName"], "status": "created"}, "hash": "5A793D2C"}),
            ),
        )
    }

    async fn connect(
        State(shared): State<Shared>,
        Path(name): Path<String>,
        headers: HeaderMap,
    ) -> (StatusCode, axum::Json<Value>) {
        if let Some(refused) = refused(&headers) {
            return refused;
        }
        let mut instance = shared.lock().unwrap();
        instance.calls.push("connect".into());
        if !instance.created {
            return missing(&name);
        }
        if instance.state == "open" {
            return (
                StatusCode::OK,
                axum::Json(json!({"instance": {"instanceName": name, "state": "open"}})),
            );
        }
        instance.state = "connecting".into();
        instance.qrs += 1;
        (
            StatusCode::OK,
            axum::Json(
                json!({"pairingCode": null, "code": format!("2@EVO-{}", instance.qrs), "count": instance.qrs}),
            ),
        )
    }

    async fn state(
        State(shared): State<Shared>,
        Path(name): Path<String>,
        headers: HeaderMap,
    ) -> (StatusCode, axum::Json<Value>) {
        if let Some(refused) = refused(&headers) {
            return refused;
        }
        let instance = shared.lock().unwrap();
        if !instance.created {
            return missing(&name);
        }
        (
            StatusCode::OK,
            axum::Json(json!({"instance": {"instanceName": name, "state": instance.state}})),
        )
    }

    async fn logout(
        State(shared): State<Shared>,
        Path(name): Path<String>,
        headers: HeaderMap,
    ) -> (StatusCode, axum::Json<Value>) {
        if let Some(refused) = refused(&headers) {
            return refused;
        }
        let mut instance = shared.lock().unwrap();
        instance.calls.push("logout".into());
        if !instance.created {
            return missing(&name);
        }
        instance.state = "close".into();
        (
            StatusCode::OK,
            axum::Json(
                json!({"status": "SUCCESS", "error": false, "response": {"message": "Instance logged out"}}),
            ),
        )
    }
}

/// Evolution instances pair like bridge sessions: `session pair --provider evolution`
/// creates the missing instance, shows its QR, and ends when the instance reports
/// itself open through its webhook; `session list` and `logout` cover it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolution_instances_pair_like_bridge_sessions() {
    let env = Env::start().await;
    env.bot_with(None).await;
    let bot_id = env.bot_id().await;
    let (url, instance) = evolution::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("api_key");
    let hook = dir.path().join("webhook_token");
    std::fs::write(&key, evolution::API_KEY).unwrap();
    std::fs::write(&hook, "evolution-hook-token").unwrap();
    // Past the supervisor's first check: what follows is started on the change itself.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    env.ctl(&["chain", "set", "acme/ventas", "evolution,sandbox"])
        .await
        .ok();
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "evolution",
        "--set",
        &format!("base_url={url}"),
        "--set",
        "instance=shop",
        "--secret",
        &format!("api_key=@{}", key.display()),
        "--secret",
        &format!("webhook_token=@{}", hook.display()),
    ])
    .await
    .ok();

    // The supervisor creates the missing instance as soon as the chain uses it.
    common::eventually(std::time::Duration::from_secs(5), || async {
        instance
            .lock()
            .unwrap()
            .calls
            .iter()
            .any(|c| c.starts_with("create"))
    })
    .await;
    let shown = || async {
        let run = env
            .ctl(&["-o", "json", "session", "show", "acme/ventas"])
            .await;
        (run.code == 0).then(|| run.json())
    };
    common::eventually(std::time::Duration::from_secs(10), || async {
        shown().await.is_some_and(|s| s["state"] == "qr")
    })
    .await;
    let first_qr = shown().await.unwrap()["qr"].clone();
    let socket = env.socket();
    let cwd = dir.path().to_owned();
    let pair = tokio::spawn(async move {
        common::run_ctl(
            &cwd,
            Some(&socket),
            &["session", "pair", "acme/ventas", "--timeout", "60"],
        )
        .await
    });
    // `pair` connected the instance again: a QR of its own to show (the supervisor may
    // rotate it too, so give `pair` time to have drawn one before the phone scans).
    common::eventually(std::time::Duration::from_secs(20), || async {
        shown()
            .await
            .is_some_and(|s| s["state"] == "qr" && s["qr"] != first_qr)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // The phone scans: Evolution posts connection.update `open` to the bot's webhook.
    instance.lock().unwrap().state = "open".into();
    let answer = reqwest::Client::new()
        .post(format!(
            "http://{}/webhook/evolution/{bot_id}",
            env.daemon().http_addr
        ))
        .header("X-Dashd-Token", "evolution-hook-token")
        .json(&serde_json::json!({
            "event": "connection.update",
            "instance": "shop",
            "data": {"instance": "shop", "state": "open", "statusReason": 200, "wuid": "5531982968000@s.whatsapp.net"},
            "date_time": "2026-01-01T00:00:00.000Z",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let run = pair.await.unwrap().ok();
    assert!(run.stdout.contains("qr: 2@EVO-"), "{}", run.stdout);
    assert!(run.stdout.contains("+5531982968000"), "{}", run.stdout);
    assert!(
        instance
            .lock()
            .unwrap()
            .calls
            .iter()
            .any(|c| c.starts_with("create")),
        "the missing instance was created"
    );
    let listed = env
        .ctl(&["-o", "json", "session", "list"])
        .await
        .ok()
        .json();
    assert_eq!(listed[0]["provider"], "evolution");
    assert_eq!(listed[0]["state"], "ready");
    assert_eq!(listed[0]["session"], "shop");

    env.ctl(&["--yes", "session", "logout", "acme/ventas"])
        .await
        .ok();
    assert_eq!(instance.lock().unwrap().state, "close");
    let shown = env
        .ctl(&["-o", "json", "session", "show", "acme/ventas"])
        .await
        .ok()
        .json();
    assert_eq!(shown["state"], "logged_out");
    env.stop().await;
}
