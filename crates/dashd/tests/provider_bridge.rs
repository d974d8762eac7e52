//! The bridge client (`venom`, `wwebjs`, `baileys`) against a loopback bridge: every call's
//! method, path, bearer token and body as `docs/bridges.md` defines them, error answers
//! classified, and events accepted only with a valid, fresh signature, then normalised.
//! The example messages of whatsapp-web.js, venom and Baileys (the project's wire-format
//! vectors) are normalised here as each bridge does, per the contract's mapping.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, Method};
use chrono::{DateTime, TimeZone, Utc};
use common::loopback::Server;
use dash_core::api::{Choice, Location};
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use dashd::adapter::bridge::{Bridge, SessionQr, session_of};
use dashd::adapter::{
    ContactIds, Content, DeliveryStatus, MediaSource, OutboundMessage, ProviderConfig,
    ProviderEvent, Recipient, Secret, SendError, SessionState, WebhookError, WebhookRequest,
    WhatsAppProvider,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "bridge-secret-token";
const SESSION: &str = "shop-1";

fn config(kind: ProviderKind, base_url: Option<&str>, session: Option<&str>) -> ProviderConfig {
    let mut settings = BTreeMap::new();
    if let Some(url) = base_url {
        settings.insert("base_url".to_owned(), url.to_owned());
    }
    if let Some(session) = session {
        settings.insert("session".to_owned(), session.to_owned());
    }
    ProviderConfig {
        bot_id: Uuid::from_u128(0x7c9e_6679_7425_40de_944b_e07f_c1f0_e010),
        kind,
        settings,
        secrets: BTreeMap::from([("token".to_owned(), Secret::new(TOKEN))]),
    }
}

fn bridge(server: &Server) -> Bridge {
    Bridge::new(
        &config(ProviderKind::Wwebjs, Some(&server.url), Some(SESSION)),
        reqwest::Client::new(),
    )
    .unwrap()
}

fn outbound(to: Recipient, content: Content) -> OutboundMessage {
    OutboundMessage {
        bot_id: Uuid::from_u128(7),
        message_id: Uuid::from_u128(42),
        to,
        content,
    }
}

fn to_phone(phone: &str) -> Recipient {
    Recipient {
        phone: Some(phone.to_owned()),
        ..Recipient::default()
    }
}

fn text(body: &str) -> Content {
    Content::Text {
        body: body.to_owned(),
        preview_url: false,
        reply_to: None,
    }
}

fn idempotency_key() -> String {
    Uuid::from_u128(42).to_string()
}

/// What every bridge call must carry.
fn assert_bridge_call(request: &common::loopback::Recorded, method: Method, path: &str) {
    assert_eq!(request.method, method, "{path}");
    assert_eq!(request.path, path);
    assert_eq!(
        request.headers.get("authorization").unwrap(),
        "Bearer bridge-secret-token"
    );
    if request.body != Value::Null {
        assert_eq!(
            request.headers.get("content-type").unwrap(),
            "application/json"
        );
    }
}

#[test]
fn settings_default_per_kind_and_session_to_the_bot() {
    let bridge = Bridge::new(
        &config(ProviderKind::Baileys, None, None),
        reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(bridge.session(), "7c9e6679742540de944be07fc1f0e010");
    assert_eq!(bridge.kind(), ProviderKind::Baileys);
    assert_eq!(bridge.base_url().as_str(), "http://127.0.0.1:3012/");
    for (kind, port) in [
        (ProviderKind::Venom, "3013"),
        (ProviderKind::Wwebjs, "3014"),
    ] {
        let bridge = Bridge::new(&config(kind, None, None), reqwest::Client::new()).unwrap();
        assert_eq!(
            bridge.base_url().port().unwrap().to_string(),
            port,
            "{kind}"
        );
        assert!(!format!("{bridge:?}").contains(TOKEN));
    }
    let mut no_token = config(ProviderKind::Venom, None, None);
    no_token.secrets.clear();
    assert!(Bridge::new(&no_token, reqwest::Client::new()).is_err());
    assert!(
        Bridge::new(
            &config(ProviderKind::Evolution, Some("http://127.0.0.1:1"), None),
            reqwest::Client::new()
        )
        .is_err()
    );
    assert!(
        Bridge::new(
            &config(ProviderKind::Venom, Some("not a url"), None),
            reqwest::Client::new()
        )
        .is_err()
    );
}

#[tokio::test]
async fn text_goes_to_send_with_the_session_and_an_idempotency_key() {
    let server = Server::start().await;
    let bridge = bridge(&server);
    server.answer(200, r#"{"id":"true_15551234567@c.us_3EB0AAAA"}"#);
    let reply = Content::Text {
        body: "Hello!".into(),
        preview_url: false,
        reply_to: Some("false_15551234567@c.us_3EB0BBBB".into()),
    };
    let receipt = bridge
        .send(&outbound(to_phone("+15551234567"), reply))
        .await
        .unwrap();
    assert_eq!(
        receipt.provider_message_id,
        "true_15551234567@c.us_3EB0AAAA"
    );
    let request = server.only_request();
    assert_bridge_call(&request, Method::POST, "/send");
    assert_eq!(
        request.body,
        json!({
            "session": SESSION,
            "to": "15551234567",
            "text": "Hello!",
            "reply_to": "false_15551234567@c.us_3EB0BBBB",
            "idempotency_key": idempotency_key()
        })
    );
}

#[tokio::test]
async fn lids_menus_and_locations_go_as_text() {
    let server = Server::start().await;
    let bridge = bridge(&server);
    let to_lid = Recipient {
        lid: Some("12345678901234@lid".into()),
        ..Recipient::default()
    };
    server.answer(200, r#"{"id":"A1"}"#);
    bridge.send(&outbound(to_lid, text("Oi"))).await.unwrap();

    server.answer(200, r#"{"id":"A2"}"#);
    let menu = Content::Menu {
        body: "How can we help?".into(),
        choices: vec![
            Choice {
                id: "hours".into(),
                label: "Opening hours".into(),
            },
            Choice {
                id: "human".into(),
                label: "Talk to us".into(),
            },
        ],
        button: "Options".into(),
    };
    bridge
        .send(&outbound(to_phone("+15551234567"), menu))
        .await
        .unwrap();

    server.answer(200, r#"{"id":"A3"}"#);
    let location = Content::Location(Location {
        latitude: 40.7128,
        longitude: -74.006,
        name: Some("Shop".into()),
        address: Some("1 Main St".into()),
    });
    bridge
        .send(&outbound(to_phone("+15551234567"), location))
        .await
        .unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_bridge_call(request, Method::POST, "/send");
    }
    assert_eq!(requests[0].body["to"], "12345678901234@lid");
    assert_eq!(
        requests[1].body,
        json!({
            "session": SESSION,
            "to": "15551234567",
            "text": "How can we help?\n1. Opening hours\n2. Talk to us",
            "idempotency_key": idempotency_key()
        })
    );
    assert!(requests[1].body.get("buttons").is_none());
    assert_eq!(
        requests[2].body["text"],
        "Shop\n1 Main St\nhttps://maps.google.com/?q=40.7128,-74.006"
    );
}

#[tokio::test]
async fn media_goes_to_send_media() {
    let server = Server::start().await;
    let bridge = bridge(&server);
    server.answer(200, r#"{"id":"M1"}"#);
    let media = Content::Media {
        kind: MediaKind::Document,
        source: MediaSource::Link("https://example.com/price-list.pdf".into()),
        caption: Some("Prices".into()),
        filename: Some("price-list.pdf".into()),
    };
    let receipt = bridge
        .send(&outbound(to_phone("+15551234567"), media))
        .await
        .unwrap();
    assert_eq!(receipt.provider_message_id, "M1");
    let request = server.only_request();
    assert_bridge_call(&request, Method::POST, "/send-media");
    assert_eq!(
        request.body,
        json!({
            "session": SESSION,
            "to": "15551234567",
            "kind": "document",
            "url": "https://example.com/price-list.pdf",
            "caption": "Prices",
            "filename": "price-list.pdf",
            "idempotency_key": idempotency_key()
        })
    );
}

#[tokio::test]
async fn what_the_contract_lacks_fails_without_a_call() {
    let server = Server::start().await;
    let bridge = bridge(&server);
    let to = to_phone("+15551234567");
    let refused = [
        Content::Template {
            name: "welcome".into(),
            language: "en".into(),
            parameters: vec![],
        },
        Content::Reaction {
            message_id: "X".into(),
            emoji: "👍".into(),
        },
        Content::MarkRead {
            message_id: "X".into(),
        },
        Content::Media {
            kind: MediaKind::Image,
            source: MediaSource::Id("media-1".into()),
            caption: None,
            filename: None,
        },
        text("   "),
    ];
    for content in refused {
        let err = bridge
            .send(&outbound(to.clone(), content.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent, "{content:?}");
    }
    let err = bridge
        .send(&outbound(Recipient::default(), text("Oi")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(server.requests().is_empty());
}

async fn send_error(status: u16, body: &str) -> SendError {
    let server = Server::start().await;
    let bridge = bridge(&server);
    server.answer(status, body);
    bridge
        .send(&outbound(to_phone("+15551234567"), text("Oi")))
        .await
        .unwrap_err()
}

fn error_body(code: &str) -> String {
    json!({"error": {"code": code, "message": format!("{code} happened")}}).to_string()
}

#[tokio::test]
async fn error_answers_are_classified() {
    let cases = [
        (401, "unauthorized", ErrorClass::ProviderBroken),
        (404, "session_not_found", ErrorClass::ProviderBroken),
        (409, "session_not_ready", ErrorClass::ProviderBroken),
        (400, "invalid_recipient", ErrorClass::Permanent),
        (400, "invalid_request", ErrorClass::Permanent),
        (429, "rate_limited", ErrorClass::Retryable),
        (500, "internal", ErrorClass::Retryable),
        (503, "internal", ErrorClass::Retryable),
    ];
    for (status, code, class) in cases {
        let err = send_error(status, &error_body(code)).await;
        assert_eq!(err.class, class, "{status} {code}: {err}");
        assert_eq!(err.code.as_deref(), Some(code));
        assert!(err.message.contains(&format!("{code} happened")), "{err}");
        assert!(!err.message.contains(TOKEN));
    }
    // Without the contract's body: the status decides, the code is the status.
    let err = send_error(502, "<html>Bad Gateway</html>").await;
    assert_eq!(err.class, ErrorClass::Retryable);
    assert_eq!(err.code.as_deref(), Some("502"));
    let err = send_error(404, "").await;
    assert_eq!(err.class, ErrorClass::ProviderBroken);
    // Accepted without an id: the bridge does not speak the contract.
    let err = send_error(200, "{}").await;
    assert_eq!(err.class, ErrorClass::ProviderBroken);

    // Nothing listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let bridge = Bridge::new(
        &config(ProviderKind::Venom, Some(&url), Some(SESSION)),
        reqwest::Client::new(),
    )
    .unwrap();
    let err = bridge
        .send(&outbound(to_phone("+15551234567"), text("Oi")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable);
    assert_eq!(
        bridge.probe().await.unwrap_err().class,
        ErrorClass::Retryable
    );
}

#[tokio::test]
async fn session_calls_follow_the_contract() {
    let server = Server::start().await;
    let bridge = bridge(&server);

    server.answer(200, r#"{"session":"shop-1","state":"initializing"}"#);
    let started = bridge.start_session(None).await.unwrap();
    assert_eq!(started.state, SessionState::Initializing);
    // Pairing by phone number: the digits go in the body, the code comes back.
    server.answer(
        200,
        r#"{"session":"shop-1","state":"qr","pairing_code":"ABCD-EFGH"}"#,
    );
    let started = bridge.start_session(Some("15551234567")).await.unwrap();
    assert_eq!(started.pairing_code.as_deref(), Some("ABCD-EFGH"));
    // Restart: the connection again, credentials kept.
    server.answer(200, r#"{"session":"shop-1","state":"initializing"}"#);
    let restarted = bridge.restart_session(None).await.unwrap();
    assert_eq!(restarted.state, SessionState::Initializing);
    let requests = server.requests();
    let n = requests.len();
    assert_eq!(requests[n - 3].path, "/sessions/shop-1/start");
    assert_eq!(requests[n - 3].body, json!({}));
    assert_eq!(requests[n - 2].path, "/sessions/shop-1/start");
    assert_eq!(
        requests[n - 2].body,
        json!({"pairing_phone": "15551234567"})
    );
    assert_eq!(requests[n - 1].method, Method::POST);
    assert_eq!(requests[n - 1].path, "/sessions/shop-1/restart");

    server.answer(
        200,
        r#"{"session":"shop-1","state":"ready","phone":"+15551234567","reason":null,"since":"2026-01-01T00:00:00Z"}"#,
    );
    let status = bridge.status().await.unwrap();
    assert_eq!(status.state, SessionState::Ready);
    assert_eq!(status.phone.as_deref(), Some("+15551234567"));
    assert_eq!(
        status.since,
        Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())
    );

    server.answer(
        200,
        r#"{"qr":"2@y8eK+bjtEjUWy9/FOM","expires_at":"2026-01-01T00:01:00Z"}"#,
    );
    assert_eq!(
        bridge.qr().await.unwrap(),
        Some(SessionQr {
            qr: "2@y8eK+bjtEjUWy9/FOM".into(),
            expires_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 0).unwrap()),
            pairing_code: None,
        })
    );
    server.answer(404, error_body("qr_not_available"));
    assert_eq!(bridge.qr().await.unwrap(), None);
    server.answer(404, error_body("session_not_found"));
    assert_eq!(
        bridge.qr().await.unwrap_err().class,
        ErrorClass::ProviderBroken
    );

    server.answer(200, "{}");
    bridge.logout().await.unwrap();
    server.answer(404, error_body("session_not_found"));
    bridge.logout().await.unwrap();
    server.answer(500, error_body("internal"));
    assert_eq!(
        bridge.logout().await.unwrap_err().class,
        ErrorClass::Retryable
    );

    server.answer(
        200,
        r#"{"sessions":[{"session":"shop-1","state":"ready"},{"session":"other","state":"qr"}]}"#,
    );
    let sessions = bridge.sessions().await.unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[1].state, SessionState::Qr);

    server.answer(
        200,
        r#"{"ok":true,"library":"whatsapp-web.js","version":"1.34.6"}"#,
    );
    let health = bridge.health().await.unwrap();
    assert!(health.ok);
    assert_eq!(health.version.as_deref(), Some("1.34.6"));

    // An answer the contract does not allow.
    server.answer(200, r#"{"session":"shop-1","state":"sleeping"}"#);
    assert_eq!(
        bridge.status().await.unwrap_err().class,
        ErrorClass::ProviderBroken
    );

    let requests = server.requests();
    let expected = [
        (Method::POST, "/sessions/shop-1/start"),
        (Method::POST, "/sessions/shop-1/start"),
        (Method::POST, "/sessions/shop-1/restart"),
        (Method::GET, "/status/shop-1"),
        (Method::GET, "/qr/shop-1"),
        (Method::GET, "/qr/shop-1"),
        (Method::GET, "/qr/shop-1"),
        (Method::DELETE, "/session/shop-1"),
        (Method::DELETE, "/session/shop-1"),
        (Method::DELETE, "/session/shop-1"),
        (Method::GET, "/sessions"),
        (Method::GET, "/health"),
        (Method::GET, "/status/shop-1"),
    ];
    assert_eq!(requests.len(), expected.len());
    for (request, (method, path)) in requests.iter().zip(expected) {
        assert_bridge_call(request, method, path);
    }
    assert_eq!(requests[0].body, json!({}));
    assert_eq!(requests[3].body, Value::Null);
}

#[tokio::test]
async fn paths_go_under_the_base_url_and_session_names_keep_to_the_contract() {
    let server = Server::start().await;
    let bridge = Bridge::new(
        &config(
            ProviderKind::Baileys,
            Some(&format!("{}/wa/", server.url)),
            Some("Shop_1-a"),
        ),
        reqwest::Client::new(),
    )
    .unwrap();
    server.answer(200, r#"{"session":"Shop_1-a","state":"ready"}"#);
    bridge.status().await.unwrap();
    assert_eq!(server.only_request().path, "/wa/status/Shop_1-a");

    for name in ["shop 1", "shop/1", "../x", "ç", &"x".repeat(65)] {
        let result = Bridge::new(
            &config(ProviderKind::Baileys, None, Some(name)),
            reqwest::Client::new(),
        );
        assert!(result.is_err(), "{name:?}");
    }
}

#[tokio::test]
async fn probe_needs_a_ready_session() {
    let server = Server::start().await;
    let bridge = bridge(&server);
    let healthy = r#"{"ok":true,"library":"baileys","version":"7.0.0-rc13"}"#;
    server.answer(200, healthy);
    server.answer(
        200,
        r#"{"session":"shop-1","state":"ready","phone":"+15551234567"}"#,
    );
    let report = bridge.probe().await.unwrap();
    assert!(report.detail.contains("ready"), "{report:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_bridge_call(&requests[0], Method::GET, "/health");
    assert_bridge_call(&requests[1], Method::GET, "/status/shop-1");
    // A bridge that says it is unwell is not asked about the session.
    server.answer(200, r#"{"ok":false}"#);
    assert_eq!(
        bridge.probe().await.unwrap_err().class,
        ErrorClass::Retryable
    );
    assert_eq!(server.requests().len(), 3);

    for (state, name) in [
        ("qr", "qr"),
        ("authenticated", "authenticated"),
        ("disconnected", "disconnected"),
        ("logged_out", "logged_out"),
        ("failed", "failed"),
    ] {
        server.answer(200, healthy);
        server.answer(
            200,
            json!({"session": SESSION, "state": state, "reason": "LOGOUT"}).to_string(),
        );
        let err = bridge.probe().await.unwrap_err();
        assert_eq!(err.class, ErrorClass::ProviderBroken);
        assert!(err.message.contains(name), "{err}");
    }
    server.answer(200, healthy);
    server.answer(404, error_body("session_not_found"));
    assert_eq!(
        bridge.probe().await.unwrap_err().class,
        ErrorClass::ProviderBroken
    );
}

// ---- events --------------------------------------------------------------------------

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap()
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, computed here independently.
fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn deliver_raw(
    bridge: &Bridge,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Vec<ProviderEvent>, WebhookError> {
    let mut headers = HeaderMap::new();
    if let Some(timestamp) = timestamp {
        headers.insert(
            "x-dashd-timestamp",
            HeaderValue::from_str(timestamp).unwrap(),
        );
    }
    if let Some(signature) = signature {
        headers.insert(
            "x-dashd-signature",
            HeaderValue::from_str(signature).unwrap(),
        );
    }
    bridge.parse_webhook(&WebhookRequest {
        method: &Method::POST,
        path: "/webhook/bridge/wwebjs",
        query: None,
        headers: &headers,
        body,
        now: now(),
    })
}

/// Signs and delivers an event as a bridge would, timestamped now.
fn deliver(bridge: &Bridge, event: &Value) -> Result<Vec<ProviderEvent>, WebhookError> {
    let body = event.to_string();
    let timestamp = now().timestamp().to_string();
    let signature = sign(TOKEN, &timestamp, body.as_bytes());
    deliver_raw(bridge, Some(&timestamp), Some(&signature), body.as_bytes())
}

fn offline_bridge(kind: ProviderKind) -> Bridge {
    Bridge::new(
        &config(kind, Some("http://127.0.0.1:9"), Some(SESSION)),
        reqwest::Client::new(),
    )
    .unwrap()
}

fn only(events: Vec<ProviderEvent>) -> ProviderEvent {
    assert_eq!(events.len(), 1, "{events:#?}");
    events.into_iter().next().unwrap()
}

/// The signing example in docs/bridges.md (computed with Python's hmac).
const DOC_BODY: &str = r#"{"event":"qr","session":"shop-1","data":{"qr":"2@y8eK+bjtEjUWy9/FOM","expires_at":"2026-01-01T00:01:00Z"}}"#;
const DOC_SIGNATURE: &str =
    "sha256=5cfc6fe7185ea6d7369dccc07e902ee14740370f6a4f9dd87be51415f5d0cfac";

#[test]
fn a_valid_signature_is_accepted() {
    let bridge = offline_bridge(ProviderKind::Wwebjs);
    assert_eq!(
        sign(TOKEN, "1767225600", DOC_BODY.as_bytes()),
        DOC_SIGNATURE
    );
    let events = deliver_raw(
        &bridge,
        Some("1767225600"),
        Some(DOC_SIGNATURE),
        DOC_BODY.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        only(events),
        ProviderEvent::Session {
            session: SESSION.into(),
            state: SessionState::Qr,
            qr: Some("2@y8eK+bjtEjUWy9/FOM".into()),
            qr_expires_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 0).unwrap()),
            pairing_code: None,
            phone: None,
            reason: None,
            at: now(),
        }
    );
    // Upper-case hex is the same signature.
    let upper = format!("sha256={}", DOC_SIGNATURE["sha256=".len()..].to_uppercase());
    assert!(
        deliver_raw(
            &bridge,
            Some("1767225600"),
            Some(&upper),
            DOC_BODY.as_bytes()
        )
        .is_ok()
    );
}

#[test]
fn any_flipped_byte_is_refused() {
    let bridge = offline_bridge(ProviderKind::Wwebjs);
    let body = DOC_BODY.as_bytes();
    let refused = |timestamp: &str, signature: &str, body: &[u8]| {
        let err = deliver_raw(&bridge, Some(timestamp), Some(signature), body).unwrap_err();
        assert!(matches!(err, WebhookError::Signature(_)), "{err:?}");
    };
    // A flipped byte anywhere in the body.
    for index in [0, 10, body.len() / 2, body.len() - 1] {
        let mut tampered = body.to_vec();
        tampered[index] ^= 0x01;
        refused("1767225600", DOC_SIGNATURE, &tampered);
    }
    // A flipped hex digit of the signature, or a shortened one.
    let mut signature = DOC_SIGNATURE.to_owned().into_bytes();
    let last = signature.len() - 1;
    signature[last] = if signature[last] == b'c' { b'd' } else { b'c' };
    refused("1767225600", std::str::from_utf8(&signature).unwrap(), body);
    refused(
        "1767225600",
        &DOC_SIGNATURE[..DOC_SIGNATURE.len() - 2],
        body,
    );
    refused(
        "1767225600",
        DOC_SIGNATURE.trim_start_matches("sha256="),
        body,
    );
    // Another secret, or the timestamp changed after signing.
    refused(
        "1767225600",
        &sign("bridge-secret-tokeN", "1767225600", body),
        body,
    );
    refused("1767225601", DOC_SIGNATURE, body);
    // Missing headers.
    for (timestamp, signature) in [(None, Some(DOC_SIGNATURE)), (Some("1767225600"), None)] {
        let err = deliver_raw(&bridge, timestamp, signature, body).unwrap_err();
        assert!(matches!(err, WebhookError::Signature(_)), "{err:?}");
    }
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let bridge = offline_bridge(ProviderKind::Wwebjs);
    let body = DOC_BODY.as_bytes();
    let at = |offset: i64| {
        let timestamp = (now().timestamp() + offset).to_string();
        let signature = sign(TOKEN, &timestamp, body);
        deliver_raw(&bridge, Some(&timestamp), Some(&signature), body)
    };
    assert!(at(0).is_ok());
    assert!(at(-300).is_ok());
    assert!(at(300).is_ok());
    for offset in [-301, 301, -3600, 86_400] {
        let err = at(offset).unwrap_err();
        assert!(
            matches!(err, WebhookError::Signature(_)),
            "{offset}: {err:?}"
        );
    }
    // A signed timestamp that is not a number.
    let signature = sign(TOKEN, "soon", body);
    assert!(matches!(
        deliver_raw(&bridge, Some("soon"), Some(&signature), body).unwrap_err(),
        WebhookError::Signature(_)
    ));
}

#[test]
fn garbage_is_refused_for_its_signature_before_it_is_parsed() {
    let bridge = offline_bridge(ProviderKind::Wwebjs);
    let err = deliver_raw(
        &bridge,
        Some("1767225600"),
        Some(DOC_SIGNATURE),
        b"{not json",
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::Signature(_)), "{err:?}");
    let timestamp = now().timestamp().to_string();
    let err = deliver_raw(
        &bridge,
        Some(&timestamp),
        Some(&sign(TOKEN, &timestamp, b"{not json")),
        b"{not json",
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::Malformed(_)), "{err:?}");
}

#[test]
fn the_session_for_routing_is_read_unverified() {
    assert_eq!(session_of(DOC_BODY.as_bytes()).as_deref(), Some("shop-1"));
    assert_eq!(session_of(b"{not json"), None);
    assert_eq!(session_of(br#"{"event":"qr"}"#), None);
    assert_eq!(session_of(br#"{"event":"qr","session":""}"#), None);
    // Another session's event reaching this provider is refused, not taken as its own.
    let bridge = offline_bridge(ProviderKind::Wwebjs);
    let event = json!({"event": "qr", "session": "other", "data": {"qr": "2@x"}});
    assert!(matches!(
        deliver(&bridge, &event).unwrap_err(),
        WebhookError::Malformed(_)
    ));
}

// The libraries' example messages, normalised as each bridge does (docs/bridges.md).

/// whatsapp-web.js `index.d.ts` Message example (bridges.json).
fn wwebjs_example() -> Value {
    json!({"mediaKey": null, "id": {"fromMe": false, "remote": "554199999999@c.us", "id": "1234567890ABCDEFGHIJ", "_serialized": "false_554199999999@c.us_1234567890ABCDEFGHIJ"}, "ack": -1, "hasMedia": false, "body": "Hello!", "type": "chat", "timestamp": 1591482682, "from": "554199999999@c.us", "to": "554188888888@c.us", "author": null, "isForwarded": false, "broadcast": false, "fromMe": false, "hasQuotedMsg": false, "hasReaction": false, "location": null, "mentionedIds": []})
}

fn normalise_wwebjs(msg: &Value) -> Value {
    let from_me = msg["fromMe"].as_bool().unwrap();
    let chat_id = if from_me { &msg["to"] } else { &msg["from"] };
    let sender_id = if msg["author"].is_null() {
        &msg["from"]
    } else {
        &msg["author"]
    };
    json!({
        "message_id": msg["id"]["_serialized"],
        "chat_id": chat_id,
        "sender_id": sender_id,
        "from_me": from_me,
        "timestamp_s": msg["timestamp"],
        "type": msg["type"],
        "text": msg["body"],
        "has_media": msg["hasMedia"],
        "push_name": msg.pointer("/_data/notifyName").cloned().unwrap_or(Value::Null),
        "is_group": chat_id.as_str().unwrap().ends_with("@g.us"),
    })
}

/// venom message constructed from its `Message` interface (bridges.json).
fn venom_example() -> Value {
    json!({"id": "false_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7", "body": "Hi", "type": "chat", "t": 1591482682, "notifyName": "Maria", "from": "554199999999@c.us", "to": "554188888888@c.us", "fromMe": false, "author": null, "ack": 1, "isNewMsg": true, "broadcast": false, "isForwarded": false, "timestamp": 1591482682, "content": "Hi", "isGroupMsg": false, "isMMS": false, "isMedia": false, "chatId": "554199999999@c.us", "sender": {"id": "554199999999@c.us", "pushname": "Maria", "isMe": false, "isMyContact": false}})
}

fn normalise_venom(message: &Value) -> Value {
    json!({
        "message_id": message["id"],
        "chat_id": message["chatId"],
        "sender_id": message["sender"]["id"],
        "from_me": message["fromMe"],
        "timestamp_s": message["t"],
        "type": message["type"],
        "text": message["body"],
        "has_media": message["isMedia"].as_bool().unwrap() || message["isMMS"].as_bool().unwrap(),
        "push_name": message["notifyName"],
        "is_group": message["isGroupMsg"],
    })
}

/// Baileys WebMessageInfo with an extended text (bridges.json).
fn baileys_example() -> Value {
    json!({"key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": false, "id": "3EB0C767D26B8E1F2A4B"}, "pushName": "Maria", "message": {"extendedTextMessage": {"text": "see https://example.com", "contextInfo": {"stanzaId": "3EB0AAAA", "participant": "5511888888888@s.whatsapp.net", "quotedMessage": {"conversation": "hi"}}}}, "messageTimestamp": 1717607420})
}

fn normalise_baileys(m: &Value) -> Value {
    let message = m["message"].as_object().unwrap();
    let content_type = message
        .keys()
        .find(|key| *key != "messageContextInfo")
        .unwrap()
        .clone();
    let media = [
        "imageMessage",
        "videoMessage",
        "audioMessage",
        "documentMessage",
        "stickerMessage",
    ];
    let text = m
        .pointer("/message/conversation")
        .or_else(|| m.pointer("/message/extendedTextMessage/text"))
        .or_else(|| {
            media
                .iter()
                .find_map(|k| m.pointer(&format!("/message/{k}/caption")))
        })
        .cloned()
        .unwrap_or(Value::Null);
    let remote_jid = m["key"]["remoteJid"].as_str().unwrap();
    let mut normalised = json!({
        "message_id": m["key"]["id"],
        "chat_id": remote_jid,
        "sender_id": m["key"].get("participant").cloned().unwrap_or(json!(remote_jid)),
        "from_me": m["key"]["fromMe"],
        "timestamp_s": m["messageTimestamp"],
        "type": content_type,
        "text": text,
        "has_media": media.iter().any(|k| message.contains_key(*k)),
        "push_name": m.get("pushName").cloned().unwrap_or(Value::Null),
        "is_group": remote_jid.ends_with("@g.us"),
    });
    if let Some(alt) = m["key"].get("remoteJidAlt").and_then(Value::as_str) {
        let field = if alt.ends_with("@lid") {
            "lid"
        } else {
            "phone"
        };
        normalised[field] = json!(alt);
    }
    normalised
}

fn message_event(data: Value) -> Value {
    json!({"event": "message", "session": SESSION, "data": data})
}

#[test]
fn the_libraries_example_messages_parse() {
    let cases = [
        (
            ProviderKind::Wwebjs,
            normalise_wwebjs(&wwebjs_example()),
            "+554199999999",
            "false_554199999999@c.us_1234567890ABCDEFGHIJ",
            "Hello!",
            None,
            1_591_482_682,
        ),
        (
            ProviderKind::Venom,
            normalise_venom(&venom_example()),
            "+554199999999",
            "false_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7",
            "Hi",
            Some("Maria"),
            1_591_482_682,
        ),
        (
            ProviderKind::Baileys,
            normalise_baileys(&baileys_example()),
            "+5511999999999",
            "3EB0C767D26B8E1F2A4B",
            "see https://example.com",
            Some("Maria"),
            1_717_607_420,
        ),
    ];
    for (kind, data, phone, id, text, name, timestamp) in cases {
        let bridge = offline_bridge(kind);
        let ProviderEvent::Inbound {
            from,
            provider_message_id,
            body,
            at,
            from_me,
        } = only(deliver(&bridge, &message_event(data)).unwrap())
        else {
            panic!("{kind}: not inbound");
        };
        assert_eq!(from.phone.as_deref(), Some(phone), "{kind}");
        assert_eq!(from.lid, None, "{kind}");
        assert_eq!(from.name.as_deref(), name, "{kind}");
        assert_eq!(provider_message_id, id, "{kind}");
        assert_eq!(body.text, text, "{kind}");
        assert_eq!(body.name.as_deref(), name, "{kind}");
        assert!(body.attachment.is_none(), "{kind}");
        assert_eq!(at, Utc.timestamp_opt(timestamp, 0).unwrap(), "{kind}");
        assert!(!from_me, "{kind}");
    }

    // Baileys' test fixture names its chat `chat@s.whatsapp.net`: no phone in it.
    let fixture = json!({"key": {"remoteJid": "chat@s.whatsapp.net", "fromMe": false, "id": "ABC"}, "message": {"conversation": "hello"}, "messageTimestamp": 1675888000});
    let bridge = offline_bridge(ProviderKind::Baileys);
    assert!(matches!(
        only(deliver(&bridge, &message_event(normalise_baileys(&fixture))).unwrap()),
        ProviderEvent::Ignored { .. }
    ));
}

#[test]
fn lids_groups_media_and_own_messages() {
    let bridge = offline_bridge(ProviderKind::Baileys);

    // A LID chat with the phone Baileys 7 gives as remoteJidAlt.
    let lid_message = json!({"key": {"remoteJid": "12345678901234@lid", "remoteJidAlt": "5511912345678@s.whatsapp.net", "fromMe": false, "id": "3EB0LID"}, "pushName": "Ana", "message": {"conversation": "Oi"}, "messageTimestamp": 1717607420});
    let ProviderEvent::Inbound { from, .. } =
        only(deliver(&bridge, &message_event(normalise_baileys(&lid_message))).unwrap())
    else {
        panic!("not inbound");
    };
    assert_eq!(from.lid.as_deref(), Some("12345678901234@lid"));
    assert_eq!(from.phone.as_deref(), Some("+5511912345678"));

    // A LID alone is never a phone.
    let mut lid_only = lid_message.clone();
    lid_only["key"]
        .as_object_mut()
        .unwrap()
        .remove("remoteJidAlt");
    let ProviderEvent::Inbound { from, .. } =
        only(deliver(&bridge, &message_event(normalise_baileys(&lid_only))).unwrap())
    else {
        panic!("not inbound");
    };
    assert_eq!(from.lid.as_deref(), Some("12345678901234@lid"));
    assert_eq!(from.phone, None);

    // Groups are ignored.
    let group = json!({"key": {"remoteJid": "120363025246125888@g.us", "participant": "5511999999999@s.whatsapp.net", "fromMe": false, "id": "G1"}, "message": {"conversation": "hi all"}, "messageTimestamp": 1717607420});
    assert!(matches!(
        only(deliver(&bridge, &message_event(normalise_baileys(&group))).unwrap()),
        ProviderEvent::Ignored { .. }
    ));

    // Media with the contract's media object, and a voice note known only by its type.
    let image = json!({
        "message_id": "3EB0IMG", "chat_id": "5511999999999@s.whatsapp.net", "sender_id": "5511999999999@s.whatsapp.net",
        "from_me": false, "timestamp_s": 1717607420, "type": "imageMessage", "text": "", "has_media": true,
        "media": {"kind": "image", "mime_type": "image/jpeg", "url": "http://127.0.0.1:3012/media/shop-1/3EB0IMG", "caption": "receipt", "filename": null},
        "push_name": "Maria", "is_group": false
    });
    let ProviderEvent::Inbound { body, .. } =
        only(deliver(&bridge, &message_event(image)).unwrap())
    else {
        panic!("not inbound");
    };
    let attachment = body.attachment.unwrap();
    assert_eq!(attachment.kind, MediaKind::Image);
    assert_eq!(
        attachment.reference,
        "http://127.0.0.1:3012/media/shop-1/3EB0IMG"
    );
    assert_eq!(attachment.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(body.text, "receipt");

    let voice = json!({
        "message_id": "false_554199999999@c.us_PTT", "chat_id": "554199999999@c.us", "sender_id": "554199999999@c.us",
        "from_me": false, "timestamp_s": 1591482682, "type": "ptt", "text": "", "has_media": true, "is_group": false
    });
    let ProviderEvent::Inbound { body, .. } =
        only(deliver(&bridge, &message_event(voice)).unwrap())
    else {
        panic!("not inbound");
    };
    let attachment = body.attachment.unwrap();
    assert_eq!(attachment.kind, MediaKind::Audio);
    assert_eq!(attachment.reference, "false_554199999999@c.us_PTT");

    // A list reply, sent from the phone (from_me): the chat is still the customer.
    let mut own = normalise_wwebjs(&wwebjs_example());
    own["from_me"] = json!(true);
    own["chat_id"] = json!("554188888888@c.us");
    own["reply_id"] = json!("human");
    let ProviderEvent::Inbound {
        from,
        from_me,
        body,
        ..
    } = only(deliver(&offline_bridge(ProviderKind::Wwebjs), &message_event(own)).unwrap())
    else {
        panic!("not inbound");
    };
    assert!(from_me);
    assert_eq!(from.phone.as_deref(), Some("+554188888888"));
    assert_eq!(body.reply_id.as_deref(), Some("human"));

    // No message id: refused.
    let mut no_id = normalise_venom(&venom_example());
    no_id["message_id"] = json!("");
    assert!(matches!(
        deliver(&offline_bridge(ProviderKind::Venom), &message_event(no_id)).unwrap_err(),
        WebhookError::Malformed(_)
    ));
}

#[test]
fn acks_are_statuses() {
    let bridge = offline_bridge(ProviderKind::Wwebjs);
    let ack = |value: Value| json!({"event": "ack", "session": SESSION, "data": {"message_id": "true_15551234567@c.us_3EB0AAAA", "chat_id": "15551234567@c.us", "ack": value}});
    for (value, expected) in [
        (json!(1), DeliveryStatus::Sent),
        (json!(2), DeliveryStatus::Delivered),
        (json!(3), DeliveryStatus::Read),
        (json!(4), DeliveryStatus::Read),
        (json!(-1), DeliveryStatus::Failed),
        (json!("sent"), DeliveryStatus::Sent),
        (json!("delivered"), DeliveryStatus::Delivered),
        (json!("read"), DeliveryStatus::Read),
        (json!("played"), DeliveryStatus::Read),
        (json!("failed"), DeliveryStatus::Failed),
    ] {
        let ProviderEvent::Status {
            provider_message_id,
            status,
            error,
            recipient,
            at,
        } = only(deliver(&bridge, &ack(value.clone())).unwrap())
        else {
            panic!("{value}: not a status");
        };
        assert_eq!(provider_message_id, "true_15551234567@c.us_3EB0AAAA");
        assert_eq!(status, expected, "{value}");
        assert_eq!(
            error.is_some(),
            expected == DeliveryStatus::Failed,
            "{value}"
        );
        assert_eq!(recipient.phone.as_deref(), Some("+15551234567"));
        assert_eq!(at, now());
    }
    for pending in [json!(0), json!("pending")] {
        assert!(matches!(
            only(deliver(&bridge, &ack(pending)).unwrap()),
            ProviderEvent::Ignored { .. }
        ));
    }
    for bogus in [json!(7), json!("lost"), json!(null)] {
        assert!(matches!(
            deliver(&bridge, &ack(bogus)).unwrap_err(),
            WebhookError::Malformed(_)
        ));
    }
    let failed = json!({"event": "ack", "session": SESSION, "data": {"message_id": "M1", "ack": "failed", "error": {"code": "463", "message": "recipient unreachable"}}});
    let ProviderEvent::Status { error, .. } = only(deliver(&bridge, &failed).unwrap()) else {
        panic!("not a status");
    };
    assert_eq!(
        error,
        Some(("463".to_owned(), "recipient unreachable".to_owned()))
    );
}

#[test]
fn lid_mapping_events_link_a_lid_to_a_phone() {
    let bridge = offline_bridge(ProviderKind::Baileys);
    for phone in ["+15551234567", "15551234567", "15551234567@s.whatsapp.net"] {
        let event = json!({"event": "lid_mapping", "session": SESSION, "data": {"lid": "12345678901234@lid", "phone": phone}});
        assert_eq!(
            only(deliver(&bridge, &event).unwrap()),
            ProviderEvent::ContactLinked {
                ids: ContactIds {
                    phone: Some("+15551234567".into()),
                    lid: Some("12345678901234@lid".into()),
                    ..ContactIds::default()
                },
                at: now(),
            },
            "{phone}"
        );
    }
    for data in [
        json!({"lid": "15551234567@s.whatsapp.net", "phone": "+15551234567"}),
        json!({"lid": "12345678901234@lid", "phone": "12345678901234@lid"}),
        json!({"lid": "12345678901234@lid"}),
        json!({"phone": "+15551234567"}),
    ] {
        let event = json!({"event": "lid_mapping", "session": SESSION, "data": data});
        assert!(
            matches!(
                deliver(&bridge, &event).unwrap_err(),
                WebhookError::Malformed(_)
            ),
            "{data}"
        );
    }
}

#[test]
fn state_and_qr_events_are_session_events() {
    let bridge = offline_bridge(ProviderKind::Venom);
    let state = json!({"event": "state", "session": SESSION, "data": {"state": "logged_out", "phone": "+15551234567", "reason": "LOGOUT", "since": "2026-01-01T00:00:05Z"}});
    assert_eq!(
        only(deliver(&bridge, &state).unwrap()),
        ProviderEvent::Session {
            session: SESSION.into(),
            state: SessionState::LoggedOut,
            qr: None,
            qr_expires_at: None,
            pairing_code: None,
            phone: Some("+15551234567".into()),
            reason: Some("LOGOUT".into()),
            at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 5).unwrap(),
        }
    );
    for (name, expected) in [
        ("initializing", SessionState::Initializing),
        ("qr", SessionState::Qr),
        ("authenticated", SessionState::Authenticated),
        ("ready", SessionState::Ready),
        ("disconnected", SessionState::Disconnected),
        ("failed", SessionState::Failed),
    ] {
        let event = json!({"event": "state", "session": SESSION, "data": {"state": name}});
        let ProviderEvent::Session { state, at, .. } = only(deliver(&bridge, &event).unwrap())
        else {
            panic!("{name}: not a session event");
        };
        assert_eq!(state, expected);
        assert_eq!(at, now());
    }
    let bogus = json!({"event": "state", "session": SESSION, "data": {"state": "sleeping"}});
    assert!(matches!(
        deliver(&bridge, &bogus).unwrap_err(),
        WebhookError::Malformed(_)
    ));
    let qr = json!({"event": "qr", "session": SESSION, "data": {"qr": "2@abc", "expires_at": "2026-01-01T00:01:00Z"}});
    assert!(matches!(
        only(deliver(&bridge, &qr).unwrap()),
        ProviderEvent::Session { state: SessionState::Qr, qr: Some(code), .. } if code == "2@abc"
    ));
    let code = json!({"event": "pairing_code", "session": SESSION, "data": {"code": "ABCD-EFGH", "expires_at": "2026-01-01T00:03:00Z"}});
    assert_eq!(
        only(deliver(&bridge, &code).unwrap()),
        ProviderEvent::Session {
            session: SESSION.into(),
            state: SessionState::Qr,
            qr: None,
            qr_expires_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 3, 0).unwrap()),
            pairing_code: Some("ABCD-EFGH".into()),
            phone: None,
            reason: None,
            at: now(),
        }
    );
    let no_code = json!({"event": "pairing_code", "session": SESSION, "data": {}});
    assert!(matches!(
        deliver(&bridge, &no_code).unwrap_err(),
        WebhookError::Malformed(_)
    ));
    let future = json!({"event": "call", "session": SESSION, "data": {}});
    assert!(matches!(
        only(deliver(&bridge, &future).unwrap()),
        ProviderEvent::Ignored { .. }
    ));
}
