//! Router tests without sockets: the admin and public routers called directly, with the
//! peer's credentials injected, against a real SQLite store in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use dash_core::config::Config;
use dashd::admin::access::{AdminAccess, Peer, PeerInfo};
use dashd::state::AppState;
use serde_json::{Value, json};
use tower::ServiceExt;

const DAEMON_UID: u32 = 4242;

async fn state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let store: std::sync::Arc<dyn dashd::store::Store> =
        dashd::store::open(&config, None).await.unwrap().into();
    let config = std::sync::Arc::new(config);
    let pipeline = dashd::pipeline::Pipeline::start(
        store.clone(),
        config.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let state = AppState {
        store,
        auth: std::sync::Arc::new(
            dashd::auth::Auth::load(&config.api, &config.data_dir)
                .unwrap()
                .0,
        ),
        pipeline: pipeline.into(),
        admin_socket: dir.path().join("dashd.sock"),
        config,
        started: std::time::Instant::now(),
        started_at: chrono::Utc::now(),
        http_addr: "127.0.0.1:3009".parse().unwrap(),
    };
    (state, dir)
}

fn admin_as(state: &AppState, uid: u32) -> Router {
    let access = AdminAccess {
        daemon_uid: DAEMON_UID,
        group: None,
    };
    dashd::admin::router(state.clone(), access)
        .layer(MockConnectInfo(PeerInfo(Some(Peer::new(uid, uid)))))
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut request = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, headers)
}

