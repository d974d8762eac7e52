//! The `evolution` provider against a loopback Evolution API: every request it makes is
//! checked against Evolution's documented requests (method, path, `apikey`, body), the
//! documented answers (both `sendText` shapes) give receipts, the documented error shapes
//! are classified, and every documented webhook payload parses into its events, only
//! once the `X-Dashd-Token` header matches.
//!
//! Payloads are Evolution's documented examples (docs OpenAPI 2.1.1, code 2.3.6, issues),
//! as collected in the project's wire-format vectors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, Method};
use chrono::{DateTime, TimeZone, Utc};
use common::loopback::Server;
use dash_core::api::Choice;
use dash_core::api::Location;
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use dashd::adapter::bridge::SessionQr;
use dashd::adapter::evolution::{Evolution, webhook_set_body};
use dashd::adapter::{
    Content, DeliveryStatus, MediaSource, OutboundMessage, ProviderConfig, ProviderEvent,
    Recipient, Secret, SendError, SessionState, WebhookError, WebhookRequest, WhatsAppProvider,
};
use serde_json::{Value, json};
use uuid::Uuid;

const API_KEY: &str = "evo-api-key";
const HOOK_TOKEN: &str = "hook-token-7f3a";

fn config(base_url: &str, instance: &str, webhook_token: Option<&str>) -> ProviderConfig {
    let mut secrets = BTreeMap::from([("api_key".to_owned(), Secret::new(API_KEY))]);
    if let Some(token) = webhook_token {
        secrets.insert("webhook_token".to_owned(), Secret::new(token));
    }
    ProviderConfig {
        bot_id: Uuid::from_u128(7),
        kind: ProviderKind::Evolution,
        settings: BTreeMap::from([
            ("base_url".to_owned(), base_url.to_owned()),
            ("instance".to_owned(), instance.to_owned()),
        ]),
        secrets,
    }
}

fn evolution(server: &Server) -> Evolution {
    Evolution::new(
        &config(&server.url, "my-instance", Some(HOOK_TOKEN)),
        reqwest::Client::new(),
    )
    .unwrap()
}

fn to_phone(phone: &str) -> Recipient {
    Recipient {
        phone: Some(phone.to_owned()),
        ..Recipient::default()
    }
}

fn outbound(to: Recipient, content: Content) -> OutboundMessage {
    OutboundMessage {
        bot_id: Uuid::from_u128(7),
        message_id: Uuid::from_u128(42),
        to,
        content,
    }
}

fn text(body: &str) -> Content {
    Content::Text {
        body: body.to_owned(),
        preview_url: false,
        reply_to: None,
    }
}

/// The documented `sendText` answer (docs OpenAPI 2.1.1, HTTP 201).
const SEND_TEXT_ANSWER_DOCS: &str = r#"{"key":{"remoteJid":"553198296801@s.whatsapp.net","fromMe":true,"id":"BAE594145F4C59B4"},"message":{"extendedTextMessage":{"text":"Olá!"}},"messageTimestamp":"1717689097","status":"PENDING"}"#;

/// The same answer as Evolution 2.3.6's `prepareMessage` shapes it.
const SEND_TEXT_ANSWER_CODE: &str = r#"{"key":{"remoteJid":"553198296801@s.whatsapp.net","fromMe":true,"id":"3EB0A1B2C3D4E5F6A7B8"},"pushName":"Você","status":"PENDING","message":{"conversation":"Olá!"},"contextInfo":null,"messageType":"conversation","messageTimestamp":1717689097,"instanceId":"aa5485dc-28fc-4c36-b1fd-13fc58e276a0","source":"unknown"}"#;

/// The documented `sendMedia` answer.
const SEND_MEDIA_ANSWER_DOCS: &str = r#"{"key":{"remoteJid":"553198296801@s.whatsapp.net","fromMe":true,"id":"BAE5F5A632EAE722"},"message":{"imageMessage":{"url":"https://mmg.whatsapp.net/o1/v/t62.7118-2...","mimetype":"image/png","caption":"Caption text","fileSha256":"VbCGkGBv5SZStLD5PHdkBWpQav/lNsXcY...","fileLength":"1305757","height":1080,"width":1920,"mediaKey":"aFQK9Ocw5tE7Nf0iBA42Xcb4Dee6G1k/pLL...","fileEncSha256":"bGVtYeR3458RwC0p1tsGDNuj+vOu/...","directPath":"/o1/v/t62.7118-24/f1/m232/up-oil...","mediaKeyTimestamp":"1717775573","jpegThumbnail":"/9j/2wBDABALDA4MChAODQ4SERATG...","contextInfo":{}}},"messageTimestamp":"1717775575","status":"PENDING"}"#;

/// What every Evolution call must carry.
fn assert_evolution_call(request: &common::loopback::Recorded, method: Method, path: &str) {
    assert_eq!(request.method, method);
    assert_eq!(request.path, path);
    assert_eq!(request.headers.get("apikey").unwrap(), API_KEY);
    if request.body != Value::Null {
        assert_eq!(
            request.headers.get("content-type").unwrap(),
            "application/json"
        );
    }
}

#[tokio::test]
async fn send_text_is_the_documented_request_and_reads_both_answer_shapes() {
    let server = Server::start().await;
    let provider = evolution(&server);

    server.answer(201, SEND_TEXT_ANSWER_DOCS);
    let receipt = provider
        .send(&outbound(to_phone("+553198296801"), text("Olá!")))
        .await
        .unwrap();
    assert_eq!(receipt.provider_message_id, "BAE594145F4C59B4");

    server.answer(201, SEND_TEXT_ANSWER_CODE);
    let receipt = provider
        .send(&outbound(to_phone("+553198296801"), text("Olá!")))
        .await
        .unwrap();
    assert_eq!(receipt.provider_message_id, "3EB0A1B2C3D4E5F6A7B8");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_evolution_call(request, Method::POST, "/message/sendText/my-instance");
        // The documented body: number without `+`, text.
        assert_eq!(
            request.body,
            json!({"number": "553198296801", "text": "Olá!"})
        );
    }
}

#[tokio::test]
async fn replies_quote_the_message_and_links_can_go_without_preview() {
    let server = Server::start().await;
    let provider = evolution(&server);
    server.answer(201, SEND_TEXT_ANSWER_DOCS);
    let reply = Content::Text {
        body: "reply".into(),
        preview_url: true,
        reply_to: Some("BAE594145F4C59B4".into()),
    };
    provider
        .send(&outbound(to_phone("+553198296801"), reply))
        .await
        .unwrap();
    server.answer(201, SEND_TEXT_ANSWER_DOCS);
    provider
        .send(&outbound(
            to_phone("+553198296801"),
            text("see https://example.com"),
        ))
        .await
        .unwrap();

    let requests = server.requests();
    assert_eq!(
        requests[0].body,
        json!({"number": "553198296801", "text": "reply", "quoted": {"key": {"id": "BAE594145F4C59B4"}}})
    );
    assert_eq!(
        requests[1].body,
        json!({"number": "553198296801", "text": "see https://example.com", "linkPreview": false})
    );
}

