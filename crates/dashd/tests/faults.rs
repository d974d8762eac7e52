//! Storage faults heal, and `/health` tells the truth: a full disk makes writes answer
//! 503 and health `degraded` with the reason, and writes resume by themselves once there
//! is room again; a database file replaced or deleted under the store is a fatal fault;
//! a second store on the same database file is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dash_core::BotRef;
use dash_core::api::{CreateBot, CreateTenant};
use dash_core::config::Config;
use dash_core::flow::Format;
use dashd::state::AppState;
use dashd::store::flows::FlowStore;
use dashd::store::tenants::TenantStore;
use dashd::store::{
    self, MigrationPolicy, NewFlowVersion, SqlStore, Store, StoreError, StoreHealth, TenantRef,
};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use tower::ServiceExt;

fn tenant(slug: &str) -> CreateTenant {
    CreateTenant {
        slug: slug.into(),
        name: None,
    }
}

fn flow(bytes: usize) -> NewFlowVersion {
    NewFlowVersion {
        format: Format::Json,
        source: "x".repeat(bytes),
        document: json!({}),
    }
}

fn bot_ref() -> BotRef {
    BotRef::Path {
        tenant: "acme".into(),
        bot: "front".into(),
    }
}

async fn open_at(path: &Path, options: SqliteConnectOptions, connections: u32) -> SqlStore {
    let store = SqlStore::open_sqlite(
        options.filename(path),
        path.display().to_string(),
        connections,
        dash_core::config::SqliteSynchronous::Normal,
    )
    .await
    .unwrap();
    store.prepare(MigrationPolicy::Apply).await.unwrap();
    store
}

/// A tenant with one bot, and `bytes` of flow source stored as version 1.
async fn seed(store: &dyn Store, bytes: usize) {
    store.create_tenant(&tenant("acme")).await.unwrap();
    let bot: CreateBot = serde_json::from_value(json!({"name": "front"})).unwrap();
    store
        .create_bot(&TenantRef::Slug("acme".into()), &bot)
        .await
        .unwrap();
    store
        .create_flow_version(&bot_ref(), &flow(bytes), false)
        .await
        .unwrap();
}

/// Polls `check` until it holds, failing after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `PRAGMA max_page_count` on every connection makes the file "full" at its current
/// size: SQLite then fails writes that need a new page with SQLITE_FULL ("database or
/// disk is full"), exactly as a full disk does. Writes that fit (a deletion) must go
/// through on the very next try, on the same single connection, without a restart.
#[tokio::test]
async fn a_full_database_answers_unavailable_and_the_next_write_that_fits_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashd.db");
    let store = open_at(&path, SqliteConnectOptions::new(), 1).await;
    seed(&store, 400_000).await;
    store.close().await;
    drop(store);

    // A maximum below the current size is raised to the current size.
    let full = SqliteConnectOptions::new().pragma("max_page_count", "1");
    let store = open_at(&path, full, 1).await;
    for _ in 0..3 {
        let err = store
            .create_flow_version(&bot_ref(), &flow(800_000), false)
            .await
            .unwrap_err();
        assert!(
            err.is_unavailable(),
            "a full database is unavailable: {err}"
        );
        assert!(err.to_string().contains("full"), "{err}");
    }
    // Freeing pages needs no new page: it must work on the connection that just failed.
    let deleted = store.delete_flow_version(&bot_ref(), 1).await.unwrap();
    assert_eq!(deleted.version, 1);
    let created = store
        .create_flow_version(&bot_ref(), &flow(1_000), false)
        .await
        .unwrap();
    // The failed attempts took no version number: they rolled back.
    assert_eq!(created.version, 2);
    assert_eq!(store.health().await, StoreHealth::Ok);
    let tenants = store.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `4m`), or `None` when this environment may not mount
    /// (then the test counts as skipped, except under CI where it must run).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        if matches!(status, Ok(status) if status.success()) {
            return Some(Self { dir });
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the disk-full drill must run under CI: cannot mount a tmpfs ({status:?})"
        );
        eprintln!("skipped: cannot mount a tmpfs here (run as root to drill a full disk)");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `dir` with a filler file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    // Whatever part of a block is left: one byte at a time is cheap at this point.
    while file.write_all(&[0]).is_ok() {}
    filler
}

