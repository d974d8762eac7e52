//! The Cloud API providers (`meta`, `official`) against a loopback server standing in for
//! the Graph API. Every request they make is compared with Meta's documented example
//! (method, path, auth header, JSON body); documented answers and error bodies are served
//! back and their classification checked; every signature vector, verification case and
//! webhook payload of the vectors goes through the webhook side, with BSUID-shaped
//! payloads built from Meta's BSUID documentation besides.
//!
//! The vectors (Meta's OpenAPI examples, Meta's and pywa's published payloads and
//! signatures) are copied at the end of this file without their source notes, so that
//! the tests need nothing outside the repository.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use dash_core::api::{Choice, Location, MessageBody, SharedContact};
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use dashd::adapter::meta::{CloudApi, phone_number_ids};
use dashd::adapter::{
    ContactIds, Content, DeliveryStatus, MediaSource, OutboundMessage, ProviderConfig,
    ProviderEvent, Recipient, Secret, SendError, WebhookError, WebhookRequest, WhatsAppProvider,
    signature,
};
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "EAAGtestTOKEN4f1b9c";
const APP_SECRET: &str = "app-secret-for-tests";
const VERIFY_TOKEN: &str = "meatyhamhock";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// The customer, as `{{Recipient-Phone-Number}}` in Meta's examples.
const CUSTOMER: &str = "+16505551234";
const BSUID: &str = "US.13491208655302741918";
const PARENT_BSUID: &str = "US.ENT.11815799212886844830";

// ---------------------------------------------------------------------------------------
// The loopback Graph API

/// One request the fake Graph API received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

/// Records requests and answers each with the next programmed reply (by default the
/// documented send success).
#[derive(Debug, Clone, Default)]
struct FakeGraph {
    seen: Arc<Mutex<Vec<Seen>>>,
    replies: Arc<Mutex<VecDeque<(u16, String)>>>,
}

impl FakeGraph {
    /// A server on 127.0.0.1:0 and its base URL.
    async fn start() -> (Self, String) {
        let graph = FakeGraph::default();
        let app = Router::new().fallback(answer).with_state(graph.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (graph, format!("http://{address}"))
    }

    fn reply(&self, status: u16, body: impl ToString) {
        self.replies
            .lock()
            .unwrap()
            .push_back((status, body.to_string()));
    }

    /// The requests received since the last call.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// The one request received since the last call.
    fn only(&self) -> Seen {
        let mut seen = self.take();
        assert_eq!(seen.len(), 1, "expected exactly one request: {seen:#?}");
        seen.remove(0)
    }
}

async fn answer(
    State(graph): State<FakeGraph>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    graph.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
    });
    let (status, reply) = graph
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| (200, documented_response("Example response").to_string()));
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        reply,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Helpers

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn config(
    kind: ProviderKind,
    settings: &[(&str, &str)],
    secrets: &[(&str, &str)],
) -> ProviderConfig {
    ProviderConfig {
        bot_id: Uuid::nil(),
        kind,
        settings: settings
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        secrets: secrets
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Secret::new(*value)))
            .collect(),
    }
}

const ALL_SECRETS: &[(&str, &str)] = &[
    ("access_token", TOKEN),
    ("app_secret", APP_SECRET),
    ("verify_token", VERIFY_TOKEN),
];

/// A `meta` provider for `phone_number_id` talking to `base_url`.
fn meta_at(base_url: &str, phone_number_id: &str, secrets: &[(&str, &str)]) -> CloudApi {
    let settings = [("base_url", base_url), ("phone_number_id", phone_number_id)];
    CloudApi::new(
        &config(ProviderKind::Meta, &settings, secrets),
        reqwest::Client::new(),
    )
    .unwrap()
}

fn meta(base_url: &str) -> CloudApi {
    meta_at(base_url, PHONE_NUMBER_ID, ALL_SECRETS)
}

fn outbound(to: Recipient, content: Content) -> OutboundMessage {
    OutboundMessage {
        bot_id: Uuid::nil(),
        message_id: Uuid::new_v4(),
        to,
        content,
    }
}

fn customer() -> Recipient {
    Recipient {
        phone: Some(CUSTOMER.into()),
        ..Recipient::default()
    }
}

/// A documented request body, `{{Recipient-Phone-Number}}` replaced by [`CUSTOMER`].
fn documented_request(name: &str) -> Value {
    let body = &vectors()["send_requests"][name]["body"];
    assert!(body.is_object(), "no documented request {name:?}");
    serde_json::from_str(
        &body
            .to_string()
            .replace("{{Recipient-Phone-Number}}", CUSTOMER),
    )
    .unwrap()
}

fn documented_response(name: &str) -> Value {
    let body = VECTORS_RESPONSES.with(|responses| responses[name]["body"].clone());
    assert!(body.is_object(), "no documented response {name:?}");
    body
}

thread_local! {
    // The loopback server answers from other threads; parsing once per thread is enough.
    static VECTORS_RESPONSES: Value = vectors()["send_responses"].clone();
}

fn choice(id: &str, label: &str) -> Choice {
    Choice {
        id: id.into(),
        label: label.into(),
    }
}

fn text(body: &str) -> Content {
    Content::Text {
        body: body.into(),
        preview_url: false,
        reply_to: None,
    }
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|value| value.to_str().unwrap())
}

/// Headers carrying a valid `X-Hub-Signature-256` of `body` under `secret`.
fn signed(body: &[u8], secret: &str) -> HeaderMap {
    let mac = signature::hex(&signature::hmac_sha256(secret.as_bytes(), body));
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-hub-signature-256"),
        HeaderValue::from_str(&format!("sha256={mac}")).unwrap(),
    );
    headers
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn parse(
    provider: &CloudApi,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<ProviderEvent>, WebhookError> {
    provider.parse_webhook(&WebhookRequest {
        method: &Method::POST,
        path: "/webhook/meta",
        query: None,
        headers,
        body,
        now: now(),
    })
}

/// A signed delivery of `body` to a `meta` provider for the body's first phone number.
fn deliver(body: &Value) -> Vec<ProviderEvent> {
    let raw = serde_json::to_vec(body).unwrap();
    let phone_number_id = phone_number_ids(&raw)
        .into_iter()
        .next()
        .unwrap_or_else(|| PHONE_NUMBER_ID.to_owned());
    let provider = meta_at("https://graph.example", &phone_number_id, ALL_SECRETS);
    parse(&provider, &signed(&raw, APP_SECRET), &raw).unwrap()
}

/// A `messages` webhook for [`PHONE_NUMBER_ID`] with `value` merged into its value.
fn webhook(field: &str, value: Value) -> Value {
    let mut full = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
    });
    for (key, item) in value.as_object().unwrap() {
        full[key] = item.clone();
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": field, "value": full}]}],
    })
}

/// The one inbound message among `events`.
fn inbound(events: &[ProviderEvent]) -> (&ContactIds, &str, &MessageBody, DateTime<Utc>, bool) {
    match events {
        [
            ProviderEvent::Inbound {
                from,
                provider_message_id,
                body,
                at,
                from_me,
            },
        ] => (from, provider_message_id, body, *at, *from_me),
        other => panic!("expected one inbound message, got {other:#?}"),
    }
}

fn ignored(events: &[ProviderEvent]) -> &str {
    match events {
        [ProviderEvent::Ignored { kind }] => kind,
        other => panic!("expected one ignored event, got {other:#?}"),
    }
}

/// A status event's message id, state, error, recipient and time.
type StatusParts<'a> = (
    &'a str,
    DeliveryStatus,
    &'a Option<(String, String)>,
    &'a ContactIds,
    DateTime<Utc>,
);

