//! Back-pressure and poison input with a real daemon in-process: when inbound messages
//! come faster than they are handled, intake answers 503 with `Retry-After` past the
//! configured backlog, the backlog never exceeds its bound, and every accepted message is
//! handled (none lost).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dash_core::api::MessageState;
use serde_json::{Value, json};

mod common;
use common::{Admin, ECHO};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_503_past_the_backlog_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    // One worker and a small bound, so the flood outruns handling at once.
    config.pipeline.workers = 1;
    config.pipeline.max_backlog = 30;
    config.pipeline.max_backlog_per_bot = 20;
    let daemon = dashd::start(config).await.unwrap();
    let admin = Admin::new(dir.path());
    admin.bot("acme", "ventas", ECHO).await;
    let client = admin.0.clone();

    let busy = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pipeline = daemon.pipeline();
    let watcher = {
        let peak = peak.clone();
        let pipeline = pipeline.clone();
        tokio::spawn(async move {
            loop {
                let (total, _) = pipeline.backlog();
                peak.fetch_max(total, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut senders = Vec::new();
    for sender in 0..16 {
        let client = client.clone();
        let busy = busy.clone();
        let accepted = accepted.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..40 {
                let response = client
                    .post("http://dashd/v1/tenants/acme/bots/ventas/sandbox/messages")
                    .json(&json!({"from": format!("+1555{sender:03}{n:04}"), "text": "ping"}))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    202 => {
                        let body: Value = response.json().await.unwrap();
                        let id = body["message_id"].as_str().unwrap().to_owned();
                        accepted.lock().unwrap().push(id);
                    }
                    503 => {
                        let retry_after: u64 = response.headers()["retry-after"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!((1..=30).contains(&retry_after), "{retry_after}");
                        let body: Value = response.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "unavailable", "{body}");
                        busy.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    assert!(
        busy.load(Ordering::Relaxed) > 0,
        "640 messages against a backlog of 30 never got a 503"
    );
    assert!(!accepted.is_empty());

    // Every accepted message is handled and answered.
    let store = daemon.store();
    let bot = store
        .bot(&dash_core::BotRef::Path {
            tenant: "acme".into(),
            bot: "ventas".into(),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replies = store.sandbox_sent(bot.id).await.unwrap().len();
        if replies == accepted.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{replies} replies for {} accepted messages",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    assert!(
        peak.load(Ordering::Relaxed) <= 30,
        "backlog reached {}",
        peak.load(Ordering::Relaxed)
    );
    // A message leaves the backlog when its step's commit returns to the worker; its reply
    // may be sent a moment before that: the backlog drains, it need not have yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pipeline.backlog() != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "backlog {:?}",
            pipeline.backlog()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let accepted: HashSet<String> = accepted.into_iter().collect();
    for contact in store.list_conversations(bot.id).await.unwrap() {
        let detail = store
            .conversation(bot.id, &contact.contact)
            .await
            .unwrap()
            .unwrap();
        for message in detail.transcript {
            if message.direction == dash_core::api::Direction::In {
                assert!(accepted.contains(&message.id.to_string()));
                assert_eq!(message.state, MessageState::Processed);
            }
        }
    }
    daemon.shutdown().await.unwrap();
}

/// Past the backlog bound a webhook is refused before any database work: the sender of
/// a refused message is not even recorded as a contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_webhook_costs_no_database_work() {
    const SECRET: &str = "overload-app-secret";
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.pipeline.max_backlog_per_bot = 1;
    config.providers.probe_interval_s = 3600;
    let daemon = dashd::start(config).await.unwrap();
    let admin = Admin::new(dir.path());
    // Graph fails every send, so the first customer's reply stays in the backlog.
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(
                json!({"error": {"message": "(#131000) Something went wrong", "code": 131_000}}),
            ),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let graph_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = admin
        .echo_bot_on_meta(&daemon.http_addr, &graph_url, "1234567890", SECRET)
        .await;
    let webhook = |from: &str, id: &str| {
        let body = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1234567890"},
            "contacts": [{"profile": {"name": "C"}, "wa_id": from}],
            "messages": [{"from": from, "id": id, "timestamp": "1730231903", "type": "text", "text": {"body": "hola"}}]}}]}]}))
        .unwrap();
        let signature = format!(
            "sha256={}",
            dashd::adapter::signature::hex(&dashd::adapter::signature::hmac_sha256(
                SECRET.as_bytes(),
                &body
            ))
        );
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
    };
    assert_eq!(
        webhook("34600000001", "wamid.a").await.unwrap().status(),
        200
    );
    let refused = webhook("34600000002", "wamid.b").await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let bot = daemon
        .store()
        .bot(&dash_core::BotRef::Path {
            tenant: "acme".into(),
            bot: "sales".into(),
        })
        .await
        .unwrap();
    let store = daemon.store();
    assert!(
        store
            .find_contact(bot.id, "+34600000001")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .find_contact(bot.id, "+34600000002")
            .await
            .unwrap()
            .is_none(),
        "a refused webhook created its sender's contact"
    );
    daemon.shutdown().await.unwrap();
}