async fn app_state(config: Config, store: Box<dyn Store>) -> AppState {
    let store: std::sync::Arc<dyn Store> = store.into();
    let config = std::sync::Arc::new(config);
    let pipeline = dashd::pipeline::Pipeline::start(
        store.clone(),
        config.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    AppState {
        store,
        auth: std::sync::Arc::new(
            dashd::auth::Auth::load(&config.api, &config.data_dir)
                .unwrap()
                .0,
        ),
        pipeline: pipeline.into(),
        admin_socket: config.data_dir.join("dashd.sock"),
        config,
        started: Instant::now(),
        started_at: chrono::Utc::now(),
        http_addr: "127.0.0.1:3009".parse().unwrap(),
    }
}

async fn call(
    router: axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn admin(state: &AppState) -> axum::Router {
    use axum::extract::connect_info::MockConnectInfo;
    use dashd::admin::access::{AdminAccess, Peer, PeerInfo};
    let uid = nix::unistd::getuid().as_raw();
    dashd::admin::router(
        state.clone(),
        AdminAccess {
            daemon_uid: uid,
            group: None,
        },
    )
    .layer(MockConnectInfo(PeerInfo(Some(Peer::new(uid, uid)))))
}

/// The disk-full drill: the database on a small tmpfs, filled up. Writes answer 503 and
/// `/health` says `degraded` and why; once the filler is deleted, health and writes
/// recover by themselves, and everything acknowledged before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_heals_when_space_returns() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let config = Config {
        data_dir: disk.path().to_owned(),
        ..Config::default()
    };
    let state = app_state(config.clone(), store::open(&config, None).await.unwrap()).await;
    let public = dashd::gateway::router(state.clone());

    let (status, body) = call(public.clone(), "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("reason").is_none(), "{body}");
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let slug = format!("before-{n}");
        let (status, body) = call(
            admin(&state),
            "POST",
            "/v1/tenants",
            Some(json!({"slug": slug})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        acknowledged.push(slug);
    }

    let filler = fill(disk.path());
    // Keep writing until the WAL needs a page the disk does not have.
    let mut refused = None;
    for n in 0..2_000 {
        let slug = format!("during-{n}");
        let (status, body) = call(
            admin(&state),
            "POST",
            "/v1/tenants",
            Some(json!({"slug": slug, "name": "x".repeat(200)})),
        )
        .await;
        match status {
            StatusCode::CREATED => acknowledged.push(slug),
            _ => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("a full disk must refuse writes");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // Refused again: the store stays refused while the disk is full.
    let (status, _) = call(
        admin(&state),
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "refused"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let (status, body) = call(public.clone(), "GET", "/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["database"], "error", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("database or disk is full"), "{body}");
    assert!(reason.contains("since"), "{body}");

    std::fs::remove_file(&filler).unwrap();
    // Health recovers by itself, with no write from anyone else.
    eventually(Duration::from_secs(5), "health back to ok", || {
        let public = public.clone();
        async move { call(public, "GET", "/health", None).await.0 == StatusCode::OK }
    })
    .await;
    let (status, body) = call(
        admin(&state),
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "after"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    acknowledged.push("after".into());

    let stored: Vec<String> = state
        .store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.slug)
        .collect();
    for slug in &acknowledged {
        assert!(stored.contains(slug), "acknowledged tenant {slug} was lost");
    }
    state.store.close().await;
}

/// The file deleted under an open store: detected at the next write and by the watcher,
/// health says so, writes are refused (never written into the unlinked inode), and the
/// fatal token fires so the daemon can stop.
#[tokio::test]
async fn a_deleted_database_file_is_a_fatal_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashd.db");
    let store = open_at(&path, SqliteConnectOptions::new(), 2).await;
    seed(&store, 10).await;
    let fatal = store.fatal();
    assert!(!fatal.is_cancelled());

    std::fs::remove_file(&path).unwrap();
    let err = store.create_tenant(&tenant("lost")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("was deleted"), "{err}");
    assert!(fatal.is_cancelled());
    let health = store.health().await;
    let reason = health.reason().expect("degraded");
    assert!(reason.contains("was deleted"), "{reason}");
    assert!(reason.contains(&path.display().to_string()), "{reason}");
    // Still refused later: the fault does not heal by itself.
    assert!(store.create_tenant(&tenant("lost2")).await.is_err());
}

/// The file replaced (renamed over) while nothing writes: the periodic check notices.
#[tokio::test]
async fn a_replaced_database_file_is_detected_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashd.db");
    let store = open_at(&path, SqliteConnectOptions::new(), 2).await;
    seed(&store, 10).await;
    let fatal = store.fatal();

    let other = dir.path().join("other.db");
    std::fs::copy(&path, &other).unwrap();
    std::fs::rename(&other, &path).unwrap();
    tokio::time::timeout(Duration::from_secs(15), fatal.cancelled())
        .await
        .expect("the replaced file is noticed by the periodic check");
    let reason = store.health().await.reason().unwrap().to_owned();
    assert!(reason.contains("was replaced"), "{reason}");
    let err = store.create_tenant(&tenant("lost")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

/// The single-instance lock is on the database file: a second store on it is refused
/// with a clear message while the first is open, and opens once the first is closed.
/// (Every other test shows SQLite works with the lock held.)
#[tokio::test]
async fn a_second_store_on_the_same_file_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let first = store::open(&config, None).await.unwrap();
    first.create_tenant(&tenant("acme")).await.unwrap();
    // Deleting a lock file next to it changes nothing: there is none to delete.
    assert!(!dir.path().join("dashd.lock").exists());

    let err = store::open(&config, None).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("another dashd is already running"),
        "{message}"
    );
    assert!(message.contains("dashd.db"), "{message}");
    // The refused open touched nothing: the first store still works.
    first.create_tenant(&tenant("beta")).await.unwrap();

    // Closing releases the lock even while handles to the closed store remain (a
    // daemon restarted in the same process).
    first.close().await;
    let second = store::open(&config, None).await.unwrap();
    assert_eq!(second.list_tenants().await.unwrap().len(), 2);
    second.close().await;
    drop(first);
}

/// The disk-full drill with a whole daemon and its message intake: customers' messages
/// are accepted (202) until the disk is full, then refused with 503 (never acknowledged
/// without being stored); once space returns, intake accepts again by itself within
/// seconds, and every message acknowledged before, during or after is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_drill_intake_refuses_then_resumes_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("6m") else {
        return;
    };
    let mut config = Config {
        data_dir: disk.path().join("dashd-data"),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.dispatcher.bot_rate_per_minute = 0;
    config.pipeline.flow_worker_exe = Some(env!("CARGO_BIN_EXE_dashd").into());
    config.pipeline.retry_base_ms = 100;
    let daemon = dashd::start(config).await.unwrap();
    let client = reqwest::Client::builder()
        .unix_socket(disk.path().join("dashd-data/dashd.sock"))
        .build()
        .unwrap();
    let post = |path: &'static str, body: Value| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("http://dashd{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    assert!(
        post("/v1/tenants", json!({"slug": "acme"}))
            .await
            .0
            .is_success()
    );
    assert!(
        post(
            "/v1/tenants/acme/bots",
            json!({"name": "ventas", "settings": {"chain": ["sandbox"]}})
        )
        .await
        .0
        .is_success()
    );
    let echo = "default_flow = \"echo\"\n[[flows]]\nid = \"echo\"\nsteps = [{ id = \"say\", kind = \"end\", text = \"{{ input }}\" }]\n";
    assert!(
        post(
            "/v1/tenants/acme/bots/ventas/flows",
            json!({"source": echo, "activate": true})
        )
        .await
        .0
        .is_success()
    );
    let mut acknowledged = Vec::new();
    let mut n = 0;
    let mut say = {
        move || {
            n += 1;
            let body = json!({"from": format!("+1555{:07}", n % 50), "text": format!("m{n} {}", "x".repeat(500))});
            async move { post("/v1/tenants/acme/bots/ventas/sandbox/messages", body).await }
        }
    };
    for _ in 0..10 {
        let (status, body) = say().await;
        assert_eq!(status, 202, "{body}");
        acknowledged.push(body["message_id"].as_str().unwrap().to_owned());
    }

    let filler = fill(disk.path());
    let mut refused = false;
    for _ in 0..5_000 {
        let (status, body) = say().await;
        match status.as_u16() {
            202 => acknowledged.push(body["message_id"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                refused = true;
                break;
            }
            other => panic!("intake answered {other} on a full disk: {body}"),
        }
    }
    assert!(refused, "a full disk never refused a message");
    let health_url = format!("http://{}/health", daemon.http_addr);
    let health = reqwest::get(&health_url).await.unwrap();
    assert_eq!(health.status(), 503);

    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    loop {
        let (status, body) = say().await;
        if status == 202 {
            acknowledged.push(body["message_id"].as_str().unwrap().to_owned());
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "intake did not resume by itself"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "intake resumed {:?} after space returned; {} messages acknowledged",
        freed.elapsed(),
        acknowledged.len()
    );
    // Every acknowledged message is handled: each gets its echo.
    let store = daemon.store();
    let bot = store
        .bot(&BotRef::Path {
            tenant: "acme".into(),
            bot: "ventas".into(),
        })
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "every acknowledged message handled",
        || {
            let store = store.clone();
            let count = acknowledged.len();
            async move { store.sandbox_sent(bot.id).await.unwrap().len() >= count }
        },
    )
    .await;
    let replies: std::collections::HashSet<String> = store
        .sandbox_sent(bot.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.body.text)
        .collect();
    assert_eq!(
        replies.len(),
        acknowledged.len(),
        "a message was answered twice or lost"
    );
    daemon.shutdown().await.unwrap();
}
