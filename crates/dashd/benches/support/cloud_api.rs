//! The real message path: signed Cloud API webhooks into dashd (SQLite default, the echo
//! flow) and its replies into a loopback Graph server that records when each arrives;
//! a loopback Twilio server behind it in the chain for the failover measurement. The
//! ceiling is a minimal server on the same HTTP stack (axum on hyper) that verifies the
//! same signed webhook and answers 200, driven by the same load generator in the same
//! run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

use super::{Dashd, call, percentile, round};

const APP_SECRET: &str = "bench-app-secret";
const PHONE_NUMBER_ID: &str = "100200300400";
/// Senders in flight in the closed loops.
const IN_FLIGHT: usize = 64;

/// When each reply (by its text) reached a fake provider.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A loopback provider recording each reply's arrival by its text.
#[derive(Clone)]
pub(crate) struct FakeProvider {
    arrivals: Arrivals,
    /// Replies that arrived with a text seen before.
    duplicates: Arc<AtomicU64>,
    /// Who waits for a text's reply (closed-loop users).
    waiters: Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>,
    failing: Arc<AtomicBool>,
    counter: Arc<AtomicU64>,
    twilio: bool,
    /// When the last failing request arrived (failover measurement).
    last_failure: Arc<Mutex<Option<Instant>>>,
}

async fn fake(State(fake): State<FakeProvider>, body: Bytes) -> Response {
    let now = Instant::now();
    let n = fake.counter.fetch_add(1, Ordering::Relaxed);
    if fake.failing.load(Ordering::Relaxed) {
        *fake.last_failure.lock().unwrap() = Some(now);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "(#131000) Something went wrong", "type": "OAuthException", "code": 131000}})),
        )
            .into_response();
    }
    let text = if fake.twilio {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .ok()
            .and_then(|form| form.into_iter().find(|(k, _)| k == "Body").map(|(_, v)| v))
    } else {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["text"]["body"].as_str().map(str::to_owned))
    };
    if let Some(text) = text {
        if let Some(waiter) = fake.waiters.lock().unwrap().remove(&text) {
            let _ = waiter.send(now);
        }
        if fake.arrivals.lock().unwrap().insert(text, now).is_some() {
            fake.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
    if fake.twilio {
        (
            StatusCode::CREATED,
            axum::Json(json!({"sid": format!("SM{n:032}"), "status": "queued"})),
        )
            .into_response()
    } else {
        axum::Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": "x", "wa_id": "x"}], "messages": [{"id": format!("wamid.B{n}")}]}))
            .into_response()
    }
}

/// The Graph server of the load matrix.
pub(crate) type Graph = FakeProvider;

impl FakeProvider {
    /// Resolves when the reply with this text arrives.
    pub(crate) fn expect(&self, text: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(text.to_owned(), tx);
        rx
    }

    /// Whether every one of these texts got its reply.
    pub(crate) fn has_all<'a>(&self, texts: impl Iterator<Item = &'a String>) -> bool {
        let arrivals = self.arrivals.lock().unwrap();
        texts.into_iter().all(|t| arrivals.contains_key(t))
    }

    pub(crate) fn arrivals(&self) -> HashMap<String, Instant> {
        self.arrivals.lock().unwrap().clone()
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        self.arrivals.lock().unwrap().clear();
        self.waiters.lock().unwrap().clear();
        self.duplicates.store(0, Ordering::Relaxed);
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn start_fake(twilio: bool) -> (FakeProvider, String) {
    let fake = FakeProvider {
        arrivals: Arc::default(),
        duplicates: Arc::default(),
        waiters: Arc::default(),
        failing: Arc::default(),
        counter: Arc::default(),
        twilio,
        last_failure: Arc::default(),
    };
    let url = serve(
        Router::new()
            .fallback(fake_handler)
            .with_state(fake.clone()),
    )
    .await;
    (fake, url)
}

async fn fake_handler(state: State<FakeProvider>, body: Bytes) -> Response {
    fake(state, body).await
}

/// The ceiling: verify the signature of the same webhook and answer 200.
async fn echo(headers: HeaderMap, body: Bytes) -> StatusCode {
    let given = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .unwrap_or_default();
    if dashd::adapter::signature::verify_sha256_hex(APP_SECRET.as_bytes(), &body, given) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

pub(crate) fn webhook(contact: &str, id: &str, text: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": contact}],
        "messages": [{"from": contact, "id": id, "timestamp": "1730231903", "type": "text", "text": {"body": text}}]}}]}]}))
    .unwrap();
    let signature = format!(
        "sha256={}",
        dashd::adapter::signature::hex(&dashd::adapter::signature::hmac_sha256(
            APP_SECRET.as_bytes(),
            &body
        ))
    );
    (body, signature)
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>, signature: &str) -> u16 {
    loop {
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            503 => tokio::time::sleep(Duration::from_millis(200)).await,
            status => return status,
        }
    }
}

