//! The `twilio` provider against a loopback stand-in for Twilio's REST API (an axum
//! server on 127.0.0.1:0 that records each request and answers what the test queued),
//! and its webhook verification against every published X-Twilio-Signature vector.
//!
//! The vectors, create-message forms, responses and error bodies are Twilio's documented
//! examples (twilio-python, twilio-node, twilio-go tests; Twilio docs), as collected in
//! `shared/vectors/twilio.json` beside the repository. The signature vectors are copied
//! here so the tests stand alone; when that file is present, every vector in it is run
//! too and must be one of the copied ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use dash_core::api::{Choice, Location};
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use dashd::adapter::twilio::{Twilio, compute_signature};
use dashd::adapter::{
    Content, DeliveryStatus, MediaSource, OutboundMessage, ProviderConfig, ProviderEvent,
    Recipient, Secret, SendError, WebhookError, WebhookRequest, WhatsAppProvider,
};
use serde_json::{Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The loopback Twilio
// ---------------------------------------------------------------------------------------

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    /// `Authorization: Basic` decoded into user and password.
    basic: Option<(String, String)>,
    content_type: Option<String>,
    form: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct FakeTwilio {
    seen: Arc<Mutex<Vec<Recorded>>>,
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
}

impl FakeTwilio {
    fn answer(&self, status: u16, body: impl Into<String>) {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, body.into()));
    }

    fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Recorded {
        self.seen().pop().expect("a request reached the stand-in")
    }
}

