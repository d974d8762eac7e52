//! Sends in flight through one provider for one bot are bounded by
//! `dispatcher.provider_concurrency`: a loopback Graph server that takes its time counts
//! how many requests it holds at once while many customers write together.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use serde_json::{Value, json};

const APP_SECRET: &str = "concurrency-app-secret";
const PHONE_NUMBER_ID: &str = "277321005464405";
const CUSTOMERS: usize = 8;

#[derive(Clone, Default)]
struct Graph {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    sends: Arc<AtomicUsize>,
}

/// Graph's `/messages`, holding each request 150 ms.
async fn graph(State(g): State<Graph>) -> axum::Json<Value> {
    let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
    g.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    g.now.fetch_sub(1, Ordering::SeqCst);
    let n = g.sends.fetch_add(1, Ordering::SeqCst);
    axum::Json(
        json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.C{n}")}]}),
    )
}

fn inbound(customer: usize) -> Vec<u8> {
    let from = format!("3460000{customer:04}");
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550953877", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "C"}, "wa_id": from}],
        "messages": [{"from": from, "id": format!("wamid.in{customer}"), "timestamp": "1730231903", "type": "text", "text": {"body": "hola"}}]}}]}]}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_through_one_provider_for_one_bot_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.dispatcher.bot_rate_per_minute = 0;
    config.dispatcher.provider_concurrency = 2;
    config.providers.probe_interval_s = 3600;
    let daemon = dashd::start(config).await.unwrap();
    let admin = common::Admin::new(dir.path());
    let state = Graph::default();
    let app = Router::new().fallback(graph).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let graph_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = admin
        .echo_bot_on_meta(&daemon.http_addr, &graph_url, PHONE_NUMBER_ID, APP_SECRET)
        .await;
    let http = reqwest::Client::new();
    let posts: Vec<_> = (0..CUSTOMERS)
        .map(|customer| {
            let body = inbound(customer);
            let signature = format!(
                "sha256={}",
                dashd::adapter::signature::hex(&dashd::adapter::signature::hmac_sha256(
                    APP_SECRET.as_bytes(),
                    &body
                ))
            );
            let request = http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(body);
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.unwrap(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while state.sends.load(Ordering::SeqCst) < CUSTOMERS {
        assert!(Instant::now() < deadline, "not every reply was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let most = state.most.load(Ordering::SeqCst);
    assert_eq!(
        most, 2,
        "at most provider_concurrency (2) sends at once, and the bound is reached"
    );
    daemon.shutdown().await.unwrap();
}