#[tokio::test]
async fn a_lid_is_the_number_when_no_phone_is_known_and_nothing_is_sent_without_either() {
    let server = Server::start().await;
    let provider = evolution(&server);
    server.answer(201, SEND_TEXT_ANSWER_CODE);
    let to_lid = Recipient {
        lid: Some("12345678901234@lid".into()),
        ..Recipient::default()
    };
    provider.send(&outbound(to_lid, text("Oi"))).await.unwrap();
    assert_eq!(
        server.only_request().body,
        json!({"number": "12345678901234@lid", "text": "Oi"})
    );

    let nobody = Recipient {
        bsuid: Some("US.13491208655302741918".into()),
        ..Recipient::default()
    };
    let err = provider
        .send(&outbound(nobody, text("Oi")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(server.requests().len(), 1, "nothing more was sent");
}

#[tokio::test]
async fn media_is_the_documented_send_media_request() {
    let server = Server::start().await;
    let provider = evolution(&server);
    server.answer(201, SEND_MEDIA_ANSWER_DOCS);
    let media = Content::Media {
        kind: MediaKind::Image,
        source: MediaSource::Link("https://example.com/image.png".into()),
        caption: Some("Caption text".into()),
        filename: Some("Image.png".into()),
    };
    let receipt = provider
        .send(&outbound(to_phone("+553198296801"), media))
        .await
        .unwrap();
    assert_eq!(receipt.provider_message_id, "BAE5F5A632EAE722");
    let request = server.only_request();
    assert_evolution_call(&request, Method::POST, "/message/sendMedia/my-instance");
    // The documented body, less `mimetype` (optional: Evolution takes it from the file
    // name or the download).
    assert_eq!(
        request.body,
        json!({
            "number": "553198296801",
            "mediatype": "image",
            "caption": "Caption text",
            "media": "https://example.com/image.png",
            "fileName": "Image.png"
        })
    );

    // A document without a file name takes the URL's; media by provider id is refused.
    server.answer(201, SEND_MEDIA_ANSWER_DOCS);
    let document = Content::Media {
        kind: MediaKind::Document,
        source: MediaSource::Link("https://example.com/files/price-list.pdf".into()),
        caption: None,
        filename: None,
    };
    provider
        .send(&outbound(to_phone("+553198296801"), document))
        .await
        .unwrap();
    assert_eq!(
        server.requests()[1].body,
        json!({
            "number": "553198296801",
            "mediatype": "document",
            "media": "https://example.com/files/price-list.pdf",
            "fileName": "price-list.pdf"
        })
    );
    let by_id = Content::Media {
        kind: MediaKind::Image,
        source: MediaSource::Id("1234567890".into()),
        caption: None,
        filename: None,
    };
    let err = provider
        .send(&outbound(to_phone("+553198296801"), by_id))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn menus_go_as_numbered_text() {
    let server = Server::start().await;
    let provider = evolution(&server);
    server.answer(201, SEND_TEXT_ANSWER_CODE);
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
    provider
        .send(&outbound(to_phone("+5511912345678"), menu))
        .await
        .unwrap();
    let request = server.only_request();
    assert_evolution_call(&request, Method::POST, "/message/sendText/my-instance");
    assert_eq!(
        request.body,
        json!({"number": "5511912345678", "text": "How can we help?\n1. Opening hours\n2. Talk to us"})
    );
}

/// A provider of `my-instance` whose chain entry sets `interactive` (None: not set).
fn evolution_interactive(server: &Server, interactive: Option<&str>) -> Evolution {
    let mut config = config(&server.url, "my-instance", Some(HOOK_TOKEN));
    if let Some(value) = interactive {
        config
            .settings
            .insert("interactive".to_owned(), value.to_owned());
    }
    Evolution::new(&config, reqwest::Client::new()).unwrap()
}

/// A menu whose choices are `(id, label)`.
fn menu_of(body: &str, choices: &[(&str, &str)]) -> Content {
    Content::Menu {
        body: body.to_owned(),
        choices: choices
            .iter()
            .map(|(id, label)| Choice {
                id: (*id).to_owned(),
                label: (*label).to_owned(),
            })
            .collect(),
        button: "Options".into(),
    }
}

/// A menu of `count` choices `c1`..`cN` labelled `Choice 1`..`Choice N`.
fn menu_of_count(body: &str, count: usize) -> Content {
    let choices: Vec<(String, String)> = (1..=count)
        .map(|n| (format!("c{n}"), format!("Choice {n}")))
        .collect();
    let choices: Vec<(&str, &str)> = choices
        .iter()
        .map(|(id, label)| (id.as_str(), label.as_str()))
        .collect();
    menu_of(body, &choices)
}

/// Sends one menu through a fresh loopback server and gives the request it made.
async fn sent_menu(interactive: Option<&str>, menu: Content) -> common::loopback::Recorded {
    let server = Server::start().await;
    let provider = evolution_interactive(&server, interactive);
    server.answer(201, SEND_TEXT_ANSWER_CODE);
    let receipt = provider
        .send(&outbound(to_phone("+5511912345678"), menu))
        .await
        .unwrap();
    assert_eq!(receipt.provider_message_id, "3EB0A1B2C3D4E5F6A7B8");
    server.only_request()
}

#[tokio::test]
async fn interactive_short_menus_are_send_buttons() {
    let menu = menu_of(
        "How can we help?\nPick one below.",
        &[("hours", "Opening hours"), ("human", "Talk to us")],
    );
    let request = sent_menu(Some("true"), menu).await;
    assert_evolution_call(&request, Method::POST, "/message/sendButtons/my-instance");
    // SendButtonsDto: the first line is the (bold) title, the rest the description.
    assert_eq!(
        request.body,
        json!({
            "number": "5511912345678",
            "title": "How can we help?",
            "description": "Pick one below.",
            "buttons": [
                {"type": "reply", "displayText": "Opening hours", "id": "hours"},
                {"type": "reply", "displayText": "Talk to us", "id": "human"}
            ]
        })
    );
}

#[tokio::test]
async fn interactive_menus_of_four_to_ten_are_send_list() {
    let request = sent_menu(Some("true"), menu_of_count("Which one?", 7)).await;
    assert_evolution_call(&request, Method::POST, "/message/sendList/my-instance");
    let rows: Vec<Value> = (1..=7)
        .map(|n| json!({"title": format!("Choice {n}"), "rowId": format!("c{n}")}))
        .collect();
    // SendListDto: footerText is required by Evolution's schema; one section.
    assert_eq!(
        request.body,
        json!({
            "number": "5511912345678",
            "title": "Which one?",
            "buttonText": "Options",
            "footerText": "",
            "sections": [{"title": "Options", "rows": rows}]
        })
    );
}

#[tokio::test]
async fn interactive_menus_whose_labels_are_too_long_for_buttons_are_lists() {
    let label = "A label of 22 chars ok";
    assert_eq!(label.chars().count(), 22);
    let request = sent_menu(
        Some("true"),
        menu_of("Pick", &[("a", label), ("b", "Short")]),
    )
    .await;
    assert_evolution_call(&request, Method::POST, "/message/sendList/my-instance");
    assert_eq!(request.body["sections"][0]["rows"][0]["title"], label);
}

#[tokio::test]
async fn interactive_menus_that_fit_neither_stay_numbered_text() {
    // Eleven choices: more than a list's ten rows.
    let request = sent_menu(Some("true"), menu_of_count("Which one?", 11)).await;
    assert_evolution_call(&request, Method::POST, "/message/sendText/my-instance");
    let mut text = "Which one?".to_owned();
    for n in 1..=11 {
        text.push_str(&format!("\n{n}. Choice {n}"));
    }
    assert_eq!(
        request.body,
        json!({"number": "5511912345678", "text": text})
    );

    // A 30-character label: longer than a button's 20 and a row's 24.
    let long = "A very long label, thirty char";
    assert_eq!(long.chars().count(), 30);
    let request = sent_menu(
        Some("true"),
        menu_of("Pick", &[("a", long), ("b", "Short")]),
    )
    .await;
    assert_evolution_call(&request, Method::POST, "/message/sendText/my-instance");
    assert_eq!(
        request.body,
        json!({"number": "5511912345678", "text": format!("Pick\n1. {long}\n2. Short")})
    );

    // No body text: both interactive messages need a title.
    let request = sent_menu(Some("true"), menu_of(" ", &[("a", "Yes"), ("b", "No")])).await;
    assert_evolution_call(&request, Method::POST, "/message/sendText/my-instance");
    assert_eq!(
        request.body,
        json!({"number": "5511912345678", "text": "1. Yes\n2. No"})
    );
}

#[tokio::test]
async fn without_interactive_menus_are_numbered_text() {
    for setting in [None, Some("false")] {
        let menu = menu_of(
            "How can we help?",
            &[("hours", "Opening hours"), ("human", "Talk to us")],
        );
        let request = sent_menu(setting, menu).await;
        assert_evolution_call(&request, Method::POST, "/message/sendText/my-instance");
        assert_eq!(
            request.body,
            json!({"number": "5511912345678", "text": "How can we help?\n1. Opening hours\n2. Talk to us"}),
            "interactive = {setting:?}"
        );
    }
}

#[test]
fn interactive_is_true_or_false() {
    let mut bad = config("http://127.0.0.1:8080", "my-instance", None);
    bad.settings
        .insert("interactive".to_owned(), "maybe".to_owned());
    let err = Evolution::new(&bad, reqwest::Client::new()).unwrap_err();
    assert!(err.0.contains("interactive"), "{err}");
    assert!(err.0.contains("maybe"), "{err}");
    for good in ["true", "false"] {
        let mut config = config("http://127.0.0.1:8080", "my-instance", None);
        config
            .settings
            .insert("interactive".to_owned(), good.to_owned());
        assert!(
            Evolution::new(&config, reqwest::Client::new()).is_ok(),
            "{good}"
        );
    }
    let spec = ProviderKind::Evolution.setting("interactive").unwrap();
    assert!(!spec.secret && !spec.required);
    assert_eq!(spec.default, Some("false"));
}

#[tokio::test]
async fn reactions_read_receipts_and_locations_use_their_endpoints() {
    let server = Server::start().await;
    let provider = evolution(&server);
    let to = to_phone("+5511912345678");

    server.answer(201, r#"{"key":{"remoteJid":"5511912345678@s.whatsapp.net","fromMe":true,"id":"REACT1"},"message":{"reactionMessage":{}}}"#);
    let receipt = provider
        .send(&outbound(
            to.clone(),
            Content::Reaction {
                message_id: "3A554E20ECABF3D45BB2".into(),
                emoji: "👍".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(receipt.provider_message_id, "REACT1");

    server.answer(201, r#"{"message":"Read messages","read":"success"}"#);
    let receipt = provider
        .send(&outbound(
            to.clone(),
            Content::MarkRead {
                message_id: "3A554E20ECABF3D45BB2".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(receipt.provider_message_id, "3A554E20ECABF3D45BB2");

    server.answer(
        201,
        r#"{"key":{"remoteJid":"5511912345678@s.whatsapp.net","fromMe":true,"id":"LOC1"}}"#,
    );
    provider
        .send(&outbound(
            to.clone(),
            Content::Location(Location {
                latitude: -23.5505,
                longitude: -46.6333,
                name: Some("Shop".into()),
                address: None,
            }),
        ))
        .await
        .unwrap();

    let requests = server.requests();
    assert_evolution_call(
        &requests[0],
        Method::POST,
        "/message/sendReaction/my-instance",
    );
    assert_eq!(
        requests[0].body,
        json!({"key": {"remoteJid": "5511912345678@s.whatsapp.net", "fromMe": false, "id": "3A554E20ECABF3D45BB2"}, "reaction": "👍"})
    );
    assert_evolution_call(
        &requests[1],
        Method::POST,
        "/chat/markMessageAsRead/my-instance",
    );
    assert_eq!(
        requests[1].body,
        json!({"readMessages": [{"remoteJid": "5511912345678@s.whatsapp.net", "fromMe": false, "id": "3A554E20ECABF3D45BB2"}]})
    );
    assert_evolution_call(
        &requests[2],
        Method::POST,
        "/message/sendLocation/my-instance",
    );
    assert_eq!(
        requests[2].body,
        json!({"number": "5511912345678", "latitude": -23.5505, "longitude": -46.6333, "name": "Shop", "address": ""})
    );

    let template = Content::Template {
        name: "welcome".into(),
        language: "pt_BR".into(),
        parameters: vec![],
    };
    let err = provider.send(&outbound(to, template)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("template"), "{err}");
    assert_eq!(server.requests().len(), 3, "templates are not sent");
}

async fn send_error(status: u16, body: &str) -> SendError {
    let server = Server::start().await;
    let provider = evolution(&server);
    server.answer(status, body);
    provider
        .send(&outbound(to_phone("+5511999999999"), text("Oi")))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn documented_errors_are_classified() {
    // Instance not found (docs 404 example).
    let err = send_error(
        404,
        r#"{"status":404,"error":"Not Found","response":{"message":["The \"invalid-instance\" instance does not exist"]}}"#,
    )
    .await;
    assert_eq!(err.class, ErrorClass::ProviderBroken);
    assert_eq!(err.code.as_deref(), Some("404"));
    assert!(err.message.contains("does not exist"), "{err}");

    // A route Evolution does not have (wrong base URL or version).
    let err = send_error(
        404,
        r#"{"status":404,"error":"Not Found","response":{"message":["Cannot POST /message/sendTextX/inst"]}}"#,
    )
    .await;
    assert_eq!(err.class, ErrorClass::ProviderBroken);

    // Bad API key.
    let err = send_error(
        401,
        r#"{"status":401,"error":"Unauthorized","response":{"message":"Unauthorized"}}"#,
    )
    .await;
    assert_eq!(err.class, ErrorClass::ProviderBroken);
    assert_eq!(err.code.as_deref(), Some("401"));
    assert!(!err.message.contains(API_KEY));

    let err = send_error(
        403,
        r#"{"status":403,"error":"Forbidden","response":{"message":["This name \"instance-example-name\" is already in use."]}}"#,
    )
    .await;
    assert_eq!(err.class, ErrorClass::ProviderBroken);

    // A number that is not on WhatsApp (sendMessageWithTyping throws the lookup result).
    let err = send_error(
        400,
        r#"{"status":400,"error":"Bad Request","response":{"message":[{"jid":"5511999999999@s.whatsapp.net","exists":false,"number":"5511999999999"}]}}"#,
    )
    .await;
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("not on WhatsApp"), "{err}");

    // Any other refusal of the message.
    let err = send_error(
        400,
        r#"{"status":400,"error":"Bad Request","response":{"message":["Text is required"]}}"#,
    )
    .await;
    assert_eq!(err.class, ErrorClass::Permanent);

    // The instance is not connected: Baileys' "Connection Closed", as 400 or 500.
    for status in [400, 500] {
        let err = send_error(
            status,
            r#"{"status":400,"error":"Bad Request","response":{"message":["Error: Connection Closed"]}}"#,
        )
        .await;
        assert_eq!(err.class, ErrorClass::ProviderBroken, "{status}: {err}");
    }

    // Server errors and rate limits are retried.
    for status in [500, 502, 503, 429] {
        let err = send_error(
            status,
            r#"{"status":500,"error":"Internal Server Error","response":{"message":"boom"}}"#,
        )
        .await;
        assert_eq!(err.class, ErrorClass::Retryable, "{status}: {err}");
        assert_eq!(err.code.as_deref(), Some(status.to_string().as_str()));
    }

    // 2xx without a message id, or with `{"error": true}`.
    let err = send_error(201, r#"{"status":"PENDING"}"#).await;
    assert_eq!(err.class, ErrorClass::ProviderBroken);
    let err = send_error(200, r#"{"error":true,"message":"something failed"}"#).await;
    assert_ne!(err.class, ErrorClass::Retryable);
}

#[tokio::test]
async fn transport_failures_are_retryable() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let provider = Evolution::new(
        &config(&url, "my-instance", Some(HOOK_TOKEN)),
        reqwest::Client::new(),
    )
    .unwrap();
    let err = provider
        .send(&outbound(to_phone("+5511999999999"), text("Oi")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable);
    let err = provider.probe().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable);
}

#[tokio::test]
async fn probe_reads_the_connection_state() {
    let server = Server::start().await;
    let provider = evolution(&server);
    server.answer(
        200,
        r#"{"instance":{"instanceName":"teste-docs","state":"open"}}"#,
    );
    let report = provider.probe().await.unwrap();
    assert!(report.detail.contains("open"), "{report:?}");
    assert_evolution_call(
        &server.only_request(),
        Method::GET,
        "/instance/connectionState/my-instance",
    );

    for state in ["connecting", "close"] {
        server.answer(
            200,
            json!({"instance": {"instanceName": "main", "state": state}}).to_string(),
        );
        let err = provider.probe().await.unwrap_err();
        assert_eq!(err.class, ErrorClass::ProviderBroken);
        assert!(err.message.contains(state), "{err}");
    }
    server.answer(
        404,
        r#"{"status":404,"error":"Not Found","response":{"message":["The \"my-instance\" instance does not exist"]}}"#,
    );
    assert_eq!(
        provider.probe().await.unwrap_err().class,
        ErrorClass::ProviderBroken
    );
}

#[tokio::test]
async fn instances_are_sessions_created_connected_restarted_and_logged_out() {
    let server = Server::start().await;
    let provider = evolution(&server);
    let not_found = r#"{"status":404,"error":"Not Found","response":{"message":["The \"my-instance\" instance does not exist"]}}"#;

    // Unknown to Evolution: status says so by its code, as the supervisor expects.
    server.answer(404, not_found);
    assert_eq!(
        provider.session_status().await.unwrap_err().code.as_deref(),
        Some("404")
    );

    // Start: created, then connected with the number for a pairing code.
    server.answer(404, not_found);
    server.answer(
        201,
        r#"{"instance":{"instanceName":"my-instance","status":"created"},"hash":"5A793D2C"}"#,
    );
    server.answer(
        200,
        r#"{"instance":{"instanceName":"my-instance","state":"close"}}"#,
    );
    server.answer(
        200,
        r#"{"pairingCode":"WZYEH1YY","code":"2@y8eK+bjtEjUWy9/FOM...","count":1}"#,
    );
    let started = provider.start_session(Some("5531982968")).await.unwrap();
    assert_eq!(started.state, SessionState::Qr);
    assert_eq!(started.session, "my-instance");
    assert_eq!(started.pairing_code.as_deref(), Some("WZYEH1YY"));
    let requests = server.requests();
    assert_evolution_call(
        &requests[1],
        Method::GET,
        "/instance/connectionState/my-instance",
    );
    assert_evolution_call(&requests[2], Method::POST, "/instance/create");
    assert_eq!(
        requests[2].body,
        json!({"instanceName": "my-instance", "qrcode": false, "integration": "WHATSAPP-BAILEYS", "number": "5531982968"})
    );
    assert_evolution_call(&requests[4], Method::GET, "/instance/connect/my-instance");
    assert_eq!(requests[4].query.as_deref(), Some("number=5531982968"));

    // States: open is ready (no connect call), connecting with a QR waits for a scan,
    // close is disconnected.
    server.answer(
        200,
        r#"{"instance":{"instanceName":"my-instance","state":"open"}}"#,
    );
    assert_eq!(
        provider.start_session(None).await.unwrap().state,
        SessionState::Ready
    );
    server.answer(
        200,
        r#"{"instance":{"instanceName":"my-instance","state":"connecting"}}"#,
    );
    server.answer(200, r#"{"code":"2@abc","count":2}"#);
    assert_eq!(
        provider.session_status().await.unwrap().state,
        SessionState::Qr
    );
    server.answer(
        200,
        r#"{"instance":{"instanceName":"my-instance","state":"connecting"}}"#,
    );
    server.answer(200, r#"{"count":0}"#);
    assert_eq!(
        provider.session_status().await.unwrap().state,
        SessionState::Initializing
    );
    server.answer(
        200,
        r#"{"instance":{"instanceName":"my-instance","state":"close"}}"#,
    );
    assert_eq!(
        provider.session_status().await.unwrap().state,
        SessionState::Disconnected
    );

    // Restart and logout; logging out an unknown instance is done already.
    let before = server.requests().len();
    server.answer(
        200,
        r#"{"instance":{"instanceName":"my-instance","state":"connecting"}}"#,
    );
    server.answer(
        200,
        r#"{"instance":{"instanceName":"my-instance","state":"open"}}"#,
    );
    assert_eq!(
        provider.restart_session().await.unwrap().state,
        SessionState::Ready
    );
    server.answer(
        200,
        r#"{"status":"SUCCESS","error":false,"response":{"message":"Instance logged out"}}"#,
    );
    provider.logout().await.unwrap();
    server.answer(404, not_found);
    provider.logout().await.unwrap();
    server.answer(
        401,
        r#"{"status":401,"error":"Unauthorized","response":{"message":"Unauthorized"}}"#,
    );
    assert!(provider.logout().await.is_err());
    let requests = server.requests();
    assert_evolution_call(
        &requests[before],
        Method::POST,
        "/instance/restart/my-instance",
    );
    assert_evolution_call(
        &requests[before + 2],
        Method::DELETE,
        "/instance/logout/my-instance",
    );
}

#[tokio::test]
async fn qr_reads_the_raw_code_from_connect() {
    let server = Server::start().await;
    let provider = evolution(&server);
    server.answer(
        200,
        r#"{"pairingCode":"WZYEH1YY","code":"2@y8eK+bjtEjUWy9/FOM...","count":1}"#,
    );
    assert_eq!(
        provider.qr().await.unwrap(),
        Some(SessionQr {
            qr: "2@y8eK+bjtEjUWy9/FOM...".into(),
            expires_at: None,
            pairing_code: Some("WZYEH1YY".into()),
        })
    );
    server.answer(
        200,
        r#"{"pairingCode":"FNPG5AYK","code":"2@friZvbL+GZxUgI","base64":"data:image/png;base64,iVBOR","count":1}"#,
    );
    assert_eq!(
        provider.qr().await.unwrap().map(|qr| qr.qr).as_deref(),
        Some("2@friZvbL+GZxUgI")
    );
    server.answer(200, r#"{"count":0}"#);
    assert_eq!(provider.qr().await.unwrap(), None);
    // Already connected: connect answers the connection state.
    server.answer(
        200,
        r#"{"instance":{"instanceName":"my-instance","state":"open"}}"#,
    );
    assert_eq!(provider.qr().await.unwrap(), None);

    for request in server.requests() {
        assert_evolution_call(&request, Method::GET, "/instance/connect/my-instance");
    }
}

#[tokio::test]
async fn the_webhook_is_set_with_the_nested_body_and_the_token_header() {
    let expected = json!({
        "webhook": {
            "enabled": true,
            "url": "https://bots.example.com/webhook/evolution/7",
            "headers": {"X-Dashd-Token": HOOK_TOKEN},
            "byEvents": false,
            "base64": false,
            "events": ["MESSAGES_UPSERT", "MESSAGES_UPDATE", "CONNECTION_UPDATE", "QRCODE_UPDATED", "SEND_MESSAGE"]
        }
    });
    assert_eq!(
        webhook_set_body("https://bots.example.com/webhook/evolution/7", HOOK_TOKEN),
        expected
    );

    let server = Server::start().await;
    let provider = evolution(&server);
    server.answer(201, r#"{"webhook":{"enabled":true}}"#);
    provider
        .set_webhook("https://bots.example.com/webhook/evolution/7")
        .await
        .unwrap();
    let request = server.only_request();
    assert_evolution_call(&request, Method::POST, "/webhook/set/my-instance");
    assert_eq!(request.body, expected);
}

// ---- webhooks ----------------------------------------------------------------------

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn provider_for(instance: &str, webhook_token: Option<&str>) -> Evolution {
    Evolution::new(
        &config("http://127.0.0.1:9", instance, webhook_token),
        reqwest::Client::new(),
    )
    .unwrap()
}

fn deliver_at(
    provider: &Evolution,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<Vec<ProviderEvent>, WebhookError> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(token) = token {
        headers.insert("x-dashd-token", HeaderValue::from_str(token).unwrap());
    }
    provider.parse_webhook(&WebhookRequest {
        method: &Method::POST,
        path,
        query: None,
        headers: &headers,
        body,
        now: now(),
    })
}

/// Delivers an envelope to a provider of the envelope's instance, with the right token.
fn deliver(envelope: &Value) -> Vec<ProviderEvent> {
    let instance = envelope["instance"].as_str().unwrap();
    let provider = provider_for(instance, Some(HOOK_TOKEN));
    deliver_at(
        &provider,
        "/webhook/evolution/7",
        Some(HOOK_TOKEN),
        envelope.to_string().as_bytes(),
    )
    .unwrap()
}

fn only(events: Vec<ProviderEvent>) -> ProviderEvent {
    assert_eq!(events.len(), 1, "{events:#?}");
    events.into_iter().next().unwrap()
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).unwrap()
}

/// evolution.json `messages_upsert_v2_constructed` (2.3.6 code shape).
fn upsert_v2() -> Value {
    json!({
        "event": "messages.upsert",
        "instance": "my-instance",
        "data": {
            "key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": false, "id": "3A554E20ECABF3D45BB2"},
            "pushName": "Maria",
            "status": "DELIVERY_ACK",
            "message": {"conversation": "Oi"},
            "messageType": "conversation",
            "messageTimestamp": 1717607420,
            "instanceId": "aa5485dc-28fc-4c36-b1fd-13fc58e276a0",
            "source": "android"
        },
        "destination": "https://example.com/hook",
        "date_time": "2025-06-05T14:10:20.494Z",
        "sender": "5511888888888@s.whatsapp.net",
        "server_url": "http://localhost:8080",
        "apikey": "5A793D2C-EF7A-4AC5-86AE-5DE05F1CCC22"
    })
}

#[test]
fn a_text_message_is_inbound_from_its_phone() {
    let ProviderEvent::Inbound {
        from,
        provider_message_id,
        body,
        at: when,
        from_me,
    } = only(deliver(&upsert_v2()))
    else {
        panic!("not inbound");
    };
    assert_eq!(from.phone.as_deref(), Some("+5511999999999"));
    assert_eq!(from.lid, None);
    assert_eq!(from.name.as_deref(), Some("Maria"));
    assert_eq!(provider_message_id, "3A554E20ECABF3D45BB2");
    assert_eq!(body.text, "Oi");
    assert_eq!(body.name.as_deref(), Some("Maria"));
    assert_eq!(when, at(1_717_607_420));
    assert!(!from_me);
}

#[test]
fn the_v1_8_capture_parses_once_its_redacted_digits_are_digits() {
    // evolution.json `messages_upsert_v1_8_full` (issue #631); the reporter starred out
    // digits of the numbers.
    let mut envelope = json!({
        "event": "messages.upsert",
        "instance": "5535********",
        "data": {
            "key": {"remoteJid": "55119********@s.whatsapp.net", "fromMe": false, "id": "3A554E20ECABF3D45BB2"},
            "pushName": "Giovanna Darcanovas",
            "message": {
                "conversation": "Olá! Vim do Instagram da **** e gostaria de agendar uma Consulta Online.",
                "messageContextInfo": {
                    "deviceListMetadata": {"senderTimestamp": "1717523235", "recipientKeyHash": "Dsydf2LJ9g4knA==", "recipientTimestamp": "1716981781"},
                    "deviceListMetadataVersion": 2
                }
            },
            "messageType": "conversation",
            "messageTimestamp": 1717607420,
            "owner": "5535********",
            "source": "ios"
        },
        "destination": "**/external/whatsapp/webhook",
        "date_time": "2024-06-05T14:10:20.494Z",
        "sender": "5535********@s.whatsapp.net",
        "server_url": "http://localhost:8080",
        "apikey": "izkp56kz4qs0or1m3m1c"
    });
    // As captured, the chat is no phone: nothing is made up from it.
    assert!(matches!(
        only(deliver(&envelope)),
        ProviderEvent::Ignored { .. }
    ));
    envelope["data"]["key"]["remoteJid"] = json!("5511912345678@s.whatsapp.net");
    let ProviderEvent::Inbound {
        from,
        body,
        at: when,
        ..
    } = only(deliver(&envelope))
    else {
        panic!("not inbound");
    };
    assert_eq!(from.phone.as_deref(), Some("+5511912345678"));
    assert!(body.text.starts_with("Olá! Vim do Instagram"));
    assert_eq!(body.name.as_deref(), Some("Giovanna Darcanovas"));
    assert_eq!(when, at(1_717_607_420));
}

#[test]
fn a_lid_sender_is_a_lid_and_its_alternative_gives_the_phone() {
    // evolution.json `messages_upsert_v2_2_3_lid` (issue #2466): the capture's key.id is
    // blank, which is no message to deduplicate.
    let mut envelope = json!({
        "event": "messages.upsert",
        "instance": "Teste",
        "data": {
            "key": {"remoteJid": "13718@lid", "fromMe": false, "id": ""},
            "pushName": "Rodrigo",
            "status": "DELIVERY_ACK",
            "message": {
                "conversation": "Oi",
                "messageContextInfo": {
                    "deviceListMetadata": {"senderKeyHash": "", "senderTimestamp": "", "recipientKeyHash": "", "recipientTimestamp": ""},
                    "deviceListMetadataVersion": 2,
                    "messageSecret": ""
                }
            },
            "messageType": "conversation",
            "messageTimestamp": 1773027345,
            "instanceId": "bae4"
        }
    });
    let provider = provider_for("Teste", Some(HOOK_TOKEN));
    let err = deliver_at(
        &provider,
        "/webhook/evolution/7",
        Some(HOOK_TOKEN),
        envelope.to_string().as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::Malformed(_)), "{err:?}");

    envelope["data"]["key"]["id"] = json!("3EB0LID0000001");
    let ProviderEvent::Inbound {
        from,
        body,
        at: when,
        ..
    } = only(deliver(&envelope))
    else {
        panic!("not inbound");
    };
    assert_eq!(from.lid.as_deref(), Some("13718@lid"));
    assert_eq!(from.phone, None, "a LID is never taken for a phone");
    assert_eq!(body.text, "Oi");
    assert_eq!(when, at(1_773_027_345));

    // Baileys 7 adds the phone JID as remoteJidAlt.
    envelope["data"]["key"]["remoteJidAlt"] = json!("5511912345678@s.whatsapp.net");
    envelope["data"]["key"]["addressingMode"] = json!("lid");
    let ProviderEvent::Inbound { from, .. } = only(deliver(&envelope)) else {
        panic!("not inbound");
    };
    assert_eq!(from.lid.as_deref(), Some("13718@lid"));
    assert_eq!(from.phone.as_deref(), Some("+5511912345678"));
}

#[test]
fn messages_sent_from_the_phone_are_inbound_from_me() {
    let mut envelope = upsert_v2();
    envelope["data"]["key"]["fromMe"] = json!(true);
    envelope["data"]["pushName"] = json!("Você");
    let ProviderEvent::Inbound {
        from,
        from_me,
        body,
        ..
    } = only(deliver(&envelope))
    else {
        panic!("not inbound");
    };
    assert!(from_me);
    assert_eq!(from.phone.as_deref(), Some("+5511999999999"));
    assert_eq!(from.name, None, "our own push name is not the customer's");
    assert_eq!(body.name, None);
}

#[test]
fn group_messages_are_ignored() {
    let mut envelope = upsert_v2();
    envelope["data"]["key"]["remoteJid"] = json!("120363025246125888@g.us");
    envelope["data"]["key"]["participant"] = json!("5511999999999@s.whatsapp.net");
    assert!(matches!(
        only(deliver(&envelope)),
        ProviderEvent::Ignored { .. }
    ));
}

#[test]
fn media_replies_and_locations_are_read() {
    let mut envelope = upsert_v2();
    envelope["data"]["message"] = json!({
        "imageMessage": {
            "url": "https://mmg.whatsapp.net/o1/v/t62.7118-24/abc",
            "mimetype": "image/jpeg",
            "caption": "my receipt",
            "fileLength": "1305757"
        }
    });
    envelope["data"]["messageType"] = json!("imageMessage");
    let ProviderEvent::Inbound { body, .. } = only(deliver(&envelope)) else {
        panic!("not inbound");
    };
    let attachment = body.attachment.unwrap();
    assert_eq!(attachment.kind, MediaKind::Image);
    assert_eq!(
        attachment.reference,
        "https://mmg.whatsapp.net/o1/v/t62.7118-24/abc"
    );
    assert_eq!(attachment.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(attachment.caption.as_deref(), Some("my receipt"));
    assert_eq!(body.text, "my receipt");

    envelope["data"]["message"] = json!({
        "documentMessage": {"mimetype": "application/pdf", "fileName": "invoice.pdf"}
    });
    let ProviderEvent::Inbound { body, .. } = only(deliver(&envelope)) else {
        panic!("not inbound");
    };
    let attachment = body.attachment.unwrap();
    assert_eq!(attachment.kind, MediaKind::Document);
    assert_eq!(
        attachment.reference, "3A554E20ECABF3D45BB2",
        "no URL: the id"
    );
    assert_eq!(attachment.filename.as_deref(), Some("invoice.pdf"));

    envelope["data"]["message"] = json!({
        "buttonsResponseMessage": {"selectedButtonId": "hours", "selectedDisplayText": "Opening hours"}
    });
    let ProviderEvent::Inbound { body, .. } = only(deliver(&envelope)) else {
        panic!("not inbound");
    };
    assert_eq!(body.reply_id.as_deref(), Some("hours"));
    assert_eq!(body.text, "Opening hours");

    envelope["data"]["message"] = json!({
        "listResponseMessage": {"title": "Talk to us", "listType": 1, "singleSelectReply": {"selectedRowId": "human"}}
    });
    let ProviderEvent::Inbound { body, .. } = only(deliver(&envelope)) else {
        panic!("not inbound");
    };
    assert_eq!(body.reply_id.as_deref(), Some("human"));
    assert_eq!(body.text, "Talk to us");

    // sendButtons goes out as native-flow quick_reply buttons (Evolution 2.3): a tap
    // comes back as an interactiveResponseMessage whose paramsJson holds the id.
    envelope["data"]["message"] = json!({
        "interactiveResponseMessage": {
            "body": {"text": "Opening hours", "format": "DEFAULT"},
            "nativeFlowResponseMessage": {
                "name": "quick_reply",
                "paramsJson": "{\"id\":\"hours\"}",
                "version": 3
            }
        }
    });
    envelope["data"]["messageType"] = json!("interactiveResponseMessage");
    let ProviderEvent::Inbound { body, .. } = only(deliver(&envelope)) else {
        panic!("not inbound");
    };
    assert_eq!(body.reply_id.as_deref(), Some("hours"));
    assert_eq!(body.text, "Opening hours");

    // A template quick-reply button tap.
    envelope["data"]["message"] = json!({
        "templateButtonReplyMessage": {"selectedId": "human", "selectedDisplayText": "Talk to us", "selectedIndex": 1}
    });
    let ProviderEvent::Inbound { body, .. } = only(deliver(&envelope)) else {
        panic!("not inbound");
    };
    assert_eq!(body.reply_id.as_deref(), Some("human"));
    assert_eq!(body.text, "Talk to us");

    envelope["data"]["message"] = json!({
        "locationMessage": {"degreesLatitude": -23.5505, "degreesLongitude": -46.6333, "name": "Sé", "address": "Praça da Sé"}
    });
    let ProviderEvent::Inbound { body, .. } = only(deliver(&envelope)) else {
        panic!("not inbound");
    };
    let location = body.location.unwrap();
    assert_eq!(
        (location.latitude, location.longitude),
        (-23.5505, -46.6333)
    );
    assert_eq!(location.name.as_deref(), Some("Sé"));

    // A message with nothing DashOffice reads (a poll) is ignored, not an empty text.
    envelope["data"]["message"] = json!({"pollCreationMessage": {"name": "?"}});
    envelope["data"]["messageType"] = json!("pollCreationMessage");
    assert!(matches!(
        only(deliver(&envelope)),
        ProviderEvent::Ignored { .. }
    ));
}

fn update(status: &str, from_me: bool) -> Value {
    // evolution.json `messages_update_read` (issue #2010), status and fromMe varied.
    json!({
        "event": "messages.update",
        "instance": "myinstance",
        "data": {
            "keyId": "A5561E44C2A63682E4295B52F484C14E",
            "remoteJid": "200000000000@s.whatsapp.net",
            "fromMe": from_me,
            "participant": "200000000000@s.whatsapp.net",
            "status": status,
            "instanceId": "abb8e7b9-7586-6462-95c4",
            "messageId": "cmfyoow42000hov4xwkdug3lv"
        },
        "destination": "https://kina-nonscented-roseanna.ngrok-free.dev/api/webhook",
        "date_time": "2025-09-24T21:37:57.432Z",
        "sender": "200000000000@s.whatsapp.net",
        "server_url": "https://mywebsite.com",
        "apikey": "myinstance"
    })
}

#[test]
fn message_updates_are_statuses_of_our_messages() {
    // The capture as it is: a read receipt of a message the customer sent.
    assert!(matches!(
        only(deliver(&update("READ", false))),
        ProviderEvent::Ignored { .. }
    ));

    for (raw, expected) in [
        ("SERVER_ACK", DeliveryStatus::Sent),
        ("DELIVERY_ACK", DeliveryStatus::Delivered),
        ("READ", DeliveryStatus::Read),
        ("PLAYED", DeliveryStatus::Read),
        ("ERROR", DeliveryStatus::Failed),
    ] {
        let ProviderEvent::Status {
            provider_message_id,
            status,
            error,
            recipient,
            at: when,
        } = only(deliver(&update(raw, true)))
        else {
            panic!("{raw}: not a status");
        };
        assert_eq!(provider_message_id, "A5561E44C2A63682E4295B52F484C14E");
        assert_eq!(status, expected, "{raw}");
        assert_eq!(error.is_some(), expected == DeliveryStatus::Failed);
        assert_eq!(recipient.phone.as_deref(), Some("+200000000000"));
        assert_eq!(when, now());
    }
    assert!(matches!(
        only(deliver(&update("PENDING", true))),
        ProviderEvent::Ignored { .. }
    ));
}

#[test]
fn connection_updates_are_session_states() {
    // evolution.json `connection_update_close_440` (issue #765).
    let close_440 = json!({
        "event": "connection.update",
        "instance": "tiago-dev",
        "data": {"instance": "tiago-dev", "state": "close", "statusReason": 440},
        "server_url": "http://localhost:8080",
        "apikey": "asassasasasasasasa",
        "date_time": "2024-08-13T19:41:49.439Z",
        "sender": "553299883755@s.whatsapp.net"
    });
    let ProviderEvent::Session {
        session,
        state,
        reason,
        ..
    } = only(deliver(&close_440))
    else {
        panic!("not a session event");
    };
    assert_eq!(session, "tiago-dev");
    assert_eq!(state, SessionState::Disconnected);
    assert!(reason.unwrap().contains("440"));

    let mut logged_out = close_440.clone();
    logged_out["data"]["statusReason"] = json!(401);
    assert!(matches!(
        only(deliver(&logged_out)),
        ProviderEvent::Session {
            state: SessionState::LoggedOut,
            ..
        }
    ));

    // evolution.json `connection_update_open` (constructed from 2.3.6).
    let open = json!({
        "event": "connection.update",
        "instance": "my-instance",
        "data": {
            "instance": "my-instance",
            "wuid": "5511888888888@s.whatsapp.net",
            "profileName": "My Business",
            "profilePictureUrl": null,
            "state": "open",
            "statusReason": 200
        },
        "destination": "https://example.com/hook",
        "date_time": "2025-06-05T14:10:20.494Z",
        "sender": "5511888888888@s.whatsapp.net",
        "server_url": "http://localhost:8080",
        "apikey": null
    });
    let ProviderEvent::Session {
        state,
        phone,
        reason,
        ..
    } = only(deliver(&open))
    else {
        panic!("not a session event");
    };
    assert_eq!(state, SessionState::Ready);
    assert_eq!(phone.as_deref(), Some("+5511888888888"));
    assert_eq!(reason, None);

    let mut connecting = open.clone();
    connecting["data"] =
        json!({"instance": "my-instance", "state": "connecting", "statusReason": 200});
    assert!(matches!(
        only(deliver(&connecting)),
        ProviderEvent::Session {
            state: SessionState::Initializing,
            ..
        }
    ));

    // evolution.json `connection_update_refused_qr_limit`.
    let refused = json!({
        "event": "connection.update",
        "instance": "my-instance",
        "data": {"instance": "my-instance", "state": "refused", "statusReason": 428, "wuid": null, "profileName": null, "profilePictureUrl": null}
    });
    assert!(matches!(
        only(deliver(&refused)),
        ProviderEvent::Session {
            state: SessionState::Failed,
            ..
        }
    ));
}

#[test]
fn qr_updates_carry_the_raw_code() {
    // evolution.json `qrcode_updated`.
    let envelope = json!({
        "event": "qrcode.updated",
        "instance": "my-instance",
        "data": {"qrcode": {"instance": "my-instance", "pairingCode": null, "code": "2@y8eK+bjtEjUWy9/FOM...", "base64": "data:image/png;base64,iVBOR..."}},
        "destination": "https://example.com/hook",
        "date_time": "2025-06-05T14:10:20.494Z",
        "sender": null,
        "server_url": "http://localhost:8080",
        "apikey": null
    });
    let ProviderEvent::Session {
        session, state, qr, ..
    } = only(deliver(&envelope))
    else {
        panic!("not a session event");
    };
    assert_eq!(session, "my-instance");
    assert_eq!(state, SessionState::Qr);
    assert_eq!(qr.as_deref(), Some("2@y8eK+bjtEjUWy9/FOM..."));

    let limit = json!({
        "event": "qrcode.updated",
        "instance": "my-instance",
        "data": {"message": "QR code limit reached, please login again", "statusCode": 500}
    });
    let ProviderEvent::Session { state, reason, .. } = only(deliver(&limit)) else {
        panic!("not a session event");
    };
    assert_eq!(state, SessionState::Failed);
    assert!(reason.unwrap().contains("limit"));
}

#[test]
fn our_send_echo_and_other_events_are_ignored() {
    // evolution.json `send_message`.
    let envelope = json!({
        "event": "send.message",
        "instance": "my-instance",
        "data": {
            "key": {"remoteJid": "553198296801@s.whatsapp.net", "fromMe": true, "id": "BAE594145F4C59B4"},
            "pushName": "Você",
            "status": "PENDING",
            "message": {"conversation": "Olá!"},
            "messageType": "conversation",
            "messageTimestamp": 1717689097,
            "instanceId": "aa5485dc-28fc-4c36-b1fd-13fc58e276a0",
            "source": "unknown"
        },
        "destination": "https://example.com/hook",
        "date_time": "2025-06-05T14:10:20.494Z",
        "sender": "5511888888888@s.whatsapp.net",
        "server_url": "http://localhost:8080",
        "apikey": null
    });
    assert_eq!(
        only(deliver(&envelope)),
        ProviderEvent::Ignored {
            kind: "evolution send.message".into()
        }
    );
    let contacts = json!({"event": "contacts.update", "instance": "my-instance", "data": []});
    assert!(matches!(
        only(deliver(&contacts)),
        ProviderEvent::Ignored { .. }
    ));
    // Another instance's event is not this bot's.
    let mut other = upsert_v2();
    other["instance"] = json!("someone-else");
    let provider = provider_for("my-instance", Some(HOOK_TOKEN));
    let events = deliver_at(
        &provider,
        "/webhook/evolution/7",
        Some(HOOK_TOKEN),
        other.to_string().as_bytes(),
    )
    .unwrap();
    assert!(matches!(only(events), ProviderEvent::Ignored { .. }));
}

#[test]
fn by_events_urls_name_the_event_but_the_body_wins() {
    let provider = provider_for("my-instance", Some(HOOK_TOKEN));
    let mut envelope = upsert_v2();
    envelope.as_object_mut().unwrap().remove("event");
    let events = deliver_at(
        &provider,
        "/webhook/evolution/7/messages-upsert",
        Some(HOOK_TOKEN),
        envelope.to_string().as_bytes(),
    )
    .unwrap();
    assert!(matches!(only(events), ProviderEvent::Inbound { .. }));

    let events = deliver_at(
        &provider,
        "/webhook/evolution/7/send-message",
        Some(HOOK_TOKEN),
        upsert_v2().to_string().as_bytes(),
    )
    .unwrap();
    assert!(matches!(only(events), ProviderEvent::Inbound { .. }));
}

#[test]
fn the_token_is_checked_before_anything_is_parsed() {
    let provider = provider_for("my-instance", Some(HOOK_TOKEN));
    let body = upsert_v2().to_string();
    for token in [
        None,
        Some("wrong"),
        Some("hook-token-7f3"),
        Some("hook-token-7f3ab"),
    ] {
        let err =
            deliver_at(&provider, "/webhook/evolution/7", token, body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, WebhookError::Signature(_)),
            "{token:?}: {err:?}"
        );
    }
    // Garbage with a wrong token is refused for the token, not parsed.
    let err = deliver_at(
        &provider,
        "/webhook/evolution/7",
        Some("wrong"),
        b"{not json",
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::Signature(_)), "{err:?}");
    let err = deliver_at(
        &provider,
        "/webhook/evolution/7",
        Some(HOOK_TOKEN),
        b"{not json",
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::Malformed(_)), "{err:?}");

    // Without a configured token nothing is accepted, whatever the header says.
    let unconfigured = provider_for("my-instance", None);
    let err = deliver_at(
        &unconfigured,
        "/webhook/evolution/7",
        Some(HOOK_TOKEN),
        body.as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::NotConfigured(_)), "{err:?}");
}

#[test]
fn settings_are_checked() {
    let mut bad = config("ftp://example.com", "my-instance", None);
    assert!(Evolution::new(&bad, reqwest::Client::new()).is_err());
    bad = config("http://127.0.0.1:8080", "my-instance", None);
    bad.secrets.clear();
    assert!(Evolution::new(&bad, reqwest::Client::new()).is_err());
    bad = config("http://127.0.0.1:8080", "my-instance", None);
    bad.settings.remove("instance");
    assert!(Evolution::new(&bad, reqwest::Client::new()).is_err());
    let debug = format!("{:?}", provider_for("my-instance", Some(HOOK_TOKEN)));
    assert!(
        !debug.contains(API_KEY) && !debug.contains(HOOK_TOKEN),
        "{debug}"
    );
}