/// One webhook, not retried: its status, or `None` when the request failed.
pub(crate) async fn post_once(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    signature: &str,
) -> Option<u16> {
    http.post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Closed loop: `total` webhooks, 64 in flight; returns requests answered per second.
async fn closed_loop(http: &reqwest::Client, url: &str, total: usize, tag: &str) -> f64 {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..total {
        let slot = slots.clone().acquire_owned().await.unwrap();
        let http = http.clone();
        let url = url.to_owned();
        let contact = format!("1555{:07}", n % 500);
        let (body, signature) =
            webhook(&contact, &format!("wamid.{tag}{n}"), &format!("{tag} {n}"));
        tasks.push(tokio::spawn(async move {
            assert_eq!(post(&http, &url, body, &signature).await, 200);
            drop(slot);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn wait_arrivals(arrivals: &Arrivals, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while arrivals.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} replies reached the Graph server",
            arrivals.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A tenant `slug` with one bot on the echo flow whose chain is `meta` (then `twilio`
/// with `with_twilio`), each provider a loopback server; returns the servers and the
/// bot's webhook URL.
pub(crate) async fn setup_bot(
    dashd: &Dashd,
    http_addr: &str,
    slug: &str,
    with_twilio: bool,
) -> (FakeProvider, Option<FakeProvider>, String) {
    let (graph, graph_url) = start_fake(false).await;
    let admin = dashd.client();
    call(&admin, "POST", "/v1/tenants", json!({"slug": slug})).await;
    let bots = format!("/v1/tenants/{slug}/bots");
    let bot = call(&admin, "POST", &bots, json!({"name": "real"})).await;
    call(
        &admin,
        "POST",
        &format!("{bots}/real/flows"),
        json!({"source": super::ECHO, "activate": true}),
    )
    .await;
    call(
        &admin,
        "PUT",
        &format!("{bots}/real/providers/meta"),
        json!({"settings": {"base_url": graph_url, "phone_number_id": PHONE_NUMBER_ID},
               "secrets": {"access_token": "bench-token", "app_secret": APP_SECRET, "verify_token": "v"}}),
    )
    .await;
    let mut chain = vec!["meta"];
    let twilio = if with_twilio {
        let (twilio, twilio_url) = start_fake(true).await;
        call(
            &admin,
            "PUT",
            &format!("{bots}/real/providers/twilio"),
            json!({"settings": {"base_url": twilio_url, "account_sid": "ACbench", "from": "+14155238886", "public_url": "https://x.example/t"},
                   "secrets": {"auth_token": "bench-twilio"}}),
        )
        .await;
        chain.push("twilio");
        Some(twilio)
    } else {
        None
    };
    call(
        &admin,
        "PUT",
        &format!("{bots}/real/chain"),
        json!({"chain": chain, "fallback_threshold_errors": 1000}),
    )
    .await;
    let url = format!(
        "http://{http_addr}/webhook/meta/{}",
        bot["id"].as_str().unwrap()
    );
    (graph, twilio, url)
}

/// The ceiling: a minimal server on the same HTTP stack that verifies the same signed
/// webhook and answers 200, driven by the same closed loop (64 in flight); requests/s.
pub(crate) async fn ceiling(total: usize) -> f64 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .unwrap();
    let echo_url = serve(Router::new().fallback(echo)).await;
    closed_loop(&http, &echo_url, total, "echo").await
}

/// Runs the scenario against a started dashd (per-bot limit off).
pub async fn run(
    dashd: &Dashd,
    http_addr: &str,
    offered_per_s: usize,
    seconds: usize,
    total: usize,
) -> Value {
    let (graph, twilio, url) = setup_bot(dashd, http_addr, "cloud", true).await;
    let twilio = twilio.unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .unwrap();

    // Fixed offered load (open loop): webhook sent → reply at Graph.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    let interval = Duration::from_secs(1).div_f64(offered_per_s as f64);
    let count = offered_per_s * seconds;
    let mut tasks = Vec::new();
    for n in 0..count {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + interval * n as u32)).await;
        let http = http.clone();
        let url = url.clone();
        let sent = sent.clone();
        let text = format!("fixed {n}");
        let (body, signature) = webhook(
            &format!("1444{:07}", n % 1000),
            &format!("wamid.F{n}"),
            &text,
        );
        tasks.push(tokio::spawn(async move {
            sent.lock().unwrap().insert(text, Instant::now());
            assert_eq!(post(&http, &url, body, &signature).await, 200);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    wait_arrivals(&graph.arrivals, count, Duration::from_secs(120)).await;
    let mut ms: Vec<f64> = {
        let sent = sent.lock().unwrap();
        let arrivals = graph.arrivals.lock().unwrap();
        sent.iter()
            .map(|(text, at)| arrivals[text].duration_since(*at).as_secs_f64() * 1000.0)
            .collect()
    };
    ms.sort_by(f64::total_cmp);
    graph.arrivals.lock().unwrap().clear();

    // Throughput (closed loop) until every reply reached Graph; the ceiling alike.
    let started = Instant::now();
    let accepted_per_s = closed_loop(&http, &url, total, "burst").await;
    wait_arrivals(&graph.arrivals, total, Duration::from_secs(300)).await;
    let replies_per_s = total as f64 / started.elapsed().as_secs_f64();
    let echo_url = serve(Router::new().fallback(echo)).await;
    let ceiling = closed_loop(&http, &echo_url, total, "echo").await;

    // Failover: Graph fails with 500s; each reply goes to Twilio. Time from the failing
    // Graph attempt to the Twilio request, median of 20.
    graph.failing.store(true, Ordering::Relaxed);
    let mut failovers = Vec::new();
    for n in 0..20 {
        let text = format!("failover {n}");
        let (body, signature) = webhook("14440009999", &format!("wamid.X{n}"), &text);
        assert_eq!(post(&http, &url, body, &signature).await, 200);
        let deadline = Instant::now() + Duration::from_secs(10);
        let arrived = loop {
            if let Some(at) = twilio.arrivals.lock().unwrap().get(&text).copied() {
                break at;
            }
            assert!(Instant::now() < deadline, "no failover to Twilio");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let failed = graph.last_failure.lock().unwrap().unwrap();
        failovers.push(arrived.duration_since(failed).as_secs_f64() * 1000.0);
    }
    failovers.sort_by(f64::total_cmp);

    json!({
        "offered_msgs_per_s": offered_per_s,
        "messages": count,
        "p50_ms": round(percentile(&ms, 0.50)),
        "p95_ms": round(percentile(&ms, 0.95)),
        "p99_ms": round(percentile(&ms, 0.99)),
        "max_ms": round(ms[ms.len() - 1]),
        "burst_messages": total,
        "webhooks_accepted_per_s": round(accepted_per_s),
        "replies_per_s": round(replies_per_s),
        "ceiling_requests_per_s": round(ceiling),
        "ratio_to_ceiling": (replies_per_s / ceiling * 1000.0).round() / 1000.0,
        "failover_p50_ms": (percentile(&failovers, 0.5) * 100.0).round() / 100.0,
        "failover_max_ms": (failovers[failovers.len() - 1] * 100.0).round() / 100.0,
    })
}