/// The one delivery status among `events`.
fn status(events: &[ProviderEvent]) -> StatusParts<'_> {
    match events {
        [
            ProviderEvent::Status {
                provider_message_id,
                status,
                error,
                recipient,
                at,
            },
        ] => (provider_message_id, *status, error, recipient, *at),
        other => panic!("expected one status, got {other:#?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Sending

/// How DashOffice's body differs from a documented example it covers.
type Adjust = fn(&mut Value);

#[tokio::test]
async fn every_send_matches_metas_documented_request() {
    let (graph, url) = FakeGraph::start().await;
    let provider = meta(&url);
    let vectors = vectors();
    let list_rows = |section: usize| {
        (1..=2).map(move |row| {
            choice(
                &format!("<LIST_SECTION_{section}_ROW_{row}_ID>"),
                &format!("<SECTION_{section}_ROW_{row}_TITLE>"),
            )
        })
    };
    let unchanged: Adjust = |_| {};
    // Meta's example omits what DashOffice always sends.
    let add_text_type: Adjust = |body| {
        body["recipient_type"] = json!("individual");
        body["type"] = json!("text");
    };
    let add_recipient_type: Adjust = |body| body["recipient_type"] = json!("individual");
    // DashOffice sends text parameters only.
    let text_parameters_only: Adjust = |body| {
        body["template"]["components"][0]["parameters"]
            .as_array_mut()
            .unwrap()
            .retain(|parameter| parameter["type"] == "text");
    };
    // One section, no title, header, footer or row descriptions.
    let one_plain_section: Adjust = |body| {
        let interactive = body["interactive"].as_object_mut().unwrap();
        interactive.remove("header");
        interactive.remove("footer");
        let rows: Vec<Value> = interactive["action"]["sections"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|section| section["rows"].as_array().unwrap().clone())
            .map(|row| json!({"id": row["id"], "title": row["title"]}))
            .collect();
        interactive["action"]["sections"] = json!([{"rows": rows}]);
    };
    // A read receipt without the typing indicator.
    let no_typing_indicator: Adjust = |body| {
        body.as_object_mut().unwrap().remove("typing_indicator");
    };

    let media = |kind, source, caption: Option<&str>, filename: Option<&str>| Content::Media {
        kind,
        source,
        caption: caption.map(str::to_owned),
        filename: filename.map(str::to_owned),
    };
    let cases: Vec<(&str, Content, Adjust)> = vec![
        ("Send Text Message", text("text-message-content"), unchanged),
        (
            "Send Text Message with Preview URL",
            Content::Text {
                body: "Please visit https://youtu.be/hpltvTEiRrY.".into(),
                preview_url: true,
                reply_to: None,
            },
            add_text_type,
        ),
        (
            "Send Reply to Text Message",
            Content::Text {
                body: "<TEXT_MSG_CONTENT>".into(),
                preview_url: false,
                reply_to: Some("<MSGID_OF_PREV_MSG>".into()),
            },
            unchanged,
        ),
        (
            "Send Image Message by ID",
            media(
                MediaKind::Image,
                MediaSource::Id("<IMAGE_OBJECT_ID>".into()),
                None,
                None,
            ),
            unchanged,
        ),
        (
            "Send Image Message by URL",
            media(
                MediaKind::Image,
                MediaSource::Link("http(s)://image-url".into()),
                None,
                None,
            ),
            unchanged,
        ),
        (
            "Send Document Message by ID",
            media(
                MediaKind::Document,
                MediaSource::Id("<DOCUMENT_OBJECT_ID>".into()),
                Some("<DOCUMENT_CAPTION_TO_SEND>"),
                Some("<DOCUMENT_FILENAME>"),
            ),
            unchanged,
        ),
        (
            "Send Document Message by URL",
            media(
                MediaKind::Document,
                MediaSource::Link("<http(s)://document-url>".into()),
                Some("<DOCUMENT-CAPTION-TEXT>"),
                None,
            ),
            unchanged,
        ),
        (
            "Send Audio Message by ID",
            // Audio takes no caption: one given is dropped.
            media(
                MediaKind::Audio,
                MediaSource::Id("<AUDIO_OBJECT_ID>".into()),
                Some("dropped"),
                None,
            ),
            unchanged,
        ),
        (
            "Send Audio Message by URL",
            media(
                MediaKind::Audio,
                MediaSource::Link("<http(s)://audio-url>".into()),
                None,
                None,
            ),
            unchanged,
        ),
        (
            "Send Video Message by ID",
            media(
                MediaKind::Video,
                MediaSource::Id("<VIDEO_OBJECT_ID>".into()),
                Some("<VIDEO_CAPTION_TEXT>"),
                // Only documents take a file name.
                Some("dropped.mp4"),
            ),
            unchanged,
        ),
        (
            "Send Video Message by URL",
            media(
                MediaKind::Video,
                MediaSource::Link("<http(s)://video-url>".into()),
                Some("<VIDEO_CAPTION_TEXT>"),
                None,
            ),
            unchanged,
        ),
        (
            "Send Test Message",
            Content::Template {
                name: "hello_world".into(),
                language: "en_US".into(),
                parameters: vec![],
            },
            add_recipient_type,
        ),
        (
            "Send Message Template Text",
            Content::Template {
                name: "template-name".into(),
                language: "language-and-locale-code".into(),
                parameters: vec!["text-string".into()],
            },
            text_parameters_only,
        ),
        (
            "Send Reply Button",
            Content::Menu {
                body: "<BUTTON_TEXT>".into(),
                choices: vec![
                    choice("<UNIQUE_BUTTON_ID_1>", "<BUTTON_TITLE_1>"),
                    choice("<UNIQUE_BUTTON_ID_2>", "<BUTTON_TITLE_2>"),
                ],
                button: "unused".into(),
            },
            unchanged,
        ),
        (
            "Send List Message",
            Content::Menu {
                body: "<BODY_TEXT>".into(),
                choices: list_rows(1).chain(list_rows(2)).collect(),
                button: "<BUTTON_TEXT>".into(),
            },
            one_plain_section,
        ),
        (
            "Send Reply with Reaction Message",
            Content::Reaction {
                message_id: "wamid.HBgLM...".into(),
                emoji: "😀".into(),
            },
            unchanged,
        ),
        (
            "Send Location Message",
            Content::Location(Location {
                latitude: 37.758056,
                longitude: -122.425332,
                name: Some("META HQ".into()),
                address: Some("1 Hacker Way, Menlo Park, CA 94025".into()),
            }),
            unchanged,
        ),
        (
            "Send typing indicator and read receipt",
            Content::MarkRead {
                message_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUYzMjEzNDM2RTZGQ0MzMDJBRgA=".into(),
            },
            no_typing_indicator,
        ),
    ];

    // What DashOffice has no content for: stickers, template header media, contact cards.
    let documented: BTreeSet<&str> = vectors["send_requests"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let covered: BTreeSet<&str> = cases.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(
        documented.difference(&covered).copied().collect::<Vec<_>>(),
        [
            "Send Contact Message",
            "Send Message Template Media",
            "Send Sticker Message by ID"
        ]
    );

    for (name, content, adjust) in cases {
        let documented_request_spec = &vectors["send_requests"][name];
        let response_name = match name {
            "Send Text Message"
            | "Send Reply Button"
            | "Send typing indicator and read receipt" => name,
            _ => "Example response",
        };
        let response = documented_response(response_name);
        graph.reply(200, &response);

        let receipt = provider
            .send(&outbound(customer(), content.clone()))
            .await
            .unwrap_or_else(|err| panic!("{name}: {err:?}"));

        let seen = graph.only();
        assert_eq!(seen.method, Method::POST, "{name}");
        assert_eq!(documented_request_spec["method"], "POST");
        let path = documented_request_spec["path"]
            .as_str()
            .unwrap()
            .replace("{Version}", "v23.0")
            .replace("{Phone-Number-ID}", PHONE_NUMBER_ID);
        assert_eq!(seen.path, path, "{name}");
        assert_eq!(seen.query, None, "{name}");
        let authorization = documented_request_spec["headers"]["Authorization"]
            .as_str()
            .unwrap()
            .replace("<ACCESS_TOKEN>", TOKEN);
        assert_eq!(
            header(&seen, "authorization"),
            Some(authorization.as_str()),
            "{name}"
        );
        assert_eq!(
            header(&seen, "content-type"),
            documented_request_spec["headers"]["Content-Type"].as_str(),
            "{name}"
        );
        let mut expected = documented_request(name);
        adjust(&mut expected);
        assert_eq!(seen.body, expected, "{name}");

        let expected_id = match content {
            Content::MarkRead { message_id } => message_id,
            _ => response["messages"][0]["id"].as_str().unwrap().to_owned(),
        };
        assert_eq!(receipt.provider_message_id, expected_id, "{name}");
    }
}

#[tokio::test]
async fn customers_without_a_phone_are_addressed_by_bsuid_and_unaddressable_ones_not_at_all() {
    let (graph, url) = FakeGraph::start().await;
    let provider = meta(&url);
    let by_bsuid = Recipient {
        bsuid: Some(BSUID.into()),
        ..Recipient::default()
    };
    provider
        .send(&outbound(by_bsuid, text("hello")))
        .await
        .unwrap();
    let mut expected = documented_request("Send Text Message");
    let body = expected.as_object_mut().unwrap();
    body.remove("to");
    body.insert("recipient".into(), json!(BSUID));
    body.insert(
        "text".into(),
        json!({"body": "hello", "preview_url": false}),
    );
    assert_eq!(graph.only().body, expected);

    // A phone and a BSUID: the phone.
    let both = Recipient {
        phone: Some(CUSTOMER.into()),
        bsuid: Some(BSUID.into()),
        lid: None,
    };
    provider.send(&outbound(both, text("hello"))).await.unwrap();
    let seen = graph.only();
    assert_eq!(seen.body["to"], CUSTOMER);
    assert!(seen.body.get("recipient").is_none());

    // Only a WhatsApp Web LID: nothing the Cloud API can address; nothing is sent.
    let lid_only = Recipient {
        lid: Some("12345678901234@lid".into()),
        ..Recipient::default()
    };
    let err = provider
        .send(&outbound(lid_only, text("hello")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(graph.take().is_empty());
}

#[tokio::test]
async fn menus_that_do_not_fit_interactive_messages_go_as_numbered_text() {
    let (graph, url) = FakeGraph::start().await;
    let provider = meta(&url);
    let choices: Vec<Choice> = (1..=11)
        .map(|n| choice(&format!("c{n}"), &format!("Option {n}")))
        .collect();
    let menu = Content::Menu {
        body: "Choose one".into(),
        choices: choices.clone(),
        button: "Options".into(),
    };
    provider.send(&outbound(customer(), menu)).await.unwrap();
    let body = graph.only().body;
    assert_eq!(body["type"], "text");
    let text = body["text"]["body"].as_str().unwrap();
    assert!(
        text.starts_with("Choose one\n1. Option 1\n2. Option 2\n"),
        "{text}"
    );
    assert!(text.ends_with("\n11. Option 11"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Failures

#[tokio::test]
async fn documented_error_bodies_are_classified() {
    let (graph, url) = FakeGraph::start().await;
    let provider = meta(&url);
    let errors: BTreeMap<String, Value> = vectors()["error_responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| (error["id"].as_str().unwrap().to_owned(), error.clone()))
        .collect();
    let sync = |id: &str| {
        let error = &errors[id];
        (
            error["http_status"].as_u64().unwrap() as u16,
            error["body"].clone(),
        )
    };
    // Error objects as webhooks carry them, in the synchronous envelope with HTTP 400.
    let wrapped = |id: &str| (400, json!({"error": errors[id]["error_object"].clone()}));
    let graph_error = |code: u64, message: &str, details: &str| {
        json!({"error": {"message": message, "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AbCdEf"}})
    };

    // What is served, and the class, code and a phrase expected of the error.
    type ErrorCase<'a> = (&'a str, (u16, Value), ErrorClass, &'a str, &'a str);
    let cases: Vec<ErrorCase> = vec![
        (
            "130429",
            sync("rate_limit_130429_sync"),
            ErrorClass::Retryable,
            "130429",
            "too many messages",
        ),
        (
            "131056",
            sync("pair_rate_limit_131056_sync"),
            ErrorClass::Retryable,
            "131056",
            "pair rate limit",
        ),
        (
            "190",
            sync("expired_token_190"),
            ErrorClass::ProviderBroken,
            "190",
            "Session has expired",
        ),
        (
            "131047",
            wrapped("reengagement_131047_error_object"),
            ErrorClass::Permanent,
            "131047",
            "24 hours",
        ),
        (
            "131053",
            wrapped("media_upload_131053_error_object"),
            ErrorClass::Permanent,
            "131053",
            "Media upload error",
        ),
        (
            "131026",
            (
                400,
                graph_error(
                    131026,
                    "(#131026) Message undeliverable",
                    "Message Undeliverable.",
                ),
            ),
            ErrorClass::Permanent,
            "131026",
            "Message undeliverable",
        ),
        (
            "131062",
            (
                400,
                graph_error(
                    131062,
                    "(#131062) Business-scoped user ID recipients not supported",
                    "Authentication templates need a phone number.",
                ),
            ),
            ErrorClass::Permanent,
            "131062",
            "phone number",
        ),
        (
            "403 without a listed code",
            (
                403,
                graph_error(
                    131005,
                    "(#131005) Access denied",
                    "Permission is not granted.",
                ),
            ),
            ErrorClass::ProviderBroken,
            "131005",
            "Access denied",
        ),
        (
            "500 without a Graph body",
            (500, json!("Internal Server Error")),
            ErrorClass::Retryable,
            "500",
            "HTTP 500",
        ),
        (
            "401 with the token echoed",
            (
                401,
                graph_error(
                    190,
                    &format!("Invalid OAuth access token - Cannot parse access token: {TOKEN}"),
                    "",
                ),
            ),
            ErrorClass::ProviderBroken,
            "190",
            "Cannot parse access token",
        ),
    ];
    for (what, (status, body), class, code, mentions) in cases {
        let body = match body {
            Value::String(text) => text,
            json => json.to_string(),
        };
        graph.reply(status, body);
        let err: SendError = provider
            .send(&outbound(customer(), text("hi")))
            .await
            .unwrap_err();
        assert_eq!(err.class, class, "{what}: {err:?}");
        assert_eq!(err.code.as_deref(), Some(code), "{what}");
        assert!(err.message.contains(mentions), "{what}: {}", err.message);
        assert!(
            !err.message.contains(TOKEN),
            "{what} leaks the token: {}",
            err.message
        );
        assert!(err.message.chars().count() <= 300, "{what}");
        graph.take();
    }

    // A 200 without a message id did not visibly send anything: retried.
    graph.reply(
        200,
        json!({"messaging_product": "whatsapp", "contacts": []}),
    );
    let err = provider
        .send(&outbound(customer(), text("hi")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable);
    // A read receipt answered without success: retried.
    graph.reply(200, json!({"success": false}));
    let err = provider
        .send(&outbound(
            customer(),
            Content::MarkRead {
                message_id: "wamid.X".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let provider = meta(&format!("http://{address}"));
    let err = provider
        .send(&outbound(customer(), text("hi")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable, "{err:?}");
    assert_eq!(err.code, None);
    assert!(!err.message.contains(TOKEN));
}

#[tokio::test]
async fn the_probe_reads_the_phone_number_node() {
    let (graph, url) = FakeGraph::start().await;
    let provider = meta(&url);
    graph.reply(
        200,
        json!({"display_phone_number": "+1 555-078-3881", "verified_name": "Jasper's Market", "id": PHONE_NUMBER_ID}),
    );
    let report = provider.probe().await.unwrap();
    assert!(
        report.detail.contains("+1 555-078-3881"),
        "{}",
        report.detail
    );
    let seen = graph.only();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, format!("/v23.0/{PHONE_NUMBER_ID}"));
    assert_eq!(
        seen.query.as_deref(),
        Some("fields=display_phone_number,verified_name")
    );
    assert_eq!(
        header(&seen, "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    let expired = &vectors()["error_responses"][2];
    assert_eq!(expired["id"], "expired_token_190");
    graph.reply(401, &expired["body"]);
    let err = provider.probe().await.unwrap_err();
    assert_eq!(
        (err.class, err.code.as_deref()),
        (ErrorClass::ProviderBroken, Some("190"))
    );
}

// ---------------------------------------------------------------------------------------
// official

#[tokio::test]
async fn official_posts_to_its_own_path_with_its_own_auth_header() {
    let (graph, url) = FakeGraph::start().await;
    // 360dialog's shape: one message path, the key in D360-API-KEY, no phone number id.
    let base_url = format!("{url}/waba/");
    let settings = [
        ("base_url", base_url.as_str()),
        ("path", "/messages"),
        ("auth_header", "D360-API-KEY"),
    ];
    let provider = CloudApi::new(
        &config(ProviderKind::Official, &settings, ALL_SECRETS),
        reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(provider.kind(), ProviderKind::Official);
    let receipt = provider
        .send(&outbound(customer(), text("text-message-content")))
        .await
        .unwrap();
    assert_eq!(
        receipt.provider_message_id,
        documented_response("Example response")["messages"][0]["id"]
    );
    let seen = graph.only();
    assert_eq!(
        (seen.method.clone(), seen.path.as_str()),
        (Method::POST, "/waba/messages")
    );
    assert_eq!(header(&seen, "d360-api-key"), Some(TOKEN));
    assert_eq!(header(&seen, "authorization"), None);
    assert_eq!(seen.body, documented_request("Send Text Message"));
    // No phone number node to probe: the probe says so and calls nothing.
    let report = provider.probe().await.unwrap();
    assert!(report.detail.contains("next send"), "{}", report.detail);
    assert!(graph.take().is_empty());

    // The default path and header: Graph's shape, `Bearer`.
    let settings = [
        ("base_url", url.as_str()),
        ("api_version", "v21.0"),
        ("phone_number_id", "4242"),
    ];
    let provider = CloudApi::new(
        &config(ProviderKind::Official, &settings, ALL_SECRETS),
        reqwest::Client::new(),
    )
    .unwrap();
    provider
        .send(&outbound(customer(), text("hi")))
        .await
        .unwrap();
    let seen = graph.only();
    assert_eq!(seen.path, "/v21.0/4242/messages");
    assert_eq!(
        header(&seen, "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    graph.reply(200, json!({"display_phone_number": "+1 555-000-4242"}));
    provider.probe().await.unwrap();
    assert_eq!(graph.only().path, "/v21.0/4242");

    // The default path names the phone number id: without one it cannot be built.
    let settings = [("base_url", url.as_str())];
    let err = CloudApi::new(
        &config(ProviderKind::Official, &settings, ALL_SECRETS),
        reqwest::Client::new(),
    )
    .unwrap_err();
    assert!(err.0.contains("phone_number_id"), "{err}");
    // Without a token nothing can be built.
    let settings = [("base_url", url.as_str()), ("path", "/messages")];
    assert!(
        CloudApi::new(
            &config(ProviderKind::Official, &settings, &[]),
            reqwest::Client::new()
        )
        .is_err()
    );
}

// ---------------------------------------------------------------------------------------
// Webhook signatures and verification

#[test]
fn every_signature_vector_holds() {
    let vectors = vectors();
    for vector in vectors["signature_vectors"].as_array().unwrap() {
        let id = vector["id"].as_str().unwrap();
        let secret = vector["app_secret"].as_str().unwrap();
        let body = vector["body"].as_str().unwrap().as_bytes();
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_bytes(vector["header_name"].as_str().unwrap().as_bytes()).unwrap(),
            HeaderValue::from_str(vector["header_value"].as_str().unwrap()).unwrap(),
        );
        let provider = meta_at(
            "https://graph.example",
            "277321005464405",
            &[("access_token", TOKEN), ("app_secret", secret)],
        );
        let result = parse(&provider, &headers, body);
        match (id, vector["expect_valid"].as_bool().unwrap()) {
            ("pywa_real_webhook", true) => {
                let events = result.unwrap();
                let (from, _, message, at, _) = inbound(&events);
                assert_eq!(message.text, "Hey there! I am using PyWa.");
                assert_eq!(from.phone.as_deref(), Some("+972544401243"));
                assert_eq!(at.timestamp(), 1_730_231_903);
            }
            // `test` is signed right but is no webhook.
            (_, true) => assert!(
                matches!(result, Err(WebhookError::Malformed(_))),
                "{id}: {result:?}"
            ),
            (_, false) => assert!(
                matches!(result, Err(WebhookError::Signature(_))),
                "{id}: {result:?}"
            ),
        }
    }
}

#[test]
fn any_change_to_body_signature_or_secret_is_refused() {
    let vectors = vectors();
    let vector = &vectors["signature_vectors"][0];
    assert_eq!(vector["id"], "pywa_real_webhook");
    let secret = vector["app_secret"].as_str().unwrap();
    let body = vector["body"].as_str().unwrap().as_bytes().to_vec();
    let signature = vector["header_value"].as_str().unwrap();
    let headers = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", HeaderValue::from_str(value).unwrap());
        headers
    };
    let provider = |secret: &str| {
        meta_at(
            "https://graph.example",
            "277321005464405",
            &[("access_token", TOKEN), ("app_secret", secret)],
        )
    };
    let refused = |result: Result<Vec<ProviderEvent>, WebhookError>| {
        matches!(result, Err(WebhookError::Signature(_)))
    };

    assert!(parse(&provider(secret), &headers(signature), &body).is_ok());
    // Upper-case hex is the same signature.
    let upper = format!("sha256={}", signature["sha256=".len()..].to_uppercase());
    assert!(parse(&provider(secret), &headers(&upper), &body).is_ok());

    for index in [0, body.len() / 2, body.len() - 1] {
        let mut tampered = body.clone();
        tampered[index] ^= 0x01;
        assert!(
            refused(parse(&provider(secret), &headers(signature), &tampered)),
            "body byte {index}"
        );
    }
    for index in ["sha256=".len(), signature.len() - 1] {
        let mut tampered = signature.as_bytes().to_vec();
        tampered[index] = if tampered[index] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(
            refused(parse(&provider(secret), &headers(&tampered), &body)),
            "signature char {index}"
        );
    }
    let mut wrong_secret = secret.as_bytes().to_vec();
    wrong_secret[3] ^= 0x01;
    let wrong_secret = String::from_utf8(wrong_secret).unwrap();
    assert!(refused(parse(
        &provider(&wrong_secret),
        &headers(signature),
        &body
    )));

    // Missing, truncated, wrong algorithm, not hex: refused before any parsing.
    assert!(refused(parse(&provider(secret), &HeaderMap::new(), &body)));
    assert!(refused(parse(
        &provider(secret),
        &headers(&signature[..40]),
        &body
    )));
    assert!(refused(parse(
        &provider(secret),
        &headers(&signature.replace("sha256=", "sha1=")),
        &body
    )));
    assert!(refused(parse(
        &provider(secret),
        &headers(&signature["sha256=".len()..]),
        &body
    )));
    assert!(refused(parse(
        &provider(secret),
        &headers("sha256=zz"),
        &body
    )));
    // The signature is checked first even when the body is not JSON.
    assert!(refused(parse(
        &provider(secret),
        &headers(signature),
        b"not json"
    )));

    // No app secret: not configured, whatever the request.
    let unconfigured = meta_at(
        "https://graph.example",
        "277321005464405",
        &[("access_token", TOKEN)],
    );
    assert!(matches!(
        parse(&unconfigured, &headers(signature), &body),
        Err(WebhookError::NotConfigured(_))
    ));
}

#[test]
fn verification_echoes_the_challenge_only_for_the_right_token() {
    let vectors = vectors();
    let provider = meta("https://graph.example");
    for case in vectors["webhook_verification"].as_array().unwrap() {
        assert_eq!(case["configured_verify_token"], VERIFY_TOKEN);
        let path_and_query = case["request"]["path_and_query"].as_str().unwrap();
        let (_, query) = path_and_query.split_once('?').unwrap();
        let result = provider.challenge(query);
        match case["expected_response"]["status"].as_u64() {
            Some(200) => assert_eq!(
                result.unwrap(),
                case["expected_response"]["body"].as_str().unwrap()
            ),
            _ => assert!(
                matches!(result, Err(WebhookError::Signature(_))),
                "{result:?}"
            ),
        }
    }
    // The mode must be subscribe; the token must be there.
    assert!(matches!(
        provider.challenge("hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=meatyhamhock"),
        Err(WebhookError::Signature(_))
    ));
    assert!(matches!(
        provider.challenge("hub.mode=subscribe&hub.challenge=1"),
        Err(WebhookError::Signature(_))
    ));
    // Percent-encoded tokens are decoded before comparing.
    let odd = meta_at(
        "https://graph.example",
        PHONE_NUMBER_ID,
        &[("access_token", TOKEN), ("verify_token", "meaty ham&hock")],
    );
    assert_eq!(
        odd.challenge("hub.mode=subscribe&hub.verify_token=meaty%20ham%26hock&hub.challenge=42")
            .unwrap(),
        "42"
    );
    // Only a plain challenge is echoed.
    assert!(matches!(
        provider.challenge(
            "hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=%3Cscript%3E"
        ),
        Err(WebhookError::Malformed(_))
    ));
    // No verify token: not configured.
    let unconfigured = meta_at(
        "https://graph.example",
        PHONE_NUMBER_ID,
        &[("access_token", TOKEN)],
    );
    assert!(matches!(
        unconfigured.challenge("hub.mode=subscribe&hub.challenge=1&hub.verify_token=x"),
        Err(WebhookError::NotConfigured(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Webhook payloads

#[test]
fn every_documented_webhook_payload_parses_into_its_event() {
    let vectors = vectors();
    let payloads = vectors["webhook_payloads"].as_object().unwrap();
    assert_eq!(payloads.len(), 29);
    let sheena = |from: &ContactIds| {
        assert_eq!(from.phone.as_deref(), Some("+16505551234"));
        assert_eq!(from.name.as_deref(), Some("Sheena Nelson"));
        assert_eq!(from.bsuid, None);
    };
    // pywa's fixtures carry BSUIDs beside the phone number.
    let test_name = |ids: &ContactIds| {
        assert_eq!(ids.phone.as_deref(), Some("+972987654321"));
        assert_eq!(ids.bsuid.as_deref(), Some(BSUID));
        assert_eq!(ids.parent_bsuid.as_deref(), Some(PARENT_BSUID));
        assert_eq!(ids.name.as_deref(), Some("Test Name"));
    };
    for (name, payload) in payloads {
        let events = deliver(&payload["body"]);
        match name.as_str() {
            "openapi: Text Message" => {
                let (from, id, body, at, from_me) = inbound(&events);
                sheena(from);
                assert_eq!(
                    id,
                    "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
                );
                assert_eq!(body.text, "Does it come in another color?");
                assert_eq!(body.name.as_deref(), Some("Sheena Nelson"));
                assert_eq!(at.timestamp(), 1_749_416_383);
                assert!(!from_me);
            }
            "openapi: Text Message with Context (Product Inquiry)" => {
                let (from, _, body, _, _) = inbound(&events);
                sheena(from);
                assert_eq!(body.text, "Is this still available?");
                assert_eq!(body.reply_id, None);
            }
            "openapi: Image Message" => {
                let (from, _, body, at, _) = inbound(&events);
                sheena(from);
                let attachment = body.attachment.as_ref().unwrap();
                assert_eq!(attachment.kind, MediaKind::Image);
                assert_eq!(attachment.reference, "1003383421387256");
                assert_eq!(attachment.mime_type.as_deref(), Some("image/jpeg"));
                assert_eq!(attachment.caption.as_deref(), Some("Taj Mahal"));
                assert_eq!(body.text, "Taj Mahal");
                assert_eq!(at.timestamp(), 1_744_344_496);
            }
            "openapi: Interactive Button Reply Message" => {
                let (_, _, body, _, _) = inbound(&events);
                assert_eq!(body.reply_id.as_deref(), Some("cancel-button"));
                assert_eq!(body.text, "Cancel");
            }
            "openapi: Interactive List Reply Message" => {
                let (_, _, body, _, _) = inbound(&events);
                assert_eq!(body.reply_id.as_deref(), Some("priority_express"));
                assert_eq!(body.text, "Priority Mail Express");
            }
            "openapi: Button Message" => {
                let (_, _, body, _, _) = inbound(&events);
                assert_eq!(body.reply_id.as_deref(), Some("Unsubscribe"));
                assert_eq!(body.text, "Unsubscribe");
            }
            "openapi: Reaction Message"
            | "pywa message: reaction"
            | "pywa message: unreaction_empty"
            | "pywa message: unreaction_no_emoji" => assert_eq!(ignored(&events), "reaction"),
            "openapi: Location Message" => {
                let (from, _, body, _, _) = inbound(&events);
                sheena(from);
                assert_eq!(
                    body.location,
                    Some(Location {
                        latitude: 37.44221496582,
                        longitude: -122.16165924072,
                        name: Some("Philz Coffee".into()),
                        address: Some("101 Forest Ave, Palo Alto, CA 94301".into()),
                    })
                );
                assert_eq!(body.text, "Philz Coffee");
            }
            "pywa message: chosen_location" => {
                let (from, _, body, _, _) = inbound(&events);
                test_name(from);
                let location = body.location.as_ref().unwrap();
                assert_eq!(
                    (location.latitude, location.longitude),
                    (37.4611978, -122.2164385)
                );
                assert_eq!(location.name.as_deref(), Some("Facebook HQ"));
            }
            "openapi: Contact Sharing Message" => {
                let (from, _, body, _, _) = inbound(&events);
                sheena(from);
                assert_eq!(
                    body.contacts,
                    [SharedContact {
                        name: "Lucía Gómez".into(),
                        phones: vec!["+19835552319".into()],
                    }]
                );
            }
            "openapi: Unsupported Message" | "pywa message: unsupported" => {
                assert_eq!(ignored(&events), "unsupported");
            }
            "openapi: System Message" => {
                // A number change without BSUIDs: nothing to re-key.
                assert_eq!(ignored(&events), "system:user_changed_number");
            }
            "pywa status: sent" | "pywa status: delivered" | "pywa status: read" => {
                let (id, delivery, error, recipient, at) = status(&events);
                assert_eq!(id, "wamid.xyzxyz");
                let expected = match name.as_str() {
                    "pywa status: sent" => DeliveryStatus::Sent,
                    "pywa status: delivered" => DeliveryStatus::Delivered,
                    _ => DeliveryStatus::Read,
                };
                assert_eq!(delivery, expected);
                assert_eq!(*error, None);
                test_name(recipient);
                assert!(at.timestamp() == 1_698_266_945 || at.timestamp() == 1_689_380_458);
            }
            "pywa status: failed" => {
                let (id, delivery, error, recipient, _) = status(&events);
                assert_eq!((id, delivery), ("wamid.xyzxyz", DeliveryStatus::Failed));
                let (code, reason) = error.as_ref().unwrap();
                assert_eq!(code, "130472");
                assert!(
                    reason.starts_with("User's number is part of an experiment"),
                    "{reason}"
                );
                assert!(reason.contains("Failed to send message"), "{reason}");
                test_name(recipient);
            }
            "pywa message: image" | "pywa message: media_with_url" => {
                let (from, id, body, at, _) = inbound(&events);
                test_name(from);
                assert_eq!(id, "wamid.xyzxyz");
                let attachment = body.attachment.as_ref().unwrap();
                assert_eq!(
                    (attachment.kind, attachment.reference.as_str()),
                    (MediaKind::Image, "65463453")
                );
                assert_eq!(attachment.caption, None);
                assert_eq!(body.text, "");
                assert_eq!(at.timestamp(), 1_697_043_379);
            }
            "pywa message: document" => {
                let (_, _, body, _, _) = inbound(&events);
                let attachment = body.attachment.as_ref().unwrap();
                assert_eq!(attachment.kind, MediaKind::Document);
                assert_eq!(attachment.reference, "1234567890987654321");
                assert_eq!(attachment.filename.as_deref(), Some("filename.pdf"));
                assert_eq!(attachment.mime_type.as_deref(), Some("application/pdf"));
                assert_eq!(body.text, "caption");
            }
            "pywa message: audio" | "pywa message: voice" => {
                let (_, _, body, _, _) = inbound(&events);
                let attachment = body.attachment.as_ref().unwrap();
                assert_eq!(attachment.kind, MediaKind::Audio);
                assert_eq!(
                    attachment.mime_type.as_deref(),
                    Some("audio/ogg; codecs=opus")
                );
            }
            "meta errors webhook: 130429" => assert_eq!(ignored(&events), "error:130429"),
            "pywa message: text" => {
                let (from, _, body, _, _) = inbound(&events);
                test_name(from);
                assert_eq!(body.text, "Body Text");
            }
            "pywa message: reply" => assert_eq!(inbound(&events).2.text, "replied text"),
            "pywa message: forwarded" => assert_eq!(inbound(&events).2.text, "forwarded text"),
            other => panic!("no expectation for the vector {other:?}"),
        }
    }
}

#[test]
fn bsuid_shapes_parse_with_and_without_phone_numbers() {
    // An inbound message from a customer with a username and no shared phone number
    // (Meta's business-scoped user ids page: `user_id` always, `wa_id`/`from` only
    // when the phone number is available, `from_user_id` always).
    let phoneless = webhook(
        "messages",
        json!({
            "contacts": [{"profile": {"name": "Sheena", "username": "@sheena"},
                          "user_id": BSUID, "parent_user_id": PARENT_BSUID}],
            "messages": [{"from_user_id": BSUID, "id": "wamid.P1", "timestamp": "1775000000",
                          "type": "text", "text": {"body": "hola"}}],
        }),
    );
    let events = deliver(&phoneless);
    let (from, id, body, at, _) = inbound(&events);
    assert_eq!(
        *from,
        ContactIds {
            phone: None,
            bsuid: Some(BSUID.into()),
            parent_bsuid: Some(PARENT_BSUID.into()),
            lid: None,
            username: Some("@sheena".into()),
            name: Some("Sheena".into()),
        }
    );
    assert_eq!(
        (id, body.text.as_str(), at.timestamp()),
        ("wamid.P1", "hola", 1_775_000_000)
    );

    // Both identifiers.
    let both = webhook(
        "messages",
        json!({
            "contacts": [{"profile": {"name": "Sheena"}, "wa_id": "16505551234", "user_id": BSUID}],
            "messages": [{"from": "16505551234", "from_user_id": BSUID, "id": "wamid.P2",
                          "timestamp": "1775000001", "type": "text", "text": {"body": "hi"}}],
        }),
    );
    let events = deliver(&both);
    let (from, _, _, _, _) = inbound(&events);
    assert_eq!(from.phone.as_deref(), Some(CUSTOMER));
    assert_eq!(from.bsuid.as_deref(), Some(BSUID));

    // A delivered status for a message sent to a BSUID; a failed one without contacts.
    let delivered = webhook(
        "messages",
        json!({
            "contacts": [{"profile": {"name": "Sheena", "username": "@sheena"}, "user_id": BSUID}],
            "statuses": [{"id": "wamid.S1", "status": "delivered", "timestamp": "1775000002",
                          "recipient_user_id": BSUID}],
        }),
    );
    let events = deliver(&delivered);
    let (_, delivery, error, recipient, _) = status(&events);
    assert_eq!((delivery, error), (DeliveryStatus::Delivered, &None));
    assert_eq!(recipient.phone, None);
    assert_eq!(recipient.bsuid.as_deref(), Some(BSUID));
    assert_eq!(recipient.username.as_deref(), Some("@sheena"));
    let failed = webhook(
        "messages",
        json!({
            "statuses": [{"id": "wamid.S2", "status": "failed", "timestamp": "1775000003",
                          "recipient_user_id": BSUID,
                          "errors": [{"code": 131062, "title": "Business-scoped user ID recipients not supported",
                                      "error_data": {"details": "Use the phone number."}}]}],
        }),
    );
    let events = deliver(&failed);
    let (_, delivery, error, recipient, _) = status(&events);
    assert_eq!(delivery, DeliveryStatus::Failed);
    assert_eq!(error.as_ref().unwrap().0, "131062");
    assert_eq!(recipient.bsuid.as_deref(), Some(BSUID));

    // A BSUID change, as a system message (Meta's changelog of 2026-08-11).
    let changed = webhook(
        "messages",
        json!({
            "messages": [{"from_user_id": "US.222", "id": "wamid.Y1", "timestamp": "1775000004",
                          "type": "system",
                          "system": {"body": "User changed", "type": "user_changed_user_id",
                                     "user_id": "US.222", "previous_user_id": "US.111"}}],
        }),
    );
    assert_eq!(
        deliver(&changed),
        [ProviderEvent::ContactIdChanged {
            old_bsuid: "US.111".into(),
            new_bsuid: "US.222".into(),
            at: DateTime::from_timestamp(1_775_000_004, 0).unwrap(),
        }]
    );
    // And as the `user_id_update` field some resellers forward (constructed shape).
    let update = webhook(
        "user_id_update",
        json!({"user_id_update": [{"wa_id": "16505551234", "timestamp": "1775000005",
            "detail": {"previous": {"user_id": "US.111"}, "current": {"user_id": "US.222"}}}]}),
    );
    assert_eq!(
        deliver(&update),
        [ProviderEvent::ContactIdChanged {
            old_bsuid: "US.111".into(),
            new_bsuid: "US.222".into(),
            at: DateTime::from_timestamp(1_775_000_005, 0).unwrap(),
        }]
    );
}

#[test]
fn echoes_other_numbers_other_fields_and_bad_bodies() {
    // What the business sent from the WhatsApp Business app (coexistence): logged as its own.
    let echo = webhook(
        "smb_message_echoes",
        json!({"message_echoes": [{"from": "15550783881", "to": "16505551234", "id": "wamid.E1",
            "timestamp": "1775000006", "type": "text", "text": {"body": "sent from the app"}}]}),
    );
    let events = deliver(&echo);
    let (to, id, body, _, from_me) = inbound(&events);
    assert!(from_me);
    assert_eq!(
        (to.phone.as_deref(), id, body.text.as_str()),
        (Some(CUSTOMER), "wamid.E1", "sent from the app")
    );

    // Two phone numbers in one delivery: each instance takes its own.
    let ours = &webhook(
        "messages",
        json!({"messages": [{"from": "16505551234", "id": "wamid.O1", "timestamp": "1775000007",
            "type": "text", "text": {"body": "for us"}}]}),
    )["entry"][0];
    let mut theirs = ours.clone();
    theirs["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("999999999");
    theirs["changes"][0]["value"]["messages"][0]["text"]["body"] = json!("for them");
    let mixed = json!({"object": "whatsapp_business_account", "entry": [theirs, ours, theirs]});
    let raw = serde_json::to_vec(&mixed).unwrap();
    assert_eq!(phone_number_ids(&raw), ["999999999", PHONE_NUMBER_ID]);
    let events = parse(
        &meta("https://graph.example"),
        &signed(&raw, APP_SECRET),
        &raw,
    )
    .unwrap();
    assert_eq!(inbound(&events).2.text, "for us");
    // An official instance without a phone number id takes them all.
    let settings = [("base_url", "https://waba.example"), ("path", "/messages")];
    let official = CloudApi::new(
        &config(ProviderKind::Official, &settings, ALL_SECRETS),
        reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(
        parse(&official, &signed(&raw, APP_SECRET), &raw)
            .unwrap()
            .len(),
        3
    );

    // Another field: counted.
    let template = webhook(
        "message_template_status_update",
        json!({"event": "APPROVED"}),
    );
    assert_eq!(
        ignored(&deliver(&template)),
        "message_template_status_update"
    );

    // Signed, but not a Cloud API webhook.
    let provider = meta("https://graph.example");
    for bad in [
        &b"{\"object\": "[..],
        b"[]",
        br#"{"object":"page","entry":[]}"#,
    ] {
        let result = parse(&provider, &signed(bad, APP_SECRET), bad);
        assert!(
            matches!(result, Err(WebhookError::Malformed(_))),
            "{result:?}"
        );
    }
    assert!(phone_number_ids(b"not json").is_empty());
}

/// Meta's and pywa's examples from the research vectors (`meta_cloud.json`), without
/// their source notes. Placeholders such as `{{Recipient-Phone-Number}}` and
/// `<IMAGE_OBJECT_ID>` are Meta's own.
const VECTORS: &str = r##"{
  "signature_vectors": [
    {"id": "pywa_real_webhook", "app_secret": "1222e786b144d0e85b9f365372d93676", "body": "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"264937493375603\",\"changes\":[{\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{\"display_phone_number\":\"15550953877\",\"phone_number_id\":\"277321005464405\"},\"contacts\":[{\"profile\":{\"name\":\"PyWa Tests\"},\"wa_id\":\"972544401243\"}],\"messages\":[{\"from\":\"972544401243\",\"id\":\"wamid.HBgMOTcyNTQ0NDAxMjQzFQIAEhggM0RFQTNCMEEwRTY3QzUwODYzMDc4NjQ4QzM4ODAxM0YA\",\"timestamp\":\"1730231903\",\"text\":{\"body\":\"Hey there! I am using PyWa.\"},\"type\":\"text\"}]},\"field\":\"messages\"}]}]}", "header_name": "X-Hub-Signature-256", "header_value": "sha256=54edfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc441", "expect_valid": true},
    {"id": "whatsapp_nodejs_sdk_known_signature", "app_secret": "TEST_APP_SECRET", "body": "test", "hex_digest": "0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221", "header_name": "X-Hub-Signature-256", "header_value": "sha256=0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221", "expect_valid": true},
    {"id": "pywa_real_webhook_tampered_body", "app_secret": "1222e786b144d0e85b9f365372d93676", "body": "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"264937493375603\",\"changes\":[{\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{\"display_phone_number\":\"15550953877\",\"phone_number_id\":\"277321005464405\"},\"contacts\":[{\"profile\":{\"name\":\"PyWa Tests\"},\"wa_id\":\"972544401243\"}],\"messages\":[{\"from\":\"972544401243\",\"id\":\"wamid.HBgMOTcyNTQ0NDAxMjQzFQIAEhggM0RFQTNCMEEwRTY3QzUwODYzMDc4NjQ4QzM4ODAxM0YA\",\"timestamp\":\"1730231903\",\"text\":{\"body\":\"Hey there! I am using PyWa!\"},\"type\":\"text\"}]},\"field\":\"messages\"}]}]}", "header_name": "X-Hub-Signature-256", "header_value": "sha256=54edfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc441", "expect_valid": false},
    {"id": "wrong_secret", "app_secret": "WRONG_APP_SECRET", "body": "test", "header_name": "X-Hub-Signature-256", "header_value": "sha256=0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221", "expect_valid": false}
  ],
  "webhook_verification": [
    {"id": "graph_api_getting_started_sample", "request": {"method": "GET", "path_and_query": "/webhooks?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock"}, "configured_verify_token": "meatyhamhock", "expected_response": {"status": 200, "body": "1158201444"}},
    {"id": "wrong_token", "request": {"method": "GET", "path_and_query": "/webhooks?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=WRONG"}, "configured_verify_token": "meatyhamhock", "expected_response": {"status_one_of": [401, 403], "body_must_not_equal": "1158201444"}}
  ],
  "send_requests": {
    "Send Text Message": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "recipient_type": "individual", "text": {"body": "text-message-content", "preview_url": false}, "to": "{{Recipient-Phone-Number}}", "type": "text"}},
    "Send Text Message with Preview URL": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "text": {"body": "Please visit https://youtu.be/hpltvTEiRrY.", "preview_url": true}, "to": "{{Recipient-Phone-Number}}"}},
    "Send Reply to Text Message": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"context": {"message_id": "<MSGID_OF_PREV_MSG>"}, "messaging_product": "whatsapp", "recipient_type": "individual", "text": {"body": "<TEXT_MSG_CONTENT>", "preview_url": false}, "to": "{{Recipient-Phone-Number}}", "type": "text"}},
    "Send Image Message by ID": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"image": {"id": "<IMAGE_OBJECT_ID>"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "image"}},
    "Send Image Message by URL": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"image": {"link": "http(s)://image-url"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "image"}},
    "Send Document Message by ID": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"document": {"caption": "<DOCUMENT_CAPTION_TO_SEND>", "filename": "<DOCUMENT_FILENAME>", "id": "<DOCUMENT_OBJECT_ID>"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "document"}},
    "Send Document Message by URL": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"document": {"caption": "<DOCUMENT-CAPTION-TEXT>", "link": "<http(s)://document-url>"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "document"}},
    "Send Audio Message by ID": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"audio": {"id": "<AUDIO_OBJECT_ID>"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "audio"}},
    "Send Audio Message by URL": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"audio": {"link": "<http(s)://audio-url>"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "audio"}},
    "Send Video Message by ID": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "video", "video": {"caption": "<VIDEO_CAPTION_TEXT>", "id": "<VIDEO_OBJECT_ID>"}}},
    "Send Video Message by URL": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "video", "video": {"caption": "<VIDEO_CAPTION_TEXT>", "link": "<http(s)://video-url>"}}},
    "Send Sticker Message by ID": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "recipient_type": "individual", "sticker": {"id": "<MEDIA_OBJECT_ID>"}, "to": "{{Recipient-Phone-Number}}", "type": "sticker"}},
    "Send Test Message": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "template": {"language": {"code": "en_US"}, "name": "hello_world"}, "to": "{{Recipient-Phone-Number}}", "type": "template"}},
    "Send Message Template Text": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "recipient_type": "individual", "template": {"components": [{"parameters": [{"text": "text-string", "type": "text"}, {"currency": {"amount_1000": 100990, "code": "USD", "fallback_value": "$100.99"}, "type": "currency"}, {"date_time": {"calendar": "GREGORIAN", "day_of_month": 25, "day_of_week": 5, "fallback_value": "February 25, 1977", "hour": 15, "minute": 33, "month": 2, "year": 1977}, "type": "date_time"}], "type": "body"}], "language": {"code": "language-and-locale-code"}, "name": "template-name"}, "to": "{{Recipient-Phone-Number}}", "type": "template"}},
    "Send Message Template Media": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "recipient_type": "individual", "template": {"components": [{"parameters": [{"image": {"link": "http(s)://the-image-url"}, "type": "image"}], "type": "header"}, {"parameters": [{"text": "text-string", "type": "text"}, {"currency": {"amount_1000": 100990, "code": "USD", "fallback_value": "$100.99"}, "type": "currency"}, {"date_time": {"calendar": "GREGORIAN", "day_of_month": 25, "day_of_week": 5, "fallback_value": "February 25, 1977", "hour": 15, "minute": 33, "month": 2, "year": 1977}, "type": "date_time"}], "type": "body"}], "language": {"code": "language-and-locale-code"}, "name": "template-name"}, "to": "{{Recipient-Phone-Number}}", "type": "template"}},
    "Send Reply Button": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"interactive": {"action": {"buttons": [{"reply": {"id": "<UNIQUE_BUTTON_ID_1>", "title": "<BUTTON_TITLE_1>"}, "type": "reply"}, {"reply": {"id": "<UNIQUE_BUTTON_ID_2>", "title": "<BUTTON_TITLE_2>"}, "type": "reply"}]}, "body": {"text": "<BUTTON_TEXT>"}, "type": "button"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "interactive"}},
    "Send List Message": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"interactive": {"action": {"button": "<BUTTON_TEXT>", "sections": [{"rows": [{"description": "<SECTION_1_ROW_1_DESC>", "id": "<LIST_SECTION_1_ROW_1_ID>", "title": "<SECTION_1_ROW_1_TITLE>"}, {"description": "<SECTION_1_ROW_2_DESC>", "id": "<LIST_SECTION_1_ROW_2_ID>", "title": "<SECTION_1_ROW_2_TITLE>"}], "title": "<LIST_SECTION_1_TITLE>"}, {"rows": [{"description": "<SECTION_2_ROW_1_DESC>", "id": "<LIST_SECTION_2_ROW_1_ID>", "title": "<SECTION_2_ROW_1_TITLE>"}, {"description": "<SECTION_2_ROW_2_DESC>", "id": "<LIST_SECTION_2_ROW_2_ID>", "title": "<SECTION_2_ROW_2_TITLE>"}], "title": "<LIST_SECTION_2_TITLE>"}]}, "body": {"text": "<BODY_TEXT>"}, "footer": {"text": "<FOOTER_TEXT>"}, "header": {"text": "<HEADER_TEXT>", "type": "text"}, "type": "list"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "interactive"}},
    "Send Reply with Reaction Message": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"messaging_product": "whatsapp", "reaction": {"emoji": "😀", "message_id": "wamid.HBgLM..."}, "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "reaction"}},
    "Send Location Message": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"location": {"address": "1 Hacker Way, Menlo Park, CA 94025", "latitude": 37.758056, "longitude": -122.425332, "name": "META HQ"}, "messaging_product": "whatsapp", "recipient_type": "individual", "to": "{{Recipient-Phone-Number}}", "type": "location"}},
    "Send Contact Message": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"contacts": [{"addresses": [{"city": "Menlo Park", "country": "United States", "country_code": "us", "state": "CA", "street": "1 Hacker Way", "type": "HOME", "zip": "94025"}, {"city": "Menlo Park", "country": "United States", "country_code": "us", "state": "CA", "street": "200 Jefferson Dr", "type": "WORK", "zip": "94025"}], "birthday": "2012-08-18", "emails": [{"email": "test@fb.com", "type": "WORK"}, {"email": "test@whatsapp.com", "type": "HOME"}], "name": {"first_name": "John", "formatted_name": "John Smith", "last_name": "Smith", "middle_name": "D.", "prefix": "Dr", "suffix": "Jr"}, "org": {"company": "WhatsApp", "department": "Design", "title": "Manager"}, "phones": [{"phone": "+1 (940) 555-1234", "type": "HOME"}, {"phone": "+1 (650) 555-1234", "type": "WORK", "wa_id": "16505551234"}], "urls": [{"type": "WORK", "url": "https://www.facebook.com"}, {"type": "HOME", "url": "https://www.whatsapp.com"}]}], "messaging_product": "whatsapp", "to": "{{Recipient-Phone-Number}}", "type": "contacts"}},
    "Send typing indicator and read receipt": {"method": "POST", "path": "/{Version}/{Phone-Number-ID}/messages", "headers": {"Authorization": "Bearer <ACCESS_TOKEN>", "Content-Type": "application/json"}, "body": {"message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUYzMjEzNDM2RTZGQ0MzMDJBRgA=", "messaging_product": "whatsapp", "status": "read", "typing_indicator": {"type": "text"}}}
  },
  "send_responses": {
    "Example response": {"http_status": 200, "body": {"contacts": [{"input": "+16505551234", "wa_id": "16505551234"}], "messages": [{"id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJCOTY3NDc0NDFDRUI3NTA0Q0UA"}], "messaging_product": "whatsapp"}},
    "Send Text Message": {"http_status": 200, "body": {"contacts": [{"input": "48XXXXXXXXX", "wa_id": "48XXXXXXXXX "}], "messages": [{"id": "wamid.gBGGSFcCNEOPAgkO_KJ55r4w_ww"}], "messaging_product": "whatsapp"}},
    "Send Reply Button": {"http_status": 200, "body": {"contacts": [{"input": "PHONE_NUMBER", "wa_id": "WHATSAPP_ID"}], "messages": [{"id": "wamid.ID"}], "messaging_product": "whatsapp"}},
    "Send typing indicator and read receipt": {"http_status": 200, "body": {"success": true}},
    "schema_example_with_message_status": {"http_status": 200, "body": {"messaging_product": "whatsapp", "contacts": [{"input": "48XXXXXXXXX", "wa_id": "48XXXXXXXXX"}], "messages": [{"id": "wamid.gBGGSFcCNEOPAgkO_KJ55r4w_ww", "message_status": "accepted"}]}},
    "nodejs_sdk_default": {"http_status": 200, "body": {"messaging_product": "whatsapp", "contacts": [{"input": "16505076520", "wa_id": "16505076520"}], "messages": [{"id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}}
  },
  "error_responses": [
    {"id": "rate_limit_130429_sync", "http_status": 429, "body": {"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because there were too many messages sent from this phone number in a short period of time"}, "error_subcode": 2494055, "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}}},
    {"id": "pair_rate_limit_131056_sync", "http_status": 429, "body": {"error": {"message": "(#131056) (Business Account, Consumer Account) pair rate limit hit", "type": "OAuthException", "code": 131056, "error_subcode": 2494071, "fbtrace_id": "A4O5a8RAgePwbcGSu", "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."}}}},
    {"id": "expired_token_190", "http_status": 401, "body": {"error": {"message": "Error validating access token: Session has expired on Friday, 26-Apr-24 06:00:00 PDT. The current time is Sunday, 28-Apr-24 03:40:10 PDT.", "type": "OAuthException", "code": 190, "error_subcode": 463, "fbtrace_id": "ACEyrTehk6IAd0lm05Ixogh"}}},
    {"id": "reengagement_131047_error_object", "error_object": {"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message", "error_data": {"details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}, "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}},
    {"id": "media_upload_131053_error_object", "error_object": {"code": 131053, "title": "Media upload error", "message": "Media upload error", "error_data": {"details": "Downloading media from weblink failed with http code 429, status message Too Many Requests"}}}
  ],
  "webhook_payloads": {
    "openapi: Text Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", "timestamp": "1749416383", "type": "text", "text": {"body": "Does it come in another color?"}}]}, "field": "messages"}]}]}},
    "openapi: Text Message with Context (Product Inquiry)": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"context": {"from": "15550783881", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGA9wcm9kdWN0X2lucXVpcnkA", "referred_product": {"catalog_id": "194836987003835", "product_retailer_id": "di9ozbzfi4"}}, "from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTA2NTUwRkNEMDdFQjJCRUU0NQA=", "timestamp": "1750016800", "text": {"body": "Is this still available?"}, "type": "text"}]}, "field": "messages"}]}]}},
    "openapi: Image Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", "timestamp": "1744344496", "type": "image", "image": {"caption": "Taj Mahal", "mime_type": "image/jpeg", "sha256": "SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=", "id": "1003383421387256"}}]}, "field": "messages"}]}]}},
    "openapi: Interactive Button Reply Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"context": {"from": "15550783881", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEM2RUJFNkI0RENGQTVDRjUA"}, "from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTZBQzg0MzQ4QjRCM0NGNkVGOAA=", "timestamp": "1750025136", "type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "cancel-button", "title": "Cancel"}}}]}, "field": "messages"}]}]}},
    "openapi: Interactive List Reply Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"context": {"from": "15550783881", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJGMzEyNzhENTZDMzNGODlDRDgA"}, "from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUJDQ0NDM0FEODY4ODkzOTc5RgA=", "timestamp": "1749854575", "type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "priority_express", "title": "Priority Mail Express", "description": "Next Day to 2 Days"}}}]}, "field": "messages"}]}]}},
    "openapi: Button Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"context": {"from": "15550783881", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJFNjk2OTMwNEZCQjhGMzUyQUYA"}, "from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUU0M0MxQzQzMUJCMTMwNUZFOQA=", "timestamp": "1750091045", "type": "button", "button": {"payload": "Unsubscribe", "text": "Unsubscribe"}}]}, "field": "messages"}]}]}},
    "openapi: Reaction Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", "timestamp": "1749419544", "type": "reaction", "reaction": {"message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0RTJEOTc2ODVERUY5RDlGNkYA", "emoji": "👍"}}]}, "field": "messages"}]}]}},
    "openapi: Location Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTU2MjZEMDBGRkE3MENEMDE0RQA=", "timestamp": "1744344496", "location": {"address": "101 Forest Ave, Palo Alto, CA 94301", "latitude": 37.44221496582, "longitude": -122.16165924072, "name": "Philz Coffee", "url": "https://philzcoffee.com/"}, "type": "location"}]}, "field": "messages"}]}]}},
    "openapi: Contact Sharing Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", "timestamp": "1744344496", "type": "contacts", "contacts": [{"name": {"first_name": "Lucía", "last_name": "Gómez", "formatted_name": "Lucía Gómez"}, "org": {"company": "Google"}, "phones": [{"phone": "+1 (983) 555-2319", "wa_id": "19835552319", "type": "MOBILE"}]}]}]}, "field": "messages"}]}]}},
    "openapi: Unsupported Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "419561257915477", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}], "messages": [{"from": "16505551234", "id": "wamid.HBgLMTQyMDU1NTA3NDkVAgASGBI5N0MwRjg0RTVBNUI1RDA2OTkA", "timestamp": "1750090702", "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}], "type": "unsupported"}]}, "field": "messages"}]}]}},
    "openapi: System Message": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "messages": [{"from": "16505551234", "id": "wamid.HBgLMTk4MzU1NTE5NzQVAgASGAoxMTgyMDg2MjY3AA==", "timestamp": "1750269342", "system": {"body": "User Sheena Nelson changed from 16505551234 to 12195555358", "wa_id": "12195555358", "type": "user_changed_number"}, "type": "system"}]}, "field": "messages"}]}]}},
    "pywa status: sent": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "5467539754836534", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "statuses": [{"id": "wamid.xyzxyz", "status": "sent", "timestamp": "1698266945", "recipient_id": "972987654321", "conversation": {"id": "7270432eae37498234f4444b35ffc5", "expiration_timestamp": "1698339900", "origin": {"type": "service"}}, "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}}]}, "field": "messages"}]}]}},
    "pywa status: delivered": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "5467539754836534", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "statuses": [{"id": "wamid.xyzxyz", "status": "delivered", "timestamp": "1698266945", "recipient_id": "972987654321", "conversation": {"id": "7270432eae37498234f4444b35ffc5", "origin": {"type": "service"}}, "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}}]}, "field": "messages"}]}]}},
    "pywa status: read": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "5467539754836534", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "statuses": [{"id": "wamid.xyzxyz", "status": "read", "timestamp": "1689380458", "recipient_id": "972987654321", "conversation": {"id": "7270432eae37498234f4444b35ffc5", "origin": {"type": "service"}}, "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}}]}, "field": "messages"}]}]}},
    "pywa status: failed": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "5467539754836534", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "statuses": [{"id": "wamid.xyzxyz", "status": "failed", "timestamp": "1689380458", "recipient_id": "972987654321", "errors": [{"code": 130472, "title": "User's number is part of an experiment", "message": "User's number is part of an experiment", "error_data": {"details": "Failed to send message because this user's phone number is part of an experiment"}, "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}]}, "field": "messages"}]}]}},
    "pywa message: image": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697043379", "type": "image", "image": {"mime_type": "image/jpeg", "sha256": "4654+8g=", "id": "65463453"}}]}, "field": "messages"}]}]}},
    "pywa message: media_with_url": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697043379", "type": "image", "image": {"mime_type": "image/jpeg", "sha256": "4654+8g=", "id": "65463453", "url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=65463453&source=webhook&ext=487r9re&hash=heiwchueowbcew-dnedcw"}}]}, "field": "messages"}]}]}},
    "pywa message: document": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"context": {"forwarded": true}, "from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697043666", "type": "document", "document": {"caption": "caption", "filename": "filename.pdf", "mime_type": "application/pdf", "sha256": "grwfwe/ZPx0wAbdfbdeFUNItPZ0RylL8gGUvdt3YFqc18SY=", "id": "1234567890987654321"}}]}, "field": "messages"}]}]}},
    "pywa message: audio": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"context": {"forwarded": true}, "from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697043509", "type": "audio", "audio": {"mime_type": "audio/ogg; codecs=opus", "sha256": "E3dxS/PdYZE7ppA3pQ4mpCFaXBJ8pX4SRN/dsfvds/iPGA=", "id": "1234567890987654321", "voice": false}}]}, "field": "messages"}]}]}},
    "pywa message: voice": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697043473", "type": "audio", "audio": {"mime_type": "audio/ogg; codecs=opus", "sha256": "m04pFf2ERdaopTyFkGPA0+bX3i+YY2dYgVFwOgDLSDI=", "id": "1234567890987654321", "voice": true}}]}, "field": "messages"}]}]}},
    "meta errors webhook: 130429": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}, "errors": [{"code": 130429, "title": "Rate limit hit", "message": "Rate limit hit", "error_data": {"details": "Message failed to send because there were too many messages sent from this phone number in a short period of time"}, "href": "/documentation/business-messaging/whatsapp/support/error-codes"}]}, "field": "messages"}]}]}},
    "pywa message: text": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697043223", "text": {"body": "Body Text"}, "type": "text"}]}, "field": "messages"}]}]}},
    "pywa message: reaction": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697044456", "type": "reaction", "reaction": {"message_id": "wamid.yzxyzx=", "emoji": "😮"}}]}, "field": "messages"}]}]}},
    "pywa message: unreaction_empty": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697044456", "type": "reaction", "reaction": {"message_id": "wamid.yzxyzx=", "emoji": ""}}]}, "field": "messages"}]}]}},
    "pywa message: unreaction_no_emoji": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697044456", "type": "reaction", "reaction": {"message_id": "wamid.yzxyzx="}}]}, "field": "messages"}]}]}},
    "pywa message: chosen_location": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"context": {"forwarded": true}, "from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697044557", "location": {"latitude": 37.4611978, "longitude": -122.2164385, "name": "Facebook HQ", "address": "1 Hacker Way, Menlo Park, CA 94025", "url": "https://maps.google.com/?cid=2000000000000000000"}, "type": "location"}]}, "field": "messages"}]}]}},
    "pywa message: reply": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"context": {"from": "972123456789", "id": "wamid.xyzxyz=="}, "from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697044746", "text": {"body": "replied text"}, "type": "text"}]}, "field": "messages"}]}]}},
    "pywa message: forwarded": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"context": {"forwarded": true}, "from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697044815", "text": {"body": "forwarded text"}, "type": "text"}]}, "field": "messages"}]}]}},
    "pywa message: unsupported": {"body": {"object": "whatsapp_business_account", "entry": [{"id": "1234567890987654321", "changes": [{"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"}, "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321", "user_id": "US.13491208655302741918", "parent_user_id": "US.ENT.11815799212886844830"}], "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697044706", "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}], "type": "unsupported"}]}, "field": "messages"}]}]}}
  }
}
"##;
