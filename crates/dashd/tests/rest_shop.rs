//! The shop example end to end: a customer orders through signed Cloud API webhooks, the
//! flow's `create_order` writes the order, `GET /api/v1/orders` shows it, and an
//! `order.created` event reaches the stream of that tenant, and not another's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::{Duration, Instant};

use common::loopback;
use common::rest::{self, PASSWORD, Rest};
use serde_json::{Value, json};

const SHOP: &str = include_str!("../../../examples/flows/shop.toml");
const APP_SECRET: &str = "shop-app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";

fn signed(body: &[u8]) -> String {
    format!(
        "sha256={}",
        dashd::adapter::signature::hex(&dashd::adapter::signature::hmac_sha256(
            APP_SECRET.as_bytes(),
            body
        ))
    )
}

/// A Cloud API webhook with one text message from `from`.
fn message(id: &str, from: &str, text: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "264937493375603", "changes": [{"value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550953877", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": from}],
        "messages": [{"from": from, "id": id, "timestamp": "1730231903", "text": {"body": text}, "type": "text"}]},
        "field": "messages"}]}]})
}

/// Reads a Server-Sent Events stream for `wait`; the events' `event:` names and data.
async fn collect(
    mut stream: reqwest::Response,
    until: &str,
    wait: Duration,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + wait;
    let mut text = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
        if text.contains(&format!("event: {until}\n")) {
            break;
        }
    }
    text.split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event.to_owned(), data.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn a_shop_order_through_meta_reaches_the_api_and_only_its_tenants_stream() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |_| {}).await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    let graph = loopback::Server::start().await;
    // Graph accepts every send, as the Cloud API answers one.
    for n in 0..100 {
        graph.answer(
            200,
            format!(r#"{{"messaging_product":"whatsapp","contacts":[{{"input":"+5491122334455","wa_id":"5491122334455"}}],"messages":[{{"id":"wamid.out{n}"}}]}}"#),
        );
    }

    // Tenant acme: the shop bot on the Cloud API, and its owner.
    admin
        .call("POST", "/v1/tenants", json!({"slug": "acme"}))
        .await;
    let bot = admin
        .call("POST", "/v1/tenants/acme/bots", json!({"name": "ventas"}))
        .await;
    let bot_id = bot["id"].as_str().unwrap().to_owned();
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots/ventas/flows",
            json!({"source": SHOP, "activate": true}),
        )
        .await;
    admin
        .call(
            "PUT",
            "/v1/tenants/acme/bots/ventas/providers/meta",
            json!({"settings": {"base_url": graph.url, "phone_number_id": PHONE_NUMBER_ID},
                   "secrets": {"access_token": "EAAG-test-token", "app_secret": APP_SECRET, "verify_token": "v"}}),
        )
        .await;
    admin
        .call(
            "PUT",
            "/v1/tenants/acme/bots/ventas/chain",
            json!({"chain": ["meta"]}),
        )
        .await;
    admin
        .call(
            "POST",
            "/v1/users",
            json!({"tenant": "acme", "email": "owner@acme.example.com", "role": "owner", "password": PASSWORD}),
        )
        .await;
    let owner = api.login("owner@acme.example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another tenant, with its own owner watching its own stream.
    let other = rest::tenant(&admin, &api, "tenant-b").await;

    let stream = |token: String, last: Option<&'static str>| {
        let api = &api;
        async move {
            let mut request = api
                .client
                .get(format!("{}/api/v1/events", api.base))
                .bearer_auth(token);
            if let Some(last) = last {
                request = request.header("last-event-id", last);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            response
        }
    };
    let acme_stream = stream(owner.clone(), None).await;
    let other_stream = stream(other.owner.clone(), None).await;

    // The conversation of the shop example, each message a signed webhook.
    let customer = "5491122334455";
    let http = reqwest::Client::new();
    for (n, text) in [
        "hola",
        "1",
        "alfajores",
        "2",
        "Ana Pérez",
        "11 2345 6789",
        "ana@example.com",
        "sí",
    ]
    .iter()
    .enumerate()
    {
        let body = serde_json::to_vec(&message(&format!("wamid.shop{n}"), customer, text)).unwrap();
        let answer = http
            .post(format!("http://{}/webhook/meta/{bot_id}", daemon.http_addr))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signed(&body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }

    // The order shows in the API.
    let deadline = Instant::now() + Duration::from_secs(30);
    let order = loop {
        let orders = api.call("GET", "/api/v1/orders", Some(&owner), None).await;
        assert_eq!(orders.status, 200, "{orders:?}");
        if let Some(order) = orders.body["data"].as_array().unwrap().first() {
            break order.clone();
        }
        assert!(Instant::now() < deadline, "no order after the conversation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(order["status"], "pending");
    assert_eq!(order["source"], "flow");
    assert_eq!(order["currency"], "ARS");
    assert_eq!(order["bot_id"], bot_id.as_str());
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(order["items"][0]["unit_price_cents"], 450_000);
    assert_eq!(order["total_cents"], 900_000);
    assert!(order["notes"].as_str().unwrap().contains("ana@example.com"));
    // Its customer carries the name and what the flow captured.
    let customer_id = order["customer_id"].as_str().unwrap();
    let record = api
        .call(
            "GET",
            &format!("/api/v1/customers/{customer_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(record.body["name"], "Ana Pérez");
    assert_eq!(record.body["vars"]["email"], "ana@example.com");
    // The other tenant sees neither the order nor the customer.
    let theirs = api
        .call("GET", "/api/v1/orders", Some(&other.owner), None)
        .await;
    assert!(
        !theirs.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == order["id"]),
        "{theirs:?}"
    );
    let hidden = api
        .call(
            "GET",
            &format!("/api/v1/orders/{}", order["id"].as_str().unwrap()),
            Some(&other.owner),
            None,
        )
        .await;
    assert_eq!(hidden.status, 404);

    // The event reached acme's stream, and not the other tenant's.
    let seen = collect(acme_stream, "order.created", Duration::from_secs(10)).await;
    let created = seen
        .iter()
        .find(|(event, _)| event == "order.created")
        .unwrap_or_else(|| panic!("no order.created on acme's stream: {seen:?}"));
    let data: Value = serde_json::from_str(&created.1).unwrap();
    assert_eq!(data["data"]["order_id"], order["id"]);
    // The conversation is on the stream too: the customer's messages and the bot's.
    let customer_said: Vec<Value> = seen
        .iter()
        .filter(|(event, _)| event == "message.in")
        .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap())
        .collect();
    assert_eq!(customer_said.len(), 8, "{seen:?}");
    assert_eq!(customer_said[0]["data"]["text"], "hola");
    assert!(
        seen.iter().any(|(event, _)| event == "message.out"),
        "{seen:?}"
    );
    let elsewhere = collect(other_stream, "order.created", Duration::from_secs(1)).await;
    assert!(
        elsewhere.is_empty(),
        "another tenant's stream got {elsewhere:?}"
    );
    // A client that reconnects from the start gets it again from the log.
    let resumed = collect(
        stream(owner.clone(), Some("0")).await,
        "order.created",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        resumed.iter().any(|(event, _)| event == "order.created"),
        "{resumed:?}"
    );

    // The API sends templates and media too, as the Cloud API documents them.
    let send = |body: Value| {
        let api = &api;
        let owner = owner.clone();
        let path = format!("/api/v1/bots/{bot_id}/messages");
        async move { api.call("POST", &path, Some(&owner), Some(body)).await }
    };
    let template = send(json!({"to": "+5491122334455", "template": {"name": "pedido_listo", "language": "es_AR", "parameters": ["Ana", "1001"]}})).await;
    assert_eq!(template.status, 201, "{template:?}");
    let media = send(json!({"to": "+5491122334455", "text": "Tu factura", "media": {"url": "https://example.com/f.pdf", "type": "document"}})).await;
    assert_eq!(media.status, 201, "{media:?}");
    let both = send(json!({"to": "+5491122334455", "template": {"name": "x", "language": "es"}, "media": {"url": "https://example.com/a.png", "type": "image"}})).await;
    assert_eq!(both.status, 422, "{both:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent: Vec<Value> = graph.requests().into_iter().map(|r| r.body).collect();
        let template = sent.iter().find(|b| b["type"] == "template");
        let document = sent.iter().find(|b| b["type"] == "document");
        if let (Some(template), Some(document)) = (template, document) {
            assert_eq!(template["template"]["name"], "pedido_listo");
            assert_eq!(template["template"]["language"]["code"], "es_AR");
            assert_eq!(
                template["template"]["components"][0]["parameters"][1]["text"],
                "1001"
            );
            assert_eq!(document["document"]["link"], "https://example.com/f.pdf");
            assert_eq!(document["document"]["caption"], "Tu factura");
            break;
        }
        assert!(Instant::now() < deadline, "{sent:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.shutdown().await.unwrap();
}
