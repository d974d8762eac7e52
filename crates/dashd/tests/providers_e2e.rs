//! A bot with the chain `meta,twilio`, driven as a user would (admin API + signed
//! webhooks), against two loopback servers speaking the Graph API and Twilio's Messages
//! API. Replies go out through Meta with the documented payload; when Graph fails with
//! 500s they go out through Twilio within a second of the failing attempt; after the
//! cooldown and a good probe they return to Meta; a permanent error fails the message
//! without fallback; status webhooks move it to delivered, then read. A customer first
//! known only by BSUID and username, later by phone and BSUID, is one conversation.
//! Secrets never reach the database file in clear, nor the admin API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const ACCESS_TOKEN: &str = "EAAG-e2e-access-token-7d1f";
const APP_SECRET: &str = "e2e-app-secret-51c9a0";
const VERIFY_TOKEN: &str = "e2e-verify-token-0b77";
const TWILIO_TOKEN: &str = "e2e-twilio-auth-token-93aa";
const PHONE_NUMBER_ID: &str = "277321005464405";
const CUSTOMER: &str = "972544401243";

/// A request a fake provider received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

const OK: u8 = 0;
const FAIL_500: u8 = 1;
const PERMANENT: u8 = 2;
const REVOKED: u8 = 3;

/// A loopback server standing in for a provider: records requests, answers by mode.
#[derive(Clone)]
struct Fake {
    received: Arc<Mutex<Vec<Received>>>,
    mode: Arc<AtomicU8>,
    counter: Arc<AtomicU32>,
    twilio: bool,
}

impl Fake {
    async fn start(twilio: bool) -> (Fake, String) {
        let fake = Fake {
            received: Arc::default(),
            mode: Arc::new(AtomicU8::new(OK)),
            counter: Arc::default(),
            twilio,
        };
        let app = Router::new().fallback(answer).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, format!("http://{addr}"))
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn sends(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == Method::POST)
            .cloned()
            .collect()
    }

    async fn wait_sends(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sends = self.sends();
            if sends.len() >= count {
                return sends;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} sends, got {}",
                sends.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn answer(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.received.lock().unwrap().push(Received {
        method: method.clone(),
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let n = fake.counter.fetch_add(1, Ordering::SeqCst);
    let json = |status: StatusCode, value: Value| (status, axum::Json(value)).into_response();
    match (fake.twilio, fake.mode.load(Ordering::SeqCst), method) {
        (false, OK, Method::GET) => json(
            StatusCode::OK,
            json!({"display_phone_number": "15550953877", "verified_name": "Acme", "id": PHONE_NUMBER_ID}),
        ),
        (false, OK, _) => json(
            StatusCode::OK,
            json!({"messaging_product": "whatsapp", "contacts": [{"input": "+972544401243", "wa_id": CUSTOMER}], "messages": [{"id": format!("wamid.E2E{n}")}]}),
        ),
        (false, REVOKED, _) => json(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": "Error validating access token: Session has expired", "type": "OAuthException", "code": 190, "error_subcode": 463, "fbtrace_id": "Afake"}}),
        ),
        (false, PERMANENT, _) => json(
            StatusCode::BAD_REQUEST,
            json!({"error": {"message": "(#131026) Message undeliverable", "type": "OAuthException", "code": 131026, "error_data": {"messaging_product": "whatsapp", "details": "Message undeliverable"}, "fbtrace_id": "Afake"}}),
        ),
        (false, _, _) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"message": "(#131000) Something went wrong", "type": "OAuthException", "code": 131000, "fbtrace_id": "Afake"}}),
        ),
        (true, _, Method::GET) => json(
            StatusCode::OK,
            json!({"sid": "ACe2e", "friendly_name": "e2e", "status": "active"}),
        ),
        (true, _, _) => json(
            StatusCode::CREATED,
            json!({"sid": format!("SM{n:032}"), "status": "queued", "body": "x"}),
        ),
    }
}

fn sign(body: &[u8]) -> String {
    format!(
        "sha256={}",
        dashd::adapter::signature::hex(&dashd::adapter::signature::hmac_sha256(
            APP_SECRET.as_bytes(),
            body
        ))
    )
}