#[tokio::test]
async fn another_uid_is_refused_on_every_route() {
    let (state, _dir) = state().await;
    let stranger = admin_as(&state, 1000);
    for (method, uri) in [
        ("GET", "/v1/status"),
        ("GET", "/v1/tenants"),
        ("DELETE", "/v1/tenants/acme"),
        ("GET", "/nope"),
    ] {
        let (status, body, _) = call(&stranger, method, uri, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(body["error"]["code"], "forbidden");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("uid 1000")
        );
    }
    let (status, _, _) = call(
        &stranger,
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "acme"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing was created.
    let (_, list, _) = call(&admin_as(&state, DAEMON_UID), "GET", "/v1/tenants", None).await;
    assert_eq!(list, json!([]));

    let unknown_peer = dashd::admin::router(
        state.clone(),
        AdminAccess {
            daemon_uid: DAEMON_UID,
            group: None,
        },
    )
    .layer(MockConnectInfo(PeerInfo(None)));
    let (status, _, _) = call(&unknown_peer, "GET", "/v1/status", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn root_and_the_daemon_user_get_versioned_answers() {
    let (state, _dir) = state().await;
    for uid in [0, DAEMON_UID] {
        let (status, body, headers) = call(&admin_as(&state, uid), "GET", "/v1/status", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["api_version"], 1);
        assert_eq!(headers["x-dashd-version"], dash_core::VERSION);
        assert_eq!(headers["x-dashd-api"], "1");
    }
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let (state, _dir) = state().await;
    let admin = admin_as(&state, 0);
    let (status, body, _) = call(
        &admin,
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "acme", "colour": "red"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );

    let request = Request::builder()
        .method("POST")
        .uri("/v1/tenants")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let response = admin.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let request = Request::builder()
        .method("POST")
        .uri("/v1/tenants")
        .body(Body::from("{}"))
        .unwrap();
    let response = admin.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, body, _) = call(&admin, "POST", "/v1/tenants", Some(json!({"slug": "a b"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["field"], "slug");

    let (status, body, _) = call(&admin, "PUT", "/v1/tenants", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let public = dashd::gateway::router(state.clone());
    let (status, body, _) = call(&public, "POST", "/health", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let (status, body, _) = call(&admin, "GET", "/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    let (status, body, _) = call(&admin, "GET", "/v1/bots/not-a-uuid", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "id");

    let (status, _, _) = call(&admin, "DELETE", "/v1/tenants/acme?force=maybe", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    call(&admin, "POST", "/v1/tenants", Some(json!({"slug": "acme"}))).await;
    let (status, body, _) = call(&admin, "PATCH", "/v1/tenants/acme", Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to change")
    );
    let (status, body, _) = call(
        &admin,
        "PATCH",
        "/v1/tenants/acme",
        Some(json!({"status": "asleep"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn bots_are_reachable_by_path_and_id() {
    let (state, _dir) = state().await;
    let admin = admin_as(&state, 0);
    call(&admin, "POST", "/v1/tenants", Some(json!({"slug": "acme"}))).await;
    let (status, bot, _) = call(
        &admin,
        "POST",
        "/v1/tenants/acme/bots",
        Some(json!({"name": "sales", "phone": "+54 9 11 2345-6789"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(bot["phone"], "+5491123456789");
    assert_eq!(bot["timezone"], "UTC");
    let id = bot["id"].as_str().unwrap();
    let (_, by_id, _) = call(&admin, "GET", &format!("/v1/bots/{id}"), None).await;
    let (_, by_path, _) = call(&admin, "GET", "/v1/tenants/acme/bots/sales", None).await;
    assert_eq!(by_id, bot);
    assert_eq!(by_path, bot);
    let (_, cleared, _) = call(
        &admin,
        "PATCH",
        &format!("/v1/bots/{id}"),
        Some(json!({"phone": null})),
    )
    .await;
    assert_eq!(cleared["phone"], Value::Null);
    let (_, filtered, _) = call(&admin, "GET", "/v1/bots?tenant=acme", None).await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    let (status, _, _) = call(&admin, "GET", "/v1/bots?tenant=ghost", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_reports_ok_then_degraded() {
    let (state, _dir) = state().await;
    let public = dashd::gateway::router(state.clone());
    let (status, body, _) = call(&public, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["version"], dash_core::VERSION);
    assert!(body["memory_mb"].as_f64().unwrap() > 0.0);
    assert!(body["uptime_s"].is_u64());
    assert!(body["redis"].is_string());

    // A database that no longer answers.
    state.store.close().await;
    let (status, body, _) = call(&public, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["database"], "error");
}

async fn with_tenant(state: &AppState) -> Router {
    let admin = admin_as(state, 0);
    let (status, _, _) = call(&admin, "POST", "/v1/tenants", Some(json!({"slug": "acme"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    admin
}

#[tokio::test]
async fn bot_settings_are_checked_key_by_key_on_create_and_update() {
    let (state, _dir) = state().await;
    let admin = with_tenant(&state).await;
    let cases = [
        (json!({"chain": "sandbox"}), "settings.chain"),
        (json!({"chain": [7]}), "settings.chain"),
        (json!({"chain": ["carrier-pigeon"]}), "settings.chain"),
        (
            json!({"rate_limit_per_minute": -1}),
            "settings.rate_limit_per_minute",
        ),
        (
            json!({"rate_limit_per_minute": "-1"}),
            "settings.rate_limit_per_minute",
        ),
        (
            json!({"rate_limit_per_minute": "abc"}),
            "settings.rate_limit_per_minute",
        ),
        (
            json!({"rate_limit_per_minute": 1e12}),
            "settings.rate_limit_per_minute",
        ),
        (json!({"rate_limit": 5}), "settings.rate_limit"),
    ];
    for (settings, field) in &cases {
        let (status, body, _) = call(
            &admin,
            "POST",
            "/v1/tenants/acme/bots",
            Some(json!({"name": "sales", "settings": settings})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{settings}: {body}"
        );
        assert_eq!(body["error"]["field"], *field, "{settings}: {body}");
    }
    let (status, body, _) = call(
        &admin,
        "POST",
        "/v1/tenants/acme/bots",
        Some(json!({"name": "sales", "chain": ["carrier-pigeon"]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "chain");

    let (status, bot, _) = call(
        &admin,
        "POST",
        "/v1/tenants/acme/bots",
        Some(json!({"name": "sales", "settings": {"rate_limit_per_minute": 30}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bot}");
    assert_eq!(
        bot["settings"],
        json!({"chain": ["sandbox"], "rate_limit_per_minute": 30})
    );
    for (settings, field) in &cases {
        let (status, body, _) = call(
            &admin,
            "PATCH",
            "/v1/tenants/acme/bots/sales",
            Some(json!({"settings": settings})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{settings}: {body}"
        );
        assert_eq!(body["error"]["field"], *field, "{settings}: {body}");
    }
    // Nothing was replaced by a default along the way.
    let (_, unchanged, _) = call(&admin, "GET", "/v1/tenants/acme/bots/sales", None).await;
    assert_eq!(unchanged["settings"], bot["settings"]);
    let (status, updated, _) = call(
        &admin,
        "PATCH",
        "/v1/tenants/acme/bots/sales",
        Some(json!({"settings": {"chain": ["sandbox"], "rate_limit_per_minute": 0}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["settings"]["rate_limit_per_minute"], 0);
}

#[tokio::test]
async fn sandbox_fields_have_the_send_api_bounds() {
    let (state, _dir) = state().await;
    let admin = with_tenant(&state).await;
    let (status, _, _) = call(
        &admin,
        "POST",
        "/v1/tenants/acme/bots",
        Some(json!({"name": "sales"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let long = "x".repeat(100_000);
    let cases = [
        (json!({"from": "+5491100000001", "text": long}), "text"),
        (
            json!({"from": "+5491100000001", "text": "hola", "reply_id": long}),
            "reply_id",
        ),
        (
            json!({"from": "+5491100000001", "text": "hola", "message_id": long}),
            "message_id",
        ),
        (
            json!({"from": "+5491100000001", "text": "hola", "reply_id": "a\u{0}b"}),
            "reply_id",
        ),
        (
            json!({"from": "+5491100000001", "text": "hola", "name": long}),
            "name",
        ),
        (
            json!({"from": "+5491100000001", "text": "hola", "name": "Ana\u{1b}[2J"}),
            "name",
        ),
        (json!({"from": long, "text": "hola"}), "from"),
    ];
    for (message, field) in cases {
        let (status, body, _) = call(
            &admin,
            "POST",
            "/v1/tenants/acme/bots/sales/sandbox/messages",
            Some(message),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert_eq!(body["error"]["field"], field);
        assert!(body.to_string().len() < 1024, "{field}: echoed back");
    }
}

#[tokio::test]
async fn names_refuse_control_characters() {
    let (state, _dir) = state().await;
    let admin = with_tenant(&state).await;
    for name in [
        "Acme\u{1b}]0;pwned\u{7}",
        "Acme\u{7f}",
        "Acme\u{85}SA",
        "a\u{0}",
    ] {
        let (status, body, _) = call(
            &admin,
            "POST",
            "/v1/tenants",
            Some(json!({"slug": "other", "name": name})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}");
        assert_eq!(body["error"]["field"], "name");
        let (status, body, _) = call(
            &admin,
            "PATCH",
            "/v1/tenants/acme",
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}");
        assert_eq!(body["error"]["field"], "name");
    }
    let (status, body, _) = call(
        &admin,
        "POST",
        "/v1/tenants/acme/bots",
        Some(json!({"name": "sales\u{1b}"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "name");
}

#[tokio::test]
async fn errors_never_echo_unbounded_input() {
    let (state, _dir) = state().await;
    let admin = with_tenant(&state).await;
    let huge = "q".repeat(1024 * 1024);
    for body in [
        json!({"slug": "acme2", "name": 1, "x": huge}),
        json!({"slug": huge}),
        json!({"slug": "acme2", huge.clone(): 1}),
    ] {
        let (status, answer, _) = call(&admin, "POST", "/v1/tenants", Some(body)).await;
        assert!(status.is_client_error(), "{status}");
        assert!(answer.to_string().len() < 2048, "{status}: echoed back");
    }
    let (status, answer, _) = call(
        &admin,
        "PATCH",
        "/v1/tenants/acme",
        Some(json!({"status": huge})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.to_string().len() < 2048, "echoed back");

    let id = "i".repeat(6000);
    for uri in [
        format!("/v1/bots/{id}"),
        format!("/v1/tenants/acme/bots/{id}"),
        format!("/v1/tenants/acme/bots/sales/flows/{id}"),
        format!("/v1/bots?tenant={id}&{id}=1"),
    ] {
        let (status, answer, _) = call(&admin, "GET", &uri, None).await;
        assert!(status.is_client_error(), "{uri}: {status}");
        assert!(answer.to_string().len() < 1024, "{status}: echoed back");
    }
}

#[tokio::test]
async fn a_bad_path_parameter_is_400_as_json() {
    let (state, _dir) = state().await;
    let admin = with_tenant(&state).await;
    for uri in [
        "/v1/tenants/%FF/bots",
        "/v1/tenants/%FF/bots/sales",
        "/v1/bots/%FF%FE",
    ] {
        let (status, body, _) = call(&admin, "GET", uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"]["code"], "bad_request", "{uri}");
    }
}

#[tokio::test]
async fn a_body_past_the_extractor_limit_is_413_as_json() {
    let (state, _dir) = state().await;
    let admin = with_tenant(&state).await;
    let body = json!({"source": "#".repeat(3 * 1024 * 1024)});
    let (status, answer, _) = call(
        &admin,
        "POST",
        "/v1/tenants/acme/bots/sales/flows",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"]["code"], "payload_too_large");
}