async fn record(
    State(fake): State<FakeTwilio>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(u, p)| (u.to_owned(), p.to_owned()))
        });
    fake.seen.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_owned(),
        basic,
        content_type: headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        form: serde_urlencoded::from_bytes(&body).unwrap_or_default(),
    });
    let (status, body) = fake
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((500, r#"{"code":20500,"message":"nothing queued"}"#.into()));
    (
        StatusCode::from_u16(status).unwrap(),
        [(CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Starts the stand-in; its base URL.
async fn serve(fake: &FakeTwilio) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(record).with_state(fake.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const SID: &str = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
const TOKEN: &str = "your_auth_token";
const PUBLIC_URL: &str = "https://bots.example.com/webhook/twilio/b1";

fn config(settings: &[(&str, &str)], token: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        bot_id: Uuid::nil(),
        kind: ProviderKind::Twilio,
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        secrets: token
            .map(|t| ("auth_token".to_owned(), Secret::new(t)))
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    }
}

/// One HTTP client for the providers that only verify webhooks and never call out
/// (building a client loads the TLS roots, and the tamper tests build hundreds). Those
/// that call the stand-in get their own: a pool must not outlive its test's runtime.
fn idle_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new).clone()
}

fn provider_at(base_url: &str, from: &str, token: Option<&str>) -> Twilio {
    Twilio::new(
        &config(
            &[
                ("base_url", base_url),
                ("account_sid", SID),
                ("from", from),
                ("public_url", PUBLIC_URL),
            ],
            token,
        ),
        reqwest::Client::new(),
    )
    .unwrap()
}

/// A provider that only verifies webhooks (its REST root is never called).
fn webhook_provider(public_url: &str, token: Option<&str>) -> Twilio {
    Twilio::new(
        &config(
            &[
                ("base_url", "http://127.0.0.1:9"),
                ("account_sid", SID),
                ("from", "+14155238886"),
                ("public_url", public_url),
            ],
            token,
        ),
        idle_client(),
    )
    .unwrap()
}

fn to(phone: &str, content: Content) -> OutboundMessage {
    OutboundMessage {
        bot_id: Uuid::nil(),
        message_id: Uuid::now_v7(),
        to: Recipient {
            phone: Some(phone.to_owned()),
            ..Recipient::default()
        },
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

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sorted(mut form: Vec<(String, String)>) -> Vec<(String, String)> {
    form.sort();
    form
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
}

/// Delivers a webhook to `provider` as dashd's listener would hand it over.
fn deliver(
    provider: &Twilio,
    method: Method,
    query: Option<&str>,
    content_type: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Vec<ProviderEvent>, WebhookError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
    if let Some(signature) = signature {
        headers.insert("x-twilio-signature", signature.parse().unwrap());
    }
    provider.parse_webhook(&WebhookRequest {
        method: &method,
        path: "/webhook/twilio/b1",
        query,
        headers: &headers,
        body,
        now: now(),
    })
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A form webhook signed for `PUBLIC_URL` with the test token.
fn signed_form(params: &[(&str, &str)]) -> (Vec<u8>, String) {
    let params = pairs(params);
    let signature = compute_signature(TOKEN, PUBLIC_URL, &params);
    (
        serde_urlencoded::to_string(&params).unwrap().into_bytes(),
        signature,
    )
}

fn one_event(result: Result<Vec<ProviderEvent>, WebhookError>) -> ProviderEvent {
    let mut events = result.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    events.remove(0)
}

// ---------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------

/// Twilio's holodeck 201 answer (twilio-python test_message.py::test_create_response).
const CREATED: &str = r#"{"account_sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","api_version":"2010-04-01","body":"Hello! \ud83d\udc4d","date_created":"Thu, 30 Jul 2015 20:12:31 +0000","date_sent":"Thu, 30 Jul 2015 20:12:33 +0000","date_updated":"Thu, 30 Jul 2015 20:12:33 +0000","direction":"outbound-api","error_code":null,"error_message":null,"from":"+14155552345","messaging_service_sid":"MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","num_media":"0","num_segments":"1","price":null,"price_unit":null,"sid":"SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","status":"sent","subresource_uris":{"media":"/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Messages/SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Media.json"},"tags":{"campaign_name":"Spring Sale 2022","message_type":"cart_abandoned"},"to":"+14155552345","uri":"/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Messages/SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.json"}"#;

/// The api-snippets send-message output (status `queued`).
const QUEUED: &str = r#"{"sid":"MMc781610ec0b3400c9e0cab8e757da937","date_created":"Mon, 19 Oct 2015 07:07:03 +0000","date_updated":"Mon, 19 Oct 2015 07:07:03 +0000","date_sent":null,"account_sid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","to":"+15558675310","from":"+15017122661","body":"This is the ship that made the Kessel Run in fourteen parsecs?","status":"queued","num_segments":"1","num_media":"1","direction":"outbound-api","api_version":"2010-04-01","price":null,"price_unit":"USD","error_code":null,"error_message":null,"uri":"/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages/MMc781610ec0b3400c9e0cab8e757da937.json","subresource_uris":{"media":"/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages/MMc781610ec0b3400c9e0cab8e757da937/Media.json"}}"#;

fn messages_path() -> String {
    format!("/2010-04-01/Accounts/{SID}/Messages.json")
}

/// Checks the request line, the auth and the content type of a create-message call, and
/// returns its form without `StatusCallback` (which must be the public URL).
fn create_message_form(request: &Recorded) -> Vec<(String, String)> {
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, messages_path());
    assert_eq!(
        request.basic,
        Some((SID.to_owned(), TOKEN.to_owned())),
        "HTTP Basic auth with account SID and auth token"
    );
    assert_eq!(request.content_type.as_deref(), Some(FORM));
    assert_eq!(field(&request.form, "StatusCallback"), Some(PUBLIC_URL));
    request
        .form
        .iter()
        .filter(|(k, _)| k != "StatusCallback")
        .cloned()
        .collect()
}

#[tokio::test]
async fn media_by_link_is_the_documented_whatsapp_media_form() {
    let fake = FakeTwilio::default();
    let base = serve(&fake).await;
    // The `from` setting given with its channel prefix.
    let twilio = provider_at(&base, "whatsapp:+12125551234", Some(TOKEN));
    fake.answer(201, CREATED);
    let receipt = twilio
        .send(&to(
            "+13105555555",
            Content::Media {
                kind: MediaKind::Image,
                source: MediaSource::Link("https://demo.twilio.com/owl.png".into()),
                caption: Some(
                    "Thanks for contacting me on WhatsApp! Here is a picture of an owl.".into(),
                ),
                filename: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        receipt.provider_message_id,
        "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    );
    // Twilio support article 360017961894 (vectors: create_message.whatsapp_text_with_media).
    let documented = pairs(&[
        ("To", "whatsapp:+13105555555"),
        ("From", "whatsapp:+12125551234"),
        (
            "Body",
            "Thanks for contacting me on WhatsApp! Here is a picture of an owl.",
        ),
        ("MediaUrl", "https://demo.twilio.com/owl.png"),
    ]);
    assert_eq!(
        sorted(create_message_form(&fake.last())),
        sorted(documented)
    );
}

#[tokio::test]
async fn template_is_the_documented_content_form() {
    let fake = FakeTwilio::default();
    let base = serve(&fake).await;
    let twilio = provider_at(&base, "+15551234567", Some(TOKEN));
    fake.answer(201, QUEUED);
    let receipt = twilio
        .send(&to(
            "+18551234567",
            Content::Template {
                name: "HXXXXXXXXX".into(),
                language: "en".into(),
                parameters: vec!["Name".into()],
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        receipt.provider_message_id,
        "MMc781610ec0b3400c9e0cab8e757da937"
    );
    // vectors: create_message.whatsapp_content_template.
    let form = create_message_form(&fake.last());
    let mut without_variables: Vec<_> = form
        .iter()
        .filter(|(k, _)| k != "ContentVariables")
        .cloned()
        .collect();
    without_variables.sort();
    assert_eq!(
        without_variables,
        sorted(pairs(&[
            ("ContentSid", "HXXXXXXXXX"),
            ("To", "whatsapp:+18551234567"),
            ("From", "whatsapp:+15551234567"),
        ]))
    );
    let variables: Value = serde_json::from_str(field(&form, "ContentVariables").unwrap()).unwrap();
    let documented: Value = serde_json::from_str(r#"{"1": "Name"}"#).unwrap();
    assert_eq!(variables, documented);
}

#[tokio::test]
async fn text_menu_and_location_forms() {
    let fake = FakeTwilio::default();
    let base = serve(&fake).await;
    let twilio = provider_at(&base, "+15551234567", Some(TOKEN));

    fake.answer(201, CREATED);
    twilio
        .send(&to(
            "+44 20 7946 0958",
            text("Hello, see https://example.com"),
        ))
        .await
        .unwrap();
    assert_eq!(
        sorted(create_message_form(&fake.last())),
        sorted(pairs(&[
            ("To", "whatsapp:+442079460958"),
            ("From", "whatsapp:+15551234567"),
            ("Body", "Hello, see https://example.com"),
        ]))
    );

    fake.answer(201, CREATED);
    twilio
        .send(&to(
            "+18551234567",
            Content::Menu {
                body: "What would you like?".into(),
                choices: vec![
                    Choice {
                        id: "tea".into(),
                        label: "Tea".into(),
                    },
                    Choice {
                        id: "coffee".into(),
                        label: "Coffee".into(),
                    },
                ],
                button: "Options".into(),
            },
        ))
        .await
        .unwrap();
    let form = create_message_form(&fake.last());
    assert_eq!(
        field(&form, "Body"),
        Some("What would you like?\n1. Tea\n2. Coffee")
    );

    // Twilio's "Send a WhatsApp message with location information" example.
    fake.answer(201, CREATED);
    twilio
        .send(&to(
            "+15005550006",
            Content::Location(Location {
                latitude: 37.78789,
                longitude: -122.391664,
                name: Some("This is one of the Twilio office locations".into()),
                address: Some("375 Beale St".into()),
            }),
        ))
        .await
        .unwrap();
    let form = create_message_form(&fake.last());
    assert_eq!(
        field(&form, "Body"),
        Some("This is one of the Twilio office locations")
    );
    assert_eq!(
        field(&form, "PersistentAction"),
        Some("geo:37.78789,-122.391664|375 Beale St")
    );
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn what_twilio_cannot_send_fails_without_a_request() {
    let fake = FakeTwilio::default();
    let base = serve(&fake).await;
    let twilio = provider_at(&base, "+15551234567", Some(TOKEN));
    let unsupported = [
        to(
            "+18551234567",
            Content::Media {
                kind: MediaKind::Document,
                source: MediaSource::Id("1234567890".into()),
                caption: None,
                filename: Some("a.pdf".into()),
            },
        ),
        to(
            "+18551234567",
            Content::Reaction {
                message_id: "SM1".into(),
                emoji: "👍".into(),
            },
        ),
        to(
            "+18551234567",
            Content::MarkRead {
                message_id: "SM1".into(),
            },
        ),
        OutboundMessage {
            to: Recipient {
                phone: None,
                bsuid: Some("US.13491208655302741918".into()),
                lid: None,
            },
            ..to("+1", text("hi"))
        },
        to("not-a-number", text("hi")),
    ];
    for message in unsupported {
        let err = twilio.send(&message).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent, "{err}");
    }
    assert!(
        fake.seen().is_empty(),
        "nothing is sent for what Twilio cannot do"
    );

    // Without an auth token nothing can be sent: the provider is broken for the bot.
    let tokenless = provider_at(&base, "+15551234567", None);
    let err = tokenless
        .send(&to("+18551234567", text("hi")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::ProviderBroken);
    assert!(err.message.contains("auth_token"), "{err}");
    assert!(fake.seen().is_empty());
}

/// Sends one text through a stand-in answering `status` and `body`.
async fn send_answered(status: u16, body: &str) -> SendError {
    let fake = FakeTwilio::default();
    let base = serve(&fake).await;
    let twilio = provider_at(&base, "+15551234567", Some(TOKEN));
    fake.answer(status, body);
    let err = twilio
        .send(&to("+18551234567", text("hi")))
        .await
        .unwrap_err();
    assert_eq!(fake.seen().len(), 1);
    assert!(!err.message.contains(TOKEN), "the auth token leaked: {err}");
    err
}

#[tokio::test]
async fn errors_are_classified_with_twilios_code() {
    use ErrorClass::*;
    let cases: &[(u16, &str, ErrorClass, &str, &str)] = &[
        // The documented error bodies (vectors: error_responses).
        (
            400,
            r#"{"code":21211,"message":"The 'To' number 5551234567 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
            Permanent,
            "21211",
            "not a valid phone number",
        ),
        (
            400,
            r#"{"message":"Invalid phone number","code":21211}"#,
            Permanent,
            "21211",
            "Invalid phone number",
        ),
        (
            400,
            r#"{"message":"test","code":81022,"more_info":"https://www.twilio.com/docs/errors/81022"}"#,
            Permanent,
            "81022",
            "test",
        ),
        (
            422,
            r##"{"type":"https://www.twilio.com/docs/api/errors/20001","title":"Validation failed","status":422,"code":20001,"detail":"Request validation failed","errors":[{"detail":"must be a positive integer","pointer":"#/age"}]}"##,
            Permanent,
            "20001",
            "Request validation failed",
        ),
        // The error codes table (vectors: error_codes) and the provider's own rules.
        (
            401,
            r#"{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}"#,
            ProviderBroken,
            "20003",
            "Authenticate",
        ),
        (
            404,
            r#"{"code":20404,"message":"The requested resource was not found","status":404}"#,
            ProviderBroken,
            "20404",
            "not found",
        ),
        (
            429,
            r#"{"code":20429,"message":"Too Many Requests","status":429}"#,
            Retryable,
            "20429",
            "Too Many Requests",
        ),
        (
            503,
            r#"{"code":20503,"message":"Service unavailable"}"#,
            Retryable,
            "20503",
            "unavailable",
        ),
        (500, "", Retryable, "500", "HTTP 500"),
        (
            502,
            "<html>Bad Gateway</html>",
            Retryable,
            "502",
            "Bad Gateway",
        ),
        (
            400,
            r#"{"code":63007,"message":"Twilio could not find a Channel with the specified From address","status":400}"#,
            ProviderBroken,
            "63007",
            "Channel",
        ),
        (
            400,
            r#"{"code":21606,"message":"The From phone number is not a valid, SMS-capable inbound phone number or short code for your account.","status":400}"#,
            ProviderBroken,
            "21606",
            "From",
        ),
        (
            400,
            r#"{"code":21614,"message":"'To' number is not a valid mobile number","status":400}"#,
            Permanent,
            "21614",
            "mobile",
        ),
        (
            400,
            r#"{"code":63016,"status":400}"#,
            Permanent,
            "63016",
            "24-hour window",
        ),
        (
            400,
            r#"{"code":21408,"message":"Permission to send an SMS has not been enabled for the region","status":400}"#,
            Permanent,
            "21408",
            "region",
        ),
        (
            403,
            r#"{"message":"Forbidden"}"#,
            ProviderBroken,
            "403",
            "Forbidden",
        ),
        (400, r#"{"message":"Bad"}"#, Permanent, "400", "Bad"),
    ];
    for (status, body, class, code, words) in cases {
        let err = send_answered(*status, body).await;
        assert_eq!(err.class, *class, "{status} {body}: {err}");
        assert_eq!(err.code.as_deref(), Some(*code), "{status} {body}");
        assert!(err.message.contains(words), "{err} should say {words:?}");
    }
}

#[tokio::test]
async fn a_success_without_a_sid_fails_the_message_and_the_token_never_shows() {
    // twilio-node's RestException fixture comes with HTTP 200: no sid, no receipt, and
    // no second delivery either.
    let err = send_answered(
        200,
        r#"{"message":"test","code":81022,"more_info":"https://www.twilio.com/docs/errors/81022"}"#,
    )
    .await;
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("sid"), "{err}");

    let echoed =
        format!(r#"{{"code":20003,"message":"Bad token {TOKEN} for {SID}","status":401}}"#);
    let err = send_answered(401, &echoed).await;
    assert_eq!(err.class, ErrorClass::ProviderBroken);
    assert!(err.message.contains("***"), "{err}");
}

#[tokio::test]
async fn an_unreachable_twilio_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let twilio = provider_at(&format!("http://{addr}"), "+15551234567", Some(TOKEN));
    let err = twilio
        .send(&to("+18551234567", text("hi")))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable, "{err}");
    assert_eq!(err.code, None);
    let err = twilio.probe().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Retryable, "{err}");
}

#[tokio::test]
async fn probe_reads_the_account_status() {
    let fake = FakeTwilio::default();
    let base = serve(&fake).await;
    let twilio = provider_at(&base, "+15551234567", Some(TOKEN));
    let account = |status: &str| {
        json!({
            "auth_token": TOKEN,
            "date_created": "Thu, 30 Jul 2015 20:00:00 +0000",
            "friendly_name": "Acme bots",
            "owner_account_sid": SID,
            "sid": SID,
            "status": status,
            "type": "Full",
            "uri": format!("/2010-04-01/Accounts/{SID}.json"),
        })
        .to_string()
    };

    fake.answer(200, account("active"));
    let report = twilio.probe().await.unwrap();
    assert!(report.detail.contains("Acme bots"), "{}", report.detail);
    assert!(
        report.detail.contains("whatsapp:+15551234567"),
        "{}",
        report.detail
    );
    assert!(!report.detail.contains(TOKEN));
    let request = fake.last();
    assert_eq!(request.method, Method::GET);
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{SID}.json"));
    assert_eq!(request.basic, Some((SID.to_owned(), TOKEN.to_owned())));

    for status in ["suspended", "closed"] {
        fake.answer(200, account(status));
        let err = twilio.probe().await.unwrap_err();
        assert_eq!(err.class, ErrorClass::ProviderBroken, "{err}");
        assert!(err.message.contains(status), "{err}");
        assert!(!err.message.contains(TOKEN));
    }

    fake.answer(
        401,
        r#"{"code":20003,"message":"Authenticate","status":401}"#,
    );
    let err = twilio.probe().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::ProviderBroken);
    assert_eq!(err.code.as_deref(), Some("20003"));

    fake.answer(500, "");
    assert_eq!(
        twilio.probe().await.unwrap_err().class,
        ErrorClass::Retryable
    );
    assert_eq!(fake.seen().len(), 5);
}

// ---------------------------------------------------------------------------------------
// Webhook signatures: the published vectors
// ---------------------------------------------------------------------------------------

/// Every X-Twilio-Signature vector of `shared/vectors/twilio.json` (19 form, 4 JSON):
/// id, token, the URL Twilio requested, the form parameters or raw body, the signature,
/// and whether a validator must accept it.
const SIGNATURE_VECTORS: &str = r#"[
{"id": "default_form_params", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "expect_valid": true},
{"id": "https_url_with_port_1234_signed_without_port", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com:1234/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "expect_valid": true},
{"id": "http_url_with_port_1234", "kind": "form", "auth_token": "12345", "url": "http://mycompany.com:1234/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=", "expect_valid": true},
{"id": "https_signed_with_default_port_443", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "kvajT1Ptam85bY51eRf/AJRuM3w=", "expect_valid": true},
{"id": "http_signed_with_default_port_80", "kind": "form", "auth_token": "12345", "url": "http://mycompany.com/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "0ZXoZLH/DfblKGATFgpif+LLRf4=", "expect_valid": true},
{"id": "duplicate_and_multi_valued_params", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234", "1234"]}, "signature": "IK+Dwps556ElfBT0I3Rgjkr1wJU=", "expect_valid": true},
{"id": "array_param_order_independent_1", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"MessagingBinding.Address": ["+1325xxxxxxx", "+1415xxxxxxx"]}, "signature": "83O6e2vORAoJHUNzJjDWN1jz+BA=", "expect_valid": true},
{"id": "array_param_order_independent_2", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"MessagingBinding.Address": ["+1415xxxxxxx", "+1325xxxxxxx"]}, "signature": "83O6e2vORAoJHUNzJjDWN1jz+BA=", "expect_valid": true},
{"id": "url_with_credentials", "kind": "form", "auth_token": "12345", "url": "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "CukzLTc1tT5dXEDIHm/tKBanW10=", "expect_valid": true},
{"id": "url_with_username_only", "kind": "form", "auth_token": "12345", "url": "https://user@mycompany.com/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "2YRLlVAflCqxaNicjMpJcSTgzSs=", "expect_valid": true},
{"id": "url_with_credentials_and_port_443", "kind": "form", "auth_token": "12345", "url": "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI=", "expect_valid": true},
{"id": "url_with_special_characters", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2&Body=It's+amazing", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "TfZzewPq8wqrGlMfyAud8+/IvJ0=", "expect_valid": true},
{"id": "wrong_signature", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "WRONG_SIGNATURE", "expect_valid": false},
{"id": "extra_query_param_invalidates", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2&somethingUnexpected=true", "params": {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212", "Caller": "+14158675309"}, "signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "expect_valid": false},
{"id": "go_params_incl_reason_keys", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"Digits": "1234", "CallSid": "CA1234567890ABCDE", "To": "+18005551212", "Caller": "+14158675309", "From": "+14158675309", "ReasonConferenceEnded": "test", "Reason": "Participant"}, "signature": "vOEb5UThFn24KEfnOFLQY2AE5FY=", "expect_valid": true},
{"id": "go_http_no_port", "kind": "form", "auth_token": "12345", "url": "http://mycompany.com/myapp.php?foo=1&bar=2", "params": {"Digits": "1234", "CallSid": "CA1234567890ABCDE", "To": "+18005551212", "Caller": "+14158675309", "From": "+14158675309", "ReasonConferenceEnded": "test", "Reason": "Participant"}, "signature": "n2xBNyzSW7rfYStDtOFiFMv7qNo=", "expect_valid": true},
{"id": "go_http_port_1234_signed_without_port", "kind": "form", "auth_token": "12345", "url": "http://mycompany.com:1234/myapp.php?foo=1&bar=2", "params": {"Digits": "1234", "CallSid": "CA1234567890ABCDE", "To": "+18005551212", "Caller": "+14158675309", "From": "+14158675309", "ReasonConferenceEnded": "test", "Reason": "Participant"}, "signature": "n2xBNyzSW7rfYStDtOFiFMv7qNo=", "expect_valid": true},
{"id": "go_wrong_sort_order_rejected", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"Digits": "1234", "CallSid": "CA1234567890ABCDE", "To": "+18005551212", "Caller": "+14158675309", "From": "+14158675309", "ReasonConferenceEnded": "test", "Reason": "Participant"}, "signature": "95+Bu0JVPi0r/SsESZCVf0dWAjw=", "expect_valid": false},
{"id": "go_form_body", "kind": "form", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "params": {"property": "value", "boolean": "true"}, "raw_body": "property=value&boolean=true", "signature": "NBdBDr/T/lgjI+tlgpXjKZQZs/k=", "expect_valid": true},
{"id": "json_body_with_bodySHA256", "kind": "json", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620", "raw_body": "{\"property\": \"value\", \"boolean\": true}", "signature": "a9nBmqA0ju/hNViExpshrM61xv4=", "expect_valid": true},
{"id": "json_body_only_bodySHA256_param", "kind": "json", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620", "raw_body": "{\"property\": \"value\", \"boolean\": true}", "signature": "y77kIzt2vzLz71DgmJGsen2scGs=", "expect_valid": true},
{"id": "json_empty_object_body", "kind": "json", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "raw_body": "{}", "signature": "Ldidvp12m26NI7eqEvxnEpkd9Hc=", "expect_valid": true},
{"id": "json_body_without_bodySHA256_rejected", "kind": "json", "auth_token": "12345", "url": "https://mycompany.com/myapp.php?foo=1&bar=2", "raw_body": "{\"property\": \"value\", \"boolean\": true}", "signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "expect_valid": false}
]"#;

/// One signature vector as a webhook delivery.
struct Vector {
    id: String,
    token: String,
    url: String,
    content_type: &'static str,
    body: Vec<u8>,
    signature: String,
    valid: bool,
}

impl Vector {
    fn from_json(vector: &Value, kind: &str) -> Vector {
        let s = |name: &str| vector[name].as_str().unwrap().to_owned();
        let body = match vector.get("raw_body").and_then(Value::as_str) {
            Some(raw) => raw.as_bytes().to_vec(),
            None => {
                // The form body Twilio would post: every value of every parameter.
                let mut form: Vec<(String, String)> = Vec::new();
                for (name, value) in vector["params"].as_object().unwrap() {
                    match value {
                        Value::Array(values) => form.extend(
                            values
                                .iter()
                                .map(|v| (name.clone(), v.as_str().unwrap().to_owned())),
                        ),
                        other => form.push((name.clone(), other.as_str().unwrap().to_owned())),
                    }
                }
                serde_urlencoded::to_string(&form).unwrap().into_bytes()
            }
        };
        Vector {
            id: s("id"),
            token: s("auth_token"),
            url: s("url"),
            content_type: if kind == "json" {
                "application/json"
            } else {
                FORM
            },
            body,
            signature: s("signature"),
            valid: vector["expect_valid"].as_bool().unwrap(),
        }
    }

    /// The vector's URL split as dashd sees it: the configured public URL and the query
    /// the request arrived with.
    fn split(&self) -> (&str, Option<&str>) {
        match self.url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (&self.url, None),
        }
    }

    /// Delivers the vector with `public_url` configured and `query` received, with its
    /// own token, body and signature unless replaced.
    fn deliver(
        &self,
        public_url: &str,
        query: Option<&str>,
        token: Option<&str>,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<Vec<ProviderEvent>, WebhookError> {
        let provider = webhook_provider(public_url, token);
        deliver(
            &provider,
            Method::POST,
            query,
            self.content_type,
            signature,
            body,
        )
    }

    /// Checks the vector both ways dashd may be configured: the public URL without the
    /// query (the request's query completes it) and the whole URL as the public URL.
    fn check(&self) {
        let (base, query) = self.split();
        for (public_url, received) in [(base, query), (self.url.as_str(), None)] {
            let result = self.deliver(
                public_url,
                received,
                Some(self.token.as_str()),
                &self.body,
                Some(&self.signature),
            );
            if self.valid {
                assert!(
                    result.is_ok(),
                    "{} ({public_url} + {received:?}) must be accepted: {result:?}",
                    self.id
                );
            } else {
                assert!(
                    matches!(result, Err(WebhookError::Signature(_))),
                    "{} ({public_url} + {received:?}) must be refused: {result:?}",
                    self.id
                );
            }
        }
    }
}

fn vectors(list: &Value) -> Vec<Vector> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| Vector::from_json(v, v["kind"].as_str().unwrap()))
        .collect()
}

#[test]
fn every_published_signature_vector_holds() {
    let vectors = vectors(&serde_json::from_str(SIGNATURE_VECTORS).unwrap());
    assert_eq!(vectors.len(), 23);
    assert_eq!(vectors.iter().filter(|v| v.valid).count(), 19);
    for vector in &vectors {
        vector.check();
    }
}

#[test]
fn the_shared_vector_file_agrees_when_present() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors/twilio.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "{} not found: the copied vectors stand alone",
            path.display()
        );
        return;
    };
    let file: Value = serde_json::from_str(&text).unwrap();
    let copied: Vec<String> = vectors(&serde_json::from_str(SIGNATURE_VECTORS).unwrap())
        .into_iter()
        .map(|v| v.id)
        .collect();
    let mut count = 0;
    for (key, kind) in [
        ("signature_vectors_form", "form"),
        ("signature_vectors_json_body", "json"),
    ] {
        for vector in file[key].as_array().unwrap() {
            let vector = Vector::from_json(vector, kind);
            assert!(
                copied.contains(&vector.id),
                "{} is not copied here",
                vector.id
            );
            vector.check();
            count += 1;
        }
    }
    assert_eq!(count, copied.len());
}

/// Each byte of a string, one at a time, changed to another printable character.
fn flipped(text: &str, at: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn any_change_to_a_signed_form_webhook_is_refused() {
    let all = vectors(&serde_json::from_str(SIGNATURE_VECTORS).unwrap());
    let vector = all.iter().find(|v| v.id == "default_form_params").unwrap();
    let (base, query) = vector.split();
    let token = vector.token.as_str();
    let signature = vector.signature.as_str();
    let refused = |result: Result<Vec<ProviderEvent>, WebhookError>, what: &str| {
        assert!(
            matches!(result, Err(WebhookError::Signature(_))),
            "{what}: {result:?}"
        );
    };
    assert!(
        vector
            .deliver(base, query, Some(token), &vector.body, Some(signature))
            .is_ok()
    );

    let body = String::from_utf8(vector.body.clone()).unwrap();
    for at in 0..body.len() {
        let changed = flipped(&body, at);
        if serde_urlencoded::from_str::<Vec<(String, String)>>(&changed).unwrap()
            == serde_urlencoded::from_str::<Vec<(String, String)>>(&body).unwrap()
        {
            continue; // the same parameters spelled differently (never with this body)
        }
        refused(
            vector.deliver(
                base,
                query,
                Some(token),
                changed.as_bytes(),
                Some(signature),
            ),
            &format!("body byte {at}"),
        );
    }
    for at in 0..signature.len() {
        refused(
            vector.deliver(
                base,
                query,
                Some(token),
                &vector.body,
                Some(&flipped(signature, at)),
            ),
            &format!("signature byte {at}"),
        );
    }
    for at in 0..token.len() {
        refused(
            vector.deliver(
                base,
                query,
                Some(&flipped(token, at)),
                &vector.body,
                Some(signature),
            ),
            &format!("token byte {at}"),
        );
    }
    // Every byte of the path and of the query (the scheme and the port have the variants
    // Twilio's SDKs accept, so they are left alone).
    let path_start = "https://mycompany.com".len();
    for at in path_start..base.len() {
        refused(
            vector.deliver(
                &flipped(base, at),
                query,
                Some(token),
                &vector.body,
                Some(signature),
            ),
            &format!("public URL byte {at}"),
        );
    }
    let query = query.unwrap();
    for at in 0..query.len() {
        refused(
            vector.deliver(
                base,
                Some(&flipped(query, at)),
                Some(token),
                &vector.body,
                Some(signature),
            ),
            &format!("query byte {at}"),
        );
    }
    refused(
        vector.deliver(
            "https://other.example/myapp.php",
            Some(query),
            Some(token),
            &vector.body,
            Some(signature),
        ),
        "another host",
    );
    // A parameter added, or one dropped.
    let mut more = body.clone();
    more.push_str("&Extra=1");
    refused(
        vector.deliver(
            base,
            Some(query),
            Some(token),
            more.as_bytes(),
            Some(signature),
        ),
        "added parameter",
    );
    let fewer = body.split('&').skip(1).collect::<Vec<_>>().join("&");
    refused(
        vector.deliver(
            base,
            Some(query),
            Some(token),
            fewer.as_bytes(),
            Some(signature),
        ),
        "dropped parameter",
    );
    // Posted as JSON, the form's signature does not carry over.
    refused(
        deliver(
            &webhook_provider(base, Some(token)),
            Method::POST,
            Some(query),
            "application/json",
            Some(signature),
            &vector.body,
        ),
        "form body posted as JSON",
    );

    let missing = vector.deliver(base, Some(query), Some(token), &vector.body, None);
    assert!(
        matches!(missing, Err(WebhookError::Signature(_))),
        "{missing:?}"
    );
    let unconfigured = vector.deliver(base, Some(query), None, &vector.body, Some(signature));
    assert!(
        matches!(&unconfigured, Err(WebhookError::NotConfigured(why)) if why.contains("auth_token")),
        "{unconfigured:?}"
    );
}

#[test]
fn any_change_to_a_signed_json_webhook_is_refused() {
    let all = vectors(&serde_json::from_str(SIGNATURE_VECTORS).unwrap());
    let vector = all
        .iter()
        .find(|v| v.id == "json_body_with_bodySHA256")
        .unwrap();
    let (base, query) = vector.split();
    let query = query.unwrap();
    let token = vector.token.as_str();
    let signature = vector.signature.as_str();
    let events = vector
        .deliver(
            base,
            Some(query),
            Some(token),
            &vector.body,
            Some(signature),
        )
        .unwrap();
    assert!(
        matches!(&events[..], [ProviderEvent::Ignored { .. }]),
        "{events:?}"
    );

    let refused = |result: Result<Vec<ProviderEvent>, WebhookError>, what: &str| {
        assert!(
            matches!(result, Err(WebhookError::Signature(_))),
            "{what}: {result:?}"
        );
    };
    let body = String::from_utf8(vector.body.clone()).unwrap();
    for at in 0..body.len() {
        refused(
            vector.deliver(
                base,
                Some(query),
                Some(token),
                flipped(&body, at).as_bytes(),
                Some(signature),
            ),
            &format!("body byte {at}"),
        );
    }
    for at in 0..query.len() {
        refused(
            vector.deliver(
                base,
                Some(&flipped(query, at)),
                Some(token),
                &vector.body,
                Some(signature),
            ),
            &format!("query byte {at}"),
        );
    }
    for at in 0..signature.len() {
        refused(
            vector.deliver(
                base,
                Some(query),
                Some(token),
                &vector.body,
                Some(&flipped(signature, at)),
            ),
            &format!("signature byte {at}"),
        );
    }
    refused(
        vector.deliver(
            base,
            Some(query),
            Some("12346"),
            &vector.body,
            Some(signature),
        ),
        "another token",
    );
    // A new body with its own hash in the URL: the signature covered the old URL.
    let other_body = br#"{"property": "other", "boolean": true}"#;
    let other_hash = dashd::adapter::signature::sha256_hex(other_body);
    let other_query = query.replace(
        "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
        &other_hash,
    );
    refused(
        vector.deliver(
            base,
            Some(&other_query),
            Some(token),
            other_body,
            Some(signature),
        ),
        "body and hash replaced",
    );
    let missing = vector.deliver(base, Some(query), Some(token), &vector.body, None);
    assert!(
        matches!(missing, Err(WebhookError::Signature(_))),
        "{missing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Webhook contents
// ---------------------------------------------------------------------------------------

/// The inbound example of the vectors (constructed from Twilio's parameter table).
const INBOUND_IMAGE: &[(&str, &str)] = &[
    ("SmsMessageSid", "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    ("NumMedia", "1"),
    ("ProfileName", "Jane"),
    ("MessageType", "image"),
    ("SmsSid", "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    ("WaId", "14155551234"),
    ("SmsStatus", "received"),
    ("Body", "look"),
    ("To", "whatsapp:+14155238886"),
    ("MediaContentType0", "image/jpeg"),
    ("MessagingServiceSid", "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    ("NumSegments", "1"),
    ("MessageSid", "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    ("AccountSid", "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    ("From", "whatsapp:+14155551234"),
    (
        "MediaUrl0",
        "https://api.twilio.com/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages/MMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Media/MEXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    ("ApiVersion", "2010-04-01"),
];

#[test]
fn an_inbound_whatsapp_message_with_media() {
    let provider = webhook_provider(PUBLIC_URL, Some(TOKEN));
    let (body, signature) = signed_form(INBOUND_IMAGE);
    let event = one_event(deliver(
        &provider,
        Method::POST,
        None,
        FORM,
        Some(&signature),
        &body,
    ));
    let ProviderEvent::Inbound {
        from,
        provider_message_id,
        body,
        at,
        from_me,
    } = event
    else {
        panic!("not inbound: {event:?}");
    };
    assert_eq!(provider_message_id, "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
    assert_eq!(from.phone.as_deref(), Some("+14155551234"));
    assert_eq!(from.name.as_deref(), Some("Jane"));
    assert_eq!(from.bsuid, None);
    assert_eq!(at, now());
    assert!(!from_me);
    assert_eq!(body.text, "look");
    assert_eq!(body.name.as_deref(), Some("Jane"));
    assert_eq!(body.reply_id, None);
    let attachment = body.attachment.expect("the image");
    assert_eq!(attachment.kind, MediaKind::Image);
    assert_eq!(attachment.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(
        attachment.reference,
        "https://api.twilio.com/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages/MMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Media/MEXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    );
    assert_eq!(body.location, None);
}

#[test]
fn inbound_text_button_reply_and_location() {
    let provider = webhook_provider(PUBLIC_URL, Some(TOKEN));
    let base: &[(&str, &str)] = &[
        ("MessageSid", "SM11111111111111111111111111111111"),
        ("AccountSid", SID),
        ("From", "whatsapp:+5511912345678"),
        ("To", "whatsapp:+14155238886"),
        ("WaId", "5511912345678"),
        ("ProfileName", "Rodrigo"),
        ("NumMedia", "0"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let params: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        let (body, signature) = signed_form(&params);
        match one_event(deliver(
            &provider,
            Method::POST,
            None,
            FORM,
            Some(&signature),
            &body,
        )) {
            ProviderEvent::Inbound { from, body, .. } => (from, body),
            other => panic!("not inbound: {other:?}"),
        }
    };

    let (from, body) = with(&[("Body", "Oi, tudo bem?"), ("MessageType", "text")]);
    assert_eq!(from.phone.as_deref(), Some("+5511912345678"));
    assert_eq!(body.text, "Oi, tudo bem?");
    assert_eq!(body.attachment, None);

    let (_, body) = with(&[
        ("Body", "Yes please"),
        ("ButtonText", "Yes please"),
        ("ButtonPayload", "confirm-42"),
        ("MessageType", "button"),
    ]);
    assert_eq!(body.reply_id.as_deref(), Some("confirm-42"));
    assert_eq!(body.text, "Yes please");

    let (_, body) = with(&[
        ("Latitude", "-23.5505"),
        ("Longitude", "-46.6333"),
        ("Address", "Praça da Sé, São Paulo"),
        ("Label", "Marco Zero"),
        ("MessageType", "location"),
    ]);
    let location = body.location.expect("the location");
    assert_eq!(
        (location.latitude, location.longitude),
        (-23.5505, -46.6333)
    );
    assert_eq!(location.address.as_deref(), Some("Praça da Sé, São Paulo"));
    assert_eq!(location.name.as_deref(), Some("Marco Zero"));
    assert_eq!(body.text, "");
}

#[test]
fn status_callbacks_report_delivery() {
    let provider = webhook_provider(PUBLIC_URL, Some(TOKEN));
    let callback = |status: &str, extra: &[(&str, &str)]| {
        let mut params = vec![
            ("MessageSid", "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            ("SmsSid", "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            ("AccountSid", SID),
            ("From", "whatsapp:+14155238886"),
            ("To", "whatsapp:+15005550006"),
            ("MessageStatus", status),
            ("SmsStatus", status),
            ("ApiVersion", "2010-04-01"),
        ];
        params.extend_from_slice(extra);
        let (body, signature) = signed_form(&params);
        one_event(deliver(
            &provider,
            Method::POST,
            None,
            FORM,
            Some(&signature),
            &body,
        ))
    };

    for (status, expected) in [
        ("sent", DeliveryStatus::Sent),
        ("delivered", DeliveryStatus::Delivered),
        ("read", DeliveryStatus::Read),
    ] {
        match callback(status, &[]) {
            ProviderEvent::Status {
                provider_message_id,
                status,
                error,
                recipient,
                at,
            } => {
                assert_eq!(provider_message_id, "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
                assert_eq!(status, expected);
                assert_eq!(error, None);
                assert_eq!(recipient.phone.as_deref(), Some("+15005550006"));
                assert_eq!(at, now());
            }
            other => panic!("{status}: {other:?}"),
        }
    }
    for (status, extra, code, words) in [
        ("failed", &[("ErrorCode", "63016")][..], "63016", "24-hour"),
        (
            "undelivered",
            &[
                ("ErrorCode", "63024"),
                ("ErrorMessage", "Invalid message recipient"),
            ][..],
            "63024",
            "Invalid message recipient",
        ),
        ("undelivered", &[][..], "undelivered", "undelivered"),
    ] {
        match callback(status, extra) {
            ProviderEvent::Status {
                status: DeliveryStatus::Failed,
                error: Some((error_code, reason)),
                ..
            } => {
                assert_eq!(error_code, code);
                assert!(reason.contains(words), "{reason}");
            }
            other => panic!("{status}: {other:?}"),
        }
    }
    for status in ["queued", "sending", "accepted", "scheduled"] {
        assert!(
            matches!(callback(status, &[]), ProviderEvent::Ignored { .. }),
            "{status}"
        );
    }
}

#[test]
fn a_get_webhook_is_signed_over_its_url() {
    let provider = webhook_provider(PUBLIC_URL, Some(TOKEN));
    let query = serde_urlencoded::to_string(pairs(&[
        ("MessageSid", "SM22222222222222222222222222222222"),
        ("From", "whatsapp:+14155551234"),
        ("To", "whatsapp:+14155238886"),
        ("Body", "hello there"),
        ("NumMedia", "0"),
    ]))
    .unwrap();
    let signature = compute_signature(TOKEN, &format!("{PUBLIC_URL}?{query}"), &[]);
    let event = one_event(deliver(
        &provider,
        Method::GET,
        Some(&query),
        FORM,
        Some(&signature),
        b"",
    ));
    match event {
        ProviderEvent::Inbound { body, .. } => assert_eq!(body.text, "hello there"),
        other => panic!("{other:?}"),
    }
    let tampered = query.replace("hello", "hullo");
    let result = deliver(
        &provider,
        Method::GET,
        Some(&tampered),
        FORM,
        Some(&signature),
        b"",
    );
    assert!(
        matches!(result, Err(WebhookError::Signature(_))),
        "{result:?}"
    );
}

#[test]
fn what_is_not_a_whatsapp_message_is_ignored_or_malformed() {
    let provider = webhook_provider(PUBLIC_URL, Some(TOKEN));
    let parse = |params: &[(&str, &str)]| {
        let (body, signature) = signed_form(params);
        deliver(&provider, Method::POST, None, FORM, Some(&signature), &body)
    };
    // An SMS to the same number.
    let sms = parse(&[
        ("MessageSid", "SM3"),
        ("From", "+14155551234"),
        ("To", "+14155238886"),
        ("Body", "hi"),
    ]);
    assert!(matches!(&sms.unwrap()[..], [ProviderEvent::Ignored { .. }]));
    // Something without a sender.
    let other = parse(&[("AccountSid", SID), ("EventType", "onSomething")]);
    assert!(matches!(
        &other.unwrap()[..],
        [ProviderEvent::Ignored { .. }]
    ));
    // A WhatsApp message without its sid, and a status without one.
    let no_sid = parse(&[("From", "whatsapp:+14155551234"), ("Body", "hi")]);
    assert!(
        matches!(no_sid, Err(WebhookError::Malformed(_))),
        "{no_sid:?}"
    );
    let no_sid = parse(&[("MessageStatus", "delivered"), ("To", "whatsapp:+1415555")]);
    assert!(
        matches!(no_sid, Err(WebhookError::Malformed(_))),
        "{no_sid:?}"
    );
}