/// A Cloud API messages webhook with one text message (the shape of pywa's captured
/// webhook in the vectors), `contacts`/`from` as given.
fn inbound(
    id: &str,
    text: &str,
    contact: Value,
    from: Option<&str>,
    user_id: Option<&str>,
) -> Value {
    let mut message =
        json!({"id": id, "timestamp": "1730231903", "text": {"body": text}, "type": "text"});
    if let Some(from) = from {
        message["from"] = json!(from);
    }
    if let Some(user_id) = user_id {
        message["from_user_id"] = json!(user_id);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "264937493375603", "changes": [{"value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550953877", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [contact],
        "messages": [message]}, "field": "messages"}]}]})
}

fn status(id: &str, status: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "264937493375603", "changes": [{"value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550953877", "phone_number_id": PHONE_NUMBER_ID},
        "statuses": [{"id": id, "status": status, "timestamp": "1730231999", "recipient_id": CUSTOMER}]}, "field": "messages"}]}]})
}

struct Setup {
    _dir: tempfile::TempDir,
    daemon: dashd::Daemon,
    admin: common::Admin,
    http: reqwest::Client,
    bot_id: String,
    graph: Fake,
    twilio: Fake,
    db: std::path::PathBuf,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::config(dir.path());
        config.providers.probe_interval_s = 1;
        let daemon = dashd::start(config).await.unwrap();
        let admin = common::Admin::new(dir.path());
        admin
            .call("POST", "/v1/tenants", json!({"slug": "acme"}))
            .await;
        let bot = admin
            .call("POST", "/v1/tenants/acme/bots", json!({"name": "sales"}))
            .await;
        admin
            .call(
                "POST",
                "/v1/tenants/acme/bots/sales/flows",
                json!({"source": common::ECHO, "activate": true}),
            )
            .await;
        let (graph, graph_url) = Fake::start(false).await;
        let (twilio, twilio_url) = Fake::start(true).await;
        let bot_id = bot["id"].as_str().unwrap().to_owned();
        admin
            .call(
                "PUT",
                "/v1/tenants/acme/bots/sales/providers/meta",
                json!({"settings": {"base_url": graph_url, "phone_number_id": PHONE_NUMBER_ID},
                       "secrets": {"access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN}}),
            )
            .await;
        admin
            .call(
                "PUT",
                "/v1/tenants/acme/bots/sales/providers/twilio",
                json!({"settings": {"base_url": twilio_url, "account_sid": "ACe2e", "from": "+14155238886",
                                    "public_url": format!("https://bots.example.com/webhook/twilio/{bot_id}")},
                       "secrets": {"auth_token": TWILIO_TOKEN}}),
            )
            .await;
        admin
            .call(
                "PUT",
                "/v1/tenants/acme/bots/sales/chain",
                json!({"chain": ["meta", "twilio"], "fallback_threshold_errors": 3, "fallback_cooldown_seconds": 2}),
            )
            .await;
        Setup {
            db: dir.path().join("dashd-data/dashd.db"),
            _dir: dir,
            daemon,
            admin,
            http: reqwest::Client::new(),
            bot_id,
            graph,
            twilio,
        }
    }

    async fn webhook(&self, body: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(body).unwrap();
        self.http
            .post(format!(
                "http://{}/webhook/meta/{}",
                self.daemon.http_addr, self.bot_id
            ))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(&body))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn transcript(&self, contact: &str) -> Vec<Value> {
        let detail = self
            .admin
            .call(
                "GET",
                &format!("/v1/tenants/acme/bots/sales/conversations/{contact}"),
                Value::Null,
            )
            .await;
        detail["transcript"].as_array().unwrap().clone()
    }

    /// Waits until the bot has a conversation with `contact` (its message was handled).
    async fn wait_contact(&self, contact: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = self
                .admin
                .call(
                    "GET",
                    "/v1/tenants/acme/bots/sales/conversations",
                    Value::Null,
                )
                .await;
            if list
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["contact"] == contact)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no conversation with {contact}: {list}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the outbound message with this provider id is in `state`.
    async fn wait_state(&self, contact: &str, provider_message_id: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found =
                self.transcript(contact).await.into_iter().find(|m| {
                    m["provider_message_id"] == provider_message_id && m["state"] == state
                });
            if found.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{provider_message_id} never {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn json_body(received: &Received) -> Value {
    serde_json::from_slice(&received.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_then_twilio_failover_recovery_permanent_errors_and_statuses() {
    let s = Setup::start().await;

    // Meta's registration challenge.
    let challenge = s
        .http
        .get(format!(
            "http://{}/webhook/meta/{}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}",
            s.daemon.http_addr, s.bot_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(challenge.status(), 200);
    assert_eq!(challenge.text().await.unwrap(), "1158201444");
    let wrong = s
        .http
        .get(format!(
            "http://{}/webhook/meta/{}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=WRONG",
            s.daemon.http_addr, s.bot_id
        ))
        .send()
        .await
        .unwrap();
    assert!(matches!(wrong.status().as_u16(), 401 | 403));
    assert_ne!(wrong.text().await.unwrap(), "1158201444");

    // Unsigned and badly signed webhooks: 401, nothing stored.
    let body = inbound(
        "wamid.UNSIGNED",
        "hello",
        json!({"profile": {"name": "PyWa Tests"}, "wa_id": CUSTOMER}),
        Some(CUSTOMER),
        None,
    );
    let unsigned = s
        .http
        .post(format!(
            "http://{}/webhook/meta/{}",
            s.daemon.http_addr, s.bot_id
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut forged = sign(&bytes).into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = s
        .http
        .post(format!(
            "http://{}/webhook/meta/{}",
            s.daemon.http_addr, s.bot_id
        ))
        .header("x-hub-signature-256", String::from_utf8(forged).unwrap())
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let conversations = s
        .admin
        .call(
            "GET",
            "/v1/tenants/acme/bots/sales/conversations",
            Value::Null,
        )
        .await;
    assert_eq!(
        conversations.as_array().unwrap().len(),
        0,
        "{conversations}"
    );

    // A real-format inbound text reaches the flow; the reply goes out through Meta.
    let text = "Hey there! I am using PyWa.";
    let response = s
        .webhook(&inbound(
            "wamid.HBgMOTcyNTQ0NDAxMjQzFQIAEhggM0RFQTNCMEEwRTY3QzUwODYzMDc4NjQ4QzM4ODAxM0YA",
            text,
            json!({"profile": {"name": "PyWa Tests"}, "wa_id": CUSTOMER}),
            Some(CUSTOMER),
            None,
        ))
        .await;
    assert_eq!(response.status(), 200);
    let sends = s.graph.wait_sends(1).await;
    let first = &sends[0];
    assert_eq!(first.path, format!("/v23.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(
        first.headers["authorization"].to_str().unwrap(),
        format!("Bearer {ACCESS_TOKEN}")
    );
    assert_eq!(
        json_body(first),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+972544401243",
               "type": "text", "text": {"body": text, "preview_url": false}})
    );
    let contact = "+972544401243";
    s.wait_state(contact, "wamid.E2E0", "sent").await;

    // Status webhooks: delivered, then read.
    assert_eq!(
        s.webhook(&status("wamid.E2E0", "delivered")).await.status(),
        200
    );
    s.wait_state(contact, "wamid.E2E0", "delivered").await;
    assert_eq!(s.webhook(&status("wamid.E2E0", "read")).await.status(), 200);
    s.wait_state(contact, "wamid.E2E0", "read").await;

    // Graph fails with 500s: the reply goes out through Twilio in the same dispatch.
    s.graph.set(FAIL_500);
    s.webhook(&inbound(
        "wamid.IN2",
        "second",
        json!({"profile": {"name": "PyWa Tests"}, "wa_id": CUSTOMER}),
        Some(CUSTOMER),
        None,
    ))
    .await;
    let twilio_sends = s.twilio.wait_sends(1).await;
    let graph_sends = s.graph.sends();
    let failed = graph_sends.last().unwrap();
    let failover = twilio_sends[0].at.duration_since(failed.at);
    println!(
        "failover: {} ms after the failing Graph attempt",
        failover.as_millis()
    );
    assert!(failover < Duration::from_secs(1), "{failover:?}");
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&twilio_sends[0].body).unwrap();
    assert!(
        form.contains(&("To".into(), "whatsapp:+972544401243".into())),
        "{form:?}"
    );
    assert!(form.contains(&("Body".into(), "second".into())), "{form:?}");
    assert_eq!(
        twilio_sends[0].path,
        "/2010-04-01/Accounts/ACe2e/Messages.json"
    );

    // The outbox records both attempts of that reply.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let found = s.transcript(contact).await.into_iter().find(|m| {
            m["direction"] == "out" && m["body"]["text"] == "second" && m["state"] == "sent"
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the failed-over reply was never sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(second["provider"], "twilio");
    let entry = s
        .admin
        .call(
            "GET",
            &format!("/v1/queue/{}", second["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    let attempts = entry["send_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{entry}");
    assert_eq!(
        (
            &attempts[0]["provider"],
            &attempts[0]["outcome"],
            &attempts[0]["error_code"]
        ),
        (&json!("meta"), &json!("retryable"), &json!("131000"))
    );
    assert_eq!(
        (&attempts[1]["provider"], &attempts[1]["outcome"]),
        (&json!("twilio"), &json!("sent"))
    );

    // Two more failures open Meta's breaker: the next reply skips Meta altogether.
    for n in 3..=4 {
        s.webhook(&inbound(
            &format!("wamid.IN{n}"),
            &format!("msg {n}"),
            json!({"wa_id": CUSTOMER}),
            Some(CUSTOMER),
            None,
        ))
        .await;
        s.twilio.wait_sends(n - 1).await;
    }
    let graph_before = s.graph.sends().len();
    s.webhook(&inbound(
        "wamid.IN5",
        "msg 5",
        json!({"wa_id": CUSTOMER}),
        Some(CUSTOMER),
        None,
    ))
    .await;
    s.twilio.wait_sends(4).await;
    assert_eq!(
        s.graph.sends().len(),
        graph_before,
        "Meta's breaker is open"
    );
    let chain = s
        .admin
        .call("GET", "/v1/tenants/acme/bots/sales/chain", Value::Null)
        .await;
    assert_eq!(chain["providers"][0]["breaker"], "open", "{chain}");

    // Meta recovers: after the cooldown a good probe closes the breaker, and traffic
    // returns to Meta.
    s.graph.set(OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let chain = s
            .admin
            .call("GET", "/v1/tenants/acme/bots/sales/chain", Value::Null)
            .await;
        if chain["providers"][0]["breaker"] == "closed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Meta's breaker never closed: {chain}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let graph_before = s.graph.sends().len();
    s.webhook(&inbound(
        "wamid.IN6",
        "back",
        json!({"wa_id": CUSTOMER}),
        Some(CUSTOMER),
        None,
    ))
    .await;
    let sends = s.graph.wait_sends(graph_before + 1).await;
    assert_eq!(json_body(sends.last().unwrap())["text"]["body"], "back");
    assert_eq!(s.twilio.sends().len(), 4);

    // A permanent error fails the message without fallback.
    s.graph.set(PERMANENT);
    s.webhook(&inbound(
        "wamid.IN7",
        "undeliverable",
        json!({"wa_id": CUSTOMER}),
        Some(CUSTOMER),
        None,
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failed = s.transcript(contact).await.into_iter().find(|m| {
            m["direction"] == "out"
                && m["body"]["text"] == "undeliverable"
                && m["state"] == "failed"
        });
        if let Some(failed) = failed {
            assert!(
                failed["last_error"].as_str().unwrap().contains("131026"),
                "{failed}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refused message never failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.twilio.sends().len(),
        4,
        "no fallback after a permanent error"
    );

    // Secrets: never in the database file in clear, never from the admin API.
    let view = s
        .admin
        .call(
            "GET",
            "/v1/tenants/acme/bots/sales/providers/meta",
            Value::Null,
        )
        .await;
    assert_eq!(view["secrets"]["access_token"], "set");
    let shown = view.to_string();
    let db = std::fs::read(&s.db).unwrap();
    let wal = std::fs::read(s.db.with_extension("db-wal")).unwrap_or_default();
    for secret in [ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, TWILIO_TOKEN] {
        assert!(!shown.contains(secret));
        for file in [&db, &wal] {
            assert!(
                !file.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in the database"
            );
        }
    }
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_known_by_bsuid_then_by_phone_is_one_conversation() {
    let s = Setup::start().await;
    let bsuid = "US.13491208655302741918";
    // Phone-less (a username, no wa_id, no from).
    s.webhook(&inbound(
        "wamid.B1",
        "first",
        json!({"profile": {"name": "Pat", "username": "@pat"}, "user_id": bsuid}),
        None,
        Some(bsuid),
    ))
    .await;
    let sends = s.graph.wait_sends(1).await;
    let body = json_body(&sends[0]);
    assert_eq!(body["recipient"], bsuid, "{body}");
    assert!(body.get("to").is_none(), "{body}");
    // Later with both phone and BSUID: same conversation, reply to the phone.
    s.webhook(&inbound(
        "wamid.B2",
        "second",
        json!({"profile": {"name": "Pat"}, "wa_id": "15551234567", "user_id": bsuid}),
        Some("15551234567"),
        Some(bsuid),
    ))
    .await;
    let sends = s.graph.wait_sends(2).await;
    let body = json_body(&sends[1]);
    assert_eq!(body["to"], "+15551234567", "{body}");
    let conversations = s
        .admin
        .call(
            "GET",
            "/v1/tenants/acme/bots/sales/conversations",
            Value::Null,
        )
        .await;
    assert_eq!(
        conversations.as_array().unwrap().len(),
        1,
        "{conversations}"
    );
    let transcript = s.transcript(bsuid).await;
    let texts: Vec<&str> = transcript
        .iter()
        .filter(|m| m["direction"] == "in")
        .map(|m| m["body"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_webhook_route_verifies_before_it_stores() {
    let s = Setup::start().await;
    let addr = s.daemon.http_addr;
    let bot = s.bot_id.clone();
    let conversations = || async {
        s.admin
            .call(
                "GET",
                "/v1/tenants/acme/bots/sales/conversations",
                Value::Null,
            )
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["contact"].as_str().unwrap().to_owned())
            .collect::<Vec<String>>()
    };

    // Twilio: the signature covers the configured public URL and the sorted form.
    let public_url = format!("https://bots.example.com/webhook/twilio/{bot}");
    let params: Vec<(String, String)> = [
        ("From", "whatsapp:+15557654321"),
        ("To", "whatsapp:+14155238886"),
        ("WaId", "15557654321"),
        ("ProfileName", "Tess"),
        ("Body", "hi from twilio"),
        ("MessageSid", "SM0001"),
        ("SmsSid", "SM0001"),
        ("NumMedia", "0"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let form = serde_urlencoded::to_string(&params).unwrap();
    let twilio_url = format!("http://{addr}/webhook/twilio/{bot}");
    let post_form = |signature: Option<String>, body: String| {
        let mut request = s
            .http
            .post(&twilio_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        request.send()
    };
    let signature = dashd::adapter::twilio::compute_signature(TWILIO_TOKEN, &public_url, &params);
    assert_eq!(post_form(None, form.clone()).await.unwrap().status(), 401);
    let tampered = form.replace("hi+from", "hi+frum");
    assert_eq!(
        post_form(Some(signature.clone()), tampered)
            .await
            .unwrap()
            .status(),
        401
    );
    assert!(conversations().await.is_empty());
    assert_eq!(
        post_form(Some(signature), form).await.unwrap().status(),
        200
    );
    s.wait_contact("+15557654321").await;

    // Evolution: the per-bot token header.
    s.admin
        .call(
            "PUT",
            "/v1/tenants/acme/bots/sales/providers/evolution",
            json!({"settings": {"base_url": "http://127.0.0.1:9", "instance": "acme-sales"},
                   "secrets": {"api_key": "evo-api-key-1", "webhook_token": "evo-hook-token-2"}}),
        )
        .await;
    let upsert = json!({"event": "messages.upsert", "instance": "acme-sales", "data": {
        "key": {"remoteJid": "5511912345678@s.whatsapp.net", "fromMe": false, "id": "BAE5EVO1"},
        "pushName": "Rodrigo", "message": {"conversation": "oi"}, "messageType": "conversation",
        "messageTimestamp": 1773027345}});
    let evolution = |token: &'static str| {
        s.http
            .post(format!("http://{addr}/webhook/evolution/{bot}"))
            .header(dashd::adapter::evolution::TOKEN_HEADER, token)
            .json(&upsert)
            .send()
    };
    assert_eq!(evolution("wrong").await.unwrap().status(), 401);
    assert_eq!(evolution("evo-hook-token-2").await.unwrap().status(), 200);
    s.wait_contact("+5511912345678").await;
    // A message the business typed on its own phone: logged as sent, never answered.
    let graph_before = s.graph.sends().len();
    let mine = json!({"event": "messages.upsert", "instance": "acme-sales", "data": {
        "key": {"remoteJid": "5511912345678@s.whatsapp.net", "fromMe": true, "id": "BAE5MINE1"},
        "message": {"conversation": "typed on the phone"}, "messageType": "conversation",
        "messageTimestamp": 1773027400}});
    let response = s
        .http
        .post(format!("http://{addr}/webhook/evolution/{bot}"))
        .header(dashd::adapter::evolution::TOKEN_HEADER, "evo-hook-token-2")
        .json(&mine)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let logged = s
        .transcript("+5511912345678")
        .await
        .into_iter()
        .find(|m| m["direction"] == "out" && m["body"]["text"] == "typed on the phone");
    assert_eq!(logged.unwrap()["state"], "sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replies: Vec<Value> = s.graph.sends()[graph_before..]
        .iter()
        .map(json_body)
        .filter(|b| b["text"]["body"] == "typed on the phone")
        .collect();
    assert!(
        replies.is_empty(),
        "a message from the business's phone was answered"
    );

    // A bridge: HMAC over "timestamp.body" with the bridge's token, routed by session.
    s.admin
        .call(
            "PUT",
            "/v1/tenants/acme/bots/sales/providers/baileys",
            json!({"settings": {"session": "sales1"}, "secrets": {"token": "bridge-token-3"}}),
        )
        .await;
    let event = serde_json::to_vec(&json!({"event": "message", "session": "sales1", "data": {
        "message_id": "3EB0BRIDGE1", "chat_id": "5491123456789@s.whatsapp.net",
        "sender_id": "5491123456789@s.whatsapp.net", "from_me": false, "timestamp_s": 1767225600,
        "type": "conversation", "text": "hola", "has_media": false, "push_name": "Ana",
        "is_group": false}}))
    .unwrap();
    let bridge = |timestamp: i64, key: &str| {
        let mut signed = timestamp.to_string().into_bytes();
        signed.push(b'.');
        signed.extend_from_slice(&event);
        let signature = format!(
            "sha256={}",
            dashd::adapter::signature::hex(&dashd::adapter::signature::hmac_sha256(
                key.as_bytes(),
                &signed
            ))
        );
        s.http
            .post(format!("http://{addr}/webhook/bridge/baileys"))
            .header(
                dashd::adapter::bridge::TIMESTAMP_HEADER,
                timestamp.to_string(),
            )
            .header(dashd::adapter::bridge::SIGNATURE_HEADER, signature)
            .body(event.clone())
            .send()
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(bridge(now, "not-the-token").await.unwrap().status(), 401);
    assert_eq!(
        bridge(now - 3600, "bridge-token-3").await.unwrap().status(),
        401
    );
    assert!(!conversations().await.contains(&"+5491123456789".to_owned()));
    assert_eq!(bridge(now, "bridge-token-3").await.unwrap().status(), 200);
    s.wait_contact("+5491123456789").await;

    // The shared Meta callback routes by phone number id; an unknown number cannot be
    // verified.
    let shared = |body: &Value| {
        let bytes = serde_json::to_vec(body).unwrap();
        s.http
            .post(format!("http://{addr}/webhook/meta"))
            .header("x-hub-signature-256", sign(&bytes))
            .body(bytes)
            .send()
    };
    let body = inbound(
        "wamid.SHARED",
        "shared",
        json!({"wa_id": "447700900123"}),
        Some("447700900123"),
        None,
    );
    assert_eq!(shared(&body).await.unwrap().status(), 200);
    s.wait_contact("+447700900123").await;
    let mut stranger = body.clone();
    stranger["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("999");
    assert_eq!(shared(&stranger).await.unwrap().status(), 401);

    // Unknown event types are acknowledged; bodies over the limit are 413.
    let unknown = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {"phone_number": "15550953877", "event": "VERIFIED_ACCOUNT"}}]}]});
    let ignored = |status: Value| status["webhook_events_ignored"].as_u64().unwrap();
    let before = ignored(s.admin.call("GET", "/v1/status", Value::Null).await);
    assert_eq!(s.webhook(&unknown).await.status(), 200);
    let after = ignored(s.admin.call("GET", "/v1/status", Value::Null).await);
    assert_eq!(after, before + 1, "the unknown event is counted");
    // Only the providers whose URL names a bot have per-bot webhooks.
    for path in [
        format!("/webhook/sandbox/{bot}"),
        format!("/webhook/baileys/{bot}"),
    ] {
        let response = s
            .http
            .post(format!("http://{addr}{path}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let huge = vec![b'x'; (1 << 20) + 1];
    let response = s
        .http
        .post(format!("http://{addr}/webhook/meta/{bot}"))
        .header("x-hub-signature-256", sign(&huge))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    s.daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bots_revoked_token_does_not_trip_another_bot_on_the_same_provider() {
    let s = Setup::start().await;
    // A second bot on meta, with its own number and token, on its own Graph server.
    let (other_graph, other_url) = Fake::start(false).await;
    let other = s
        .admin
        .call("POST", "/v1/tenants/acme/bots", json!({"name": "other"}))
        .await;
    s.admin
        .call(
            "POST",
            "/v1/tenants/acme/bots/other/flows",
            json!({"source": common::ECHO, "activate": true}),
        )
        .await;
    s.admin
        .call(
            "PUT",
            "/v1/tenants/acme/bots/other/providers/meta",
            json!({"settings": {"base_url": other_url, "phone_number_id": "555000111"},
                   "secrets": {"access_token": "other-token", "app_secret": APP_SECRET, "verify_token": "v2"}}),
        )
        .await;
    s.admin
        .call(
            "PUT",
            "/v1/tenants/acme/bots/other/chain",
            json!({"chain": ["meta"]}),
        )
        .await;
    // The first bot's token is revoked: its Meta breaker opens at once (code 190), and
    // the reply goes out through Twilio.
    s.graph.set(REVOKED);
    s.webhook(&inbound(
        "wamid.R1",
        "revoked",
        json!({"wa_id": CUSTOMER}),
        Some(CUSTOMER),
        None,
    ))
    .await;
    s.twilio.wait_sends(1).await;
    let chain = s
        .admin
        .call("GET", "/v1/tenants/acme/bots/sales/chain", Value::Null)
        .await;
    assert_eq!(chain["providers"][0]["breaker"], "open", "{chain}");
    // The other bot still sends through Meta.
    let mut body = inbound(
        "wamid.R2",
        "still fine",
        json!({"wa_id": CUSTOMER}),
        Some(CUSTOMER),
        None,
    );
    body["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("555000111");
    let bytes = serde_json::to_vec(&body).unwrap();
    let response = s
        .http
        .post(format!(
            "http://{}/webhook/meta/{}",
            s.daemon.http_addr,
            other["id"].as_str().unwrap()
        ))
        .header("x-hub-signature-256", sign(&bytes))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sends = other_graph.wait_sends(1).await;
    assert_eq!(json_body(&sends[0])["text"]["body"], "still fine");
    assert_eq!(
        sends[0].headers["authorization"].to_str().unwrap(),
        "Bearer other-token"
    );
    let chain = s
        .admin
        .call("GET", "/v1/tenants/acme/bots/other/chain", Value::Null)
        .await;
    assert_eq!(chain["providers"][0]["breaker"], "closed", "{chain}");
    s.daemon.shutdown().await.unwrap();
}
