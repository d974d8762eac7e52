//! The Cloud API providers: `meta` (the WhatsApp Business Cloud API on Meta's Graph API)
//! and `official` (an endpoint that speaks the same message format behind its own base
//! URL, path and auth header, as a Business Solution Provider such as 360dialog offers).
//! One [`CloudApi`] serves both; only where requests go and how they authenticate differ.
//!
//! Sending turns a [`Content`] into the documented `POST .../messages` body (reply buttons
//! or a list for menus that fit, numbered text for the rest) and classifies failures from
//! Graph's error body. Webhooks are verified with `X-Hub-Signature-256` before anything is
//! parsed, then normalised: inbound messages, delivery statuses, BSUID changes.
//!
//! Customers are addressed by phone number when one is known and by business-scoped user
//! id (BSUID) otherwise; webhooks are read in both shapes, with and without phone numbers.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::api::{Attachment, Choice, Location, MessageBody, SharedContact};
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ConfigError, ContactIds, Content, DEFAULT_LIST_BUTTON, DeliveryStatus, MediaSource,
    OutboundMessage, ProbeReport, ProviderConfig, ProviderEvent, Recipient, SEND_TIMEOUT, Secret,
    SendError, SendReceipt, WebhookError, WebhookRequest, WhatsAppProvider, e164, excerpt,
    numbered_text, signature,
};

/// The message path on Meta's Graph API.
const GRAPH_MESSAGES_PATH: &str = "/{api_version}/{phone_number_id}/messages";
/// What the probe asks of the phone number's Graph node.
const PROBE_FIELDS: &str = "fields=display_phone_number,verified_name";
/// The header carrying the webhook signature (`sha256=<hex>`).
const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The `object` of every WhatsApp webhook.
const WEBHOOK_OBJECT: &str = "whatsapp_business_account";

/// Reply buttons in one message, at most.
const MAX_BUTTONS: usize = 3;
/// A reply button's title, in characters.
const BUTTON_TITLE_MAX: usize = 20;
/// A reply button's id, in characters.
const BUTTON_ID_MAX: usize = 256;
/// The body of a reply-button message, in characters.
const BUTTON_BODY_MAX: usize = 1024;
/// Rows of a list message, at most (all sections together).
const MAX_LIST_ROWS: usize = 10;
/// A list row's title, in characters.
const ROW_TITLE_MAX: usize = 24;
/// A list row's id, in characters.
const ROW_ID_MAX: usize = 200;
/// The body of a list message, in characters.
const LIST_BODY_MAX: usize = 4096;
/// The label of the button that opens a list, in characters.
const LIST_BUTTON_MAX: usize = 20;

/// A Cloud API provider instance (`meta` or `official`) for one bot.
#[derive(Debug, Clone)]
pub struct CloudApi {
    kind: ProviderKind,
    http: reqwest::Client,
    /// Where messages are posted.
    messages_url: Url,
    /// The phone number's Graph node, when the endpoint has one to probe.
    probe_url: Option<Url>,
    /// The business phone number this instance sends from and takes webhooks for. An
    /// `official` instance without one takes every webhook change it is given.
    phone_number_id: Option<String>,
    auth_header: HeaderName,
    /// The whole auth header value: `Bearer <token>`, or the bare token.
    auth_value: Secret,
    /// The token alone, to keep it out of error messages.
    access_token: Secret,
    app_secret: Option<Secret>,
    verify_token: Option<Secret>,
}

impl CloudApi {
    /// A provider from a `meta` or `official` chain entry's settings and secrets.
    ///
    /// `meta` posts to `{base_url}/{api_version}/{phone_number_id}/messages` with
    /// `Authorization: Bearer <access_token>`. `official` posts to `{base_url}{path}`
    /// (`{api_version}` and `{phone_number_id}` substituted) with the token in
    /// `auth_header`: `Authorization` gets `Bearer <token>`, any other header the bare
    /// token. The app secret and verify token are optional here: without them sending
    /// works and webhooks are refused as not configured.
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Result<Self, ConfigError> {
        let kind = config.kind;
        if !matches!(kind, ProviderKind::Meta | ProviderKind::Official) {
            return Err(ConfigError(format!("{kind} is not a Cloud API provider")));
        }
        let base_url = config.required("base_url")?.trim().trim_end_matches('/');
        let api_version = path_segment(kind, "api_version", config.required("api_version")?)?;
        let phone_number_id = match kind {
            ProviderKind::Meta => Some(config.required("phone_number_id")?),
            _ => config.setting("phone_number_id"),
        }
        .map(|id| path_segment(kind, "phone_number_id", id))
        .transpose()?;

        let path_template = match kind {
            ProviderKind::Meta => GRAPH_MESSAGES_PATH,
            _ => config.required("path")?.trim(),
        };
        let path = expand_path(kind, path_template, api_version, phone_number_id)?;
        let messages_url = endpoint(kind, &format!("{base_url}{path}"))?;
        // An `official` endpoint has a Graph-shaped phone number node only when its
        // message path names the phone number; 360dialog's `/messages` does not.
        let graph_shaped =
            kind == ProviderKind::Meta || path_template.contains("{phone_number_id}");
        let probe_url = match phone_number_id {
            Some(id) if graph_shaped => Some(endpoint(
                kind,
                &format!("{base_url}/{api_version}/{id}?{PROBE_FIELDS}"),
            )?),
            _ => None,
        };

        let header_name = match kind {
            ProviderKind::Meta => "Authorization",
            _ => config.required("auth_header")?.trim(),
        };
        let auth_header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
            ConfigError(format!(
                "{kind}: auth_header {header_name:?} is not a header name"
            ))
        })?;
        let access_token = config.required_secret("access_token")?.clone();
        let token = access_token.expose().trim();
        let auth_value = if auth_header == AUTHORIZATION {
            Secret::new(format!("Bearer {token}"))
        } else {
            Secret::new(token)
        };
        if HeaderValue::from_str(auth_value.expose()).is_err() {
            return Err(ConfigError(format!(
                "{kind}: the access_token holds characters an HTTP header cannot carry"
            )));
        }

        Ok(Self {
            kind,
            http,
            messages_url,
            probe_url,
            phone_number_id: phone_number_id.map(str::to_owned),
            auth_header,
            auth_value,
            access_token,
            app_secret: config.secret("app_secret").cloned(),
            verify_token: config.secret("verify_token").cloned(),
        })
    }

    /// The business phone number id this instance serves, if it has one.
    pub fn phone_number_id(&self) -> Option<&str> {
        self.phone_number_id.as_deref()
    }

    /// The auth header, marked sensitive so that no debug output shows it.
    fn auth(&self) -> Result<(HeaderName, HeaderValue), SendError> {
        // Checked when the provider was built; kept as an error rather than a panic.
        let mut value = HeaderValue::from_str(self.auth_value.expose()).map_err(|_| {
            SendError::broken(format!(
                "{}: the access token is not a header value",
                self.kind
            ))
        })?;
        value.set_sensitive(true);
        Ok((self.auth_header.clone(), value))
    }

    /// A failed call's error, classified, with the token removed from its text.
    fn failure(&self, status: u16, body: &str) -> SendError {
        let mut error = classify_failure(status, body);
        error.message = scrub(&error.message, self.access_token.expose());
        error
    }

    /// Checks `X-Hub-Signature-256` against the raw body.
    fn verify_signature(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookError> {
        let Some(app_secret) = &self.app_secret else {
            return Err(WebhookError::NotConfigured(format!(
                "{} needs the secret app_secret to verify X-Hub-Signature-256",
                self.kind
            )));
        };
        let header = request
            .headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| WebhookError::Signature("no X-Hub-Signature-256 header".into()))?;
        let header = header
            .to_str()
            .map_err(|_| WebhookError::Signature("X-Hub-Signature-256 is not text".into()))?
            .trim();
        let hex = header
            .get(..7)
            .filter(|prefix| prefix.eq_ignore_ascii_case("sha256="))
            .and_then(|_| header.get(7..))
            .ok_or_else(|| WebhookError::Signature("X-Hub-Signature-256 lacks sha256=".into()))?;
        if signature::verify_sha256_hex(app_secret.expose().as_bytes(), request.body, hex) {
            Ok(())
        } else {
            Err(WebhookError::Signature(
                "X-Hub-Signature-256 does not match the body".into(),
            ))
        }
    }

    /// Whether a webhook change is for this instance's phone number. Changes that name
    /// no phone number (and every change, for an instance without one) are taken.
    fn serves(&self, change: &Change) -> bool {
        let theirs = change
            .value
            .pointer("/metadata/phone_number_id")
            .and_then(text_of);
        match (&self.phone_number_id, theirs) {
            (Some(mine), Some(theirs)) => *mine == theirs,
            _ => true,
        }
    }
}

#[async_trait]
impl WhatsAppProvider for CloudApi {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// Posts one message. The receipt holds `messages[0].id` of the answer; for a read
    /// receipt (answered `{"success": true}`) it holds the id of the message marked read.
    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let body = request_body(&message.to, &message.content)?;
        let (header, value) = self.auth()?;
        let response = self
            .http
            .post(self.messages_url.clone())
            .header(header, value)
            .json(&body)
            .timeout(SEND_TIMEOUT)
            .send()
            .await
            .map_err(|err| SendError::transport(&err))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|err| SendError::transport(&err))?;
        if !(200..300).contains(&status) {
            return Err(self.failure(status, &text));
        }
        match &message.content {
            Content::MarkRead { message_id } => read_receipt(&text, message_id),
            _ => message_receipt(&text),
        }
        .map_err(|mut err| {
            err.message = scrub(&err.message, self.access_token.expose());
            err
        })
    }

    fn parse_webhook(
        &self,
        request: &WebhookRequest<'_>,
    ) -> Result<Vec<ProviderEvent>, WebhookError> {
        self.verify_signature(request)?;
        let envelope: Envelope = serde_json::from_slice(request.body)
            .map_err(|err| WebhookError::Malformed(json_problem(&err)))?;
        if envelope.object != WEBHOOK_OBJECT {
            return Err(WebhookError::Malformed(format!(
                "object is {:?}, not {WEBHOOK_OBJECT}",
                excerpt(&envelope.object)
            )));
        }
        let mut events = Vec::new();
        for change in envelope.entry.iter().flat_map(|entry| &entry.changes) {
            if self.serves(change) {
                events.extend(change_events(change, request.now));
            }
        }
        Ok(events)
    }

    /// Answers Meta's `GET` verification: `hub.mode=subscribe` and a `hub.verify_token`
    /// equal to the verify token give back `hub.challenge`.
    fn challenge(&self, query: &str) -> Result<String, WebhookError> {
        let Some(verify_token) = &self.verify_token else {
            return Err(WebhookError::NotConfigured(format!(
                "{} needs the secret verify_token to answer the webhook verification",
                self.kind
            )));
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
            WebhookError::Malformed("the verification query is not form-encoded".into())
        })?;
        let param = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        if param("hub.mode") != Some("subscribe") {
            return Err(WebhookError::Signature("hub.mode is not subscribe".into()));
        }
        let given = param("hub.verify_token").unwrap_or_default();
        if !signature::equal(given.as_bytes(), verify_token.expose().as_bytes()) {
            return Err(WebhookError::Signature(
                "hub.verify_token does not match".into(),
            ));
        }
        // Meta sends a number; anything else is not echoed back into a response body.
        param("hub.challenge")
            .filter(|challenge| is_plain_token(challenge))
            .map(str::to_owned)
            .ok_or_else(|| {
                WebhookError::Malformed("hub.challenge is missing or not a plain token".into())
            })
    }

    /// Reads the phone number's Graph node (`display_phone_number`, `verified_name`) with
    /// the token. An `official` endpoint without such a node (no phone number id, or a
    /// path that does not name it) has nothing to read: the probe reports that and
    /// succeeds, so that the next send is what checks the token.
    async fn probe(&self) -> Result<ProbeReport, SendError> {
        let Some(url) = &self.probe_url else {
            return Ok(ProbeReport {
                detail: format!(
                    "{} endpoint {} configured; it has no phone number node to check, so the next send checks the token",
                    self.kind,
                    self.messages_url.host_str().unwrap_or_default()
                ),
            });
        };
        let (header, value) = self.auth()?;
        let response = self
            .http
            .get(url.clone())
            .header(header, value)
            .timeout(SEND_TIMEOUT)
            .send()
            .await
            .map_err(|err| SendError::transport(&err))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|err| SendError::transport(&err))?;
        if !(200..300).contains(&status) {
            return Err(self.failure(status, &text));
        }
        let node: PhoneNumberNode = serde_json::from_str(&text).unwrap_or_default();
        let id = self.phone_number_id.as_deref().unwrap_or_default();
        let detail = match (node.display_phone_number, node.verified_name) {
            (Some(number), Some(name)) => format!("phone number {number} ({name}) reachable"),
            (Some(number), None) => format!("phone number {number} reachable"),
            _ => format!("phone number id {id} reachable"),
        };
        Ok(ProbeReport {
            detail: scrub(&excerpt(&detail), self.access_token.expose()),
        })
    }
}

/// The distinct `metadata.phone_number_id`s of a webhook body, in order of appearance.
///
/// The body is NOT verified here: this only routes a shared callback (`/webhook/meta`) to
/// the bots that serve those numbers, each of which then verifies the signature with its
/// own app secret before trusting anything in it. A body that is not JSON names none.
pub fn phone_number_ids(body: &[u8]) -> Vec<String> {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    envelope
        .entry
        .iter()
        .flat_map(|entry| &entry.changes)
        .filter_map(|change| {
            change
                .value
                .pointer("/metadata/phone_number_id")
                .and_then(text_of)
        })
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Settings

/// A setting used as one URL path segment: letters, digits, `.`, `_`, `-`.
fn path_segment<'a>(
    kind: ProviderKind,
    name: &str,
    value: &'a str,
) -> Result<&'a str, ConfigError> {
    let value = value.trim();
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        Ok(value)
    } else {
        Err(ConfigError(format!(
            "{kind}: {name} {value:?} must be letters, digits, '.', '_' or '-'"
        )))
    }
}

/// The message path with `{api_version}` and `{phone_number_id}` filled in.
fn expand_path(
    kind: ProviderKind,
    template: &str,
    api_version: &str,
    phone_number_id: Option<&str>,
) -> Result<String, ConfigError> {
    if template.contains("{phone_number_id}") && phone_number_id.is_none() {
        return Err(ConfigError(format!(
            "{kind}: the path {template:?} uses {{phone_number_id}}: set phone_number_id"
        )));
    }
    let path = template
        .replace("{api_version}", api_version)
        .replace("{phone_number_id}", phone_number_id.unwrap_or_default());
    if path.contains(['{', '}']) {
        return Err(ConfigError(format!(
            "{kind}: the path {template:?} has a placeholder other than {{api_version}} and {{phone_number_id}}"
        )));
    }
    Ok(if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    })
}

/// An `http(s)` URL with a host.
fn endpoint(kind: ProviderKind, url: &str) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url)
        .map_err(|err| ConfigError(format!("{kind}: {url:?} is not a URL ({err})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ConfigError(format!(
            "{kind}: {url:?} must be an http:// or https:// URL"
        )));
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------------------
// Sending

/// The JSON body that sends `content` to `to`.
fn request_body(to: &Recipient, content: &Content) -> Result<Value, SendError> {
    if let Content::MarkRead { message_id } = content {
        let message_id = required_text(message_id, "a read receipt needs the message id")?;
        return Ok(json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        }));
    }
    let mut body = Map::new();
    body.insert("messaging_product".into(), json!("whatsapp"));
    body.insert("recipient_type".into(), json!("individual"));
    // The phone number when known (Meta's recommendation; `to` wins over `recipient`
    // anyway), the BSUID otherwise.
    match (to.phone.as_deref().and_then(e164), &to.bsuid) {
        (Some(phone), _) => body.insert("to".into(), json!(phone)),
        (None, Some(bsuid)) if !bsuid.trim().is_empty() => {
            body.insert("recipient".into(), json!(bsuid.trim()))
        }
        _ => {
            return Err(SendError::permanent(
                "the contact has neither a phone number nor a BSUID the Cloud API can address",
            ));
        }
    };
    let (kind, payload) = content_part(content)?;
    body.insert("type".into(), json!(kind));
    body.insert(kind.into(), payload);
    if let Content::Text {
        reply_to: Some(reply_to),
        ..
    } = content
        && !reply_to.trim().is_empty()
    {
        body.insert("context".into(), json!({ "message_id": reply_to.trim() }));
    }
    Ok(Value::Object(body))
}

/// The message `type` and its object.
fn content_part(content: &Content) -> Result<(&'static str, Value), SendError> {
    match content {
        Content::Text {
            body, preview_url, ..
        } => text_part(body, *preview_url),
        Content::Media {
            kind,
            source,
            caption,
            filename,
        } => media_part(*kind, source, caption.as_deref(), filename.as_deref()),
        Content::Menu {
            body,
            choices,
            button,
        } => menu_part(body, choices, button),
        Content::Template {
            name,
            language,
            parameters,
        } => {
            let name = required_text(name, "a template needs its name")?;
            let language = required_text(language, "a template needs its language code")?;
            let mut template = json!({ "name": name, "language": { "code": language } });
            if !parameters.is_empty() {
                let parameters: Vec<Value> = parameters
                    .iter()
                    .map(|text| json!({ "type": "text", "text": text }))
                    .collect();
                template["components"] = json!([{ "type": "body", "parameters": parameters }]);
            }
            Ok(("template", template))
        }
        Content::Reaction { message_id, emoji } => {
            let message_id = required_text(message_id, "a reaction needs the message id")?;
            Ok((
                "reaction",
                json!({ "message_id": message_id, "emoji": emoji }),
            ))
        }
        Content::Location(location) => location_part(location),
        Content::MarkRead { .. } => {
            Err(SendError::permanent("a read receipt is not a message part"))
        }
    }
}

fn text_part(body: &str, preview_url: bool) -> Result<(&'static str, Value), SendError> {
    if body.trim().is_empty() {
        return Err(SendError::permanent("the text is empty"));
    }
    Ok(("text", json!({ "body": body, "preview_url": preview_url })))
}

fn media_part(
    kind: MediaKind,
    source: &MediaSource,
    caption: Option<&str>,
    filename: Option<&str>,
) -> Result<(&'static str, Value), SendError> {
    let kind = media_type(kind);
    let mut media = Map::new();
    match source {
        MediaSource::Link(link) => media.insert(
            "link".into(),
            json!(required_text(link, "media needs a link")?),
        ),
        MediaSource::Id(id) => {
            media.insert("id".into(), json!(required_text(id, "media needs an id")?))
        }
    };
    // Audio takes no caption; only documents take a file name.
    if let Some(caption) = caption.filter(|c| !c.trim().is_empty() && kind != "audio") {
        media.insert("caption".into(), json!(caption));
    }
    if let Some(filename) = filename.filter(|f| !f.trim().is_empty() && kind == "document") {
        media.insert("filename".into(), json!(filename.trim()));
    }
    Ok((kind, Value::Object(media)))
}

fn media_type(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "image",
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
        MediaKind::Document => "document",
    }
}

/// Reply buttons when the menu fits them, else a list when it fits one, else numbered
/// text. A menu without a body text becomes numbered text too: WhatsApp requires an
/// interactive message's body, and the numbered choices read as one on their own.
fn menu_part(
    body: &str,
    choices: &[Choice],
    button: &str,
) -> Result<(&'static str, Value), SendError> {
    if !body.trim().is_empty() && !choices.is_empty() {
        if fits_buttons(body, choices) {
            let buttons: Vec<Value> = choices
                .iter()
                .map(|choice| json!({ "type": "reply", "reply": { "id": choice.id, "title": choice.label } }))
                .collect();
            return Ok((
                "interactive",
                json!({ "type": "button", "body": { "text": body }, "action": { "buttons": buttons } }),
            ));
        }
        if fits_list(body, choices) {
            let rows: Vec<Value> = choices
                .iter()
                .map(|choice| json!({ "id": choice.id, "title": choice.label }))
                .collect();
            return Ok((
                "interactive",
                json!({
                    "type": "list",
                    "body": { "text": body },
                    "action": { "button": list_button(button), "sections": [{ "rows": rows }] },
                }),
            ));
        }
    }
    text_part(&numbered_text(body, choices), false)
}

fn fits_buttons(body: &str, choices: &[Choice]) -> bool {
    choices.len() <= MAX_BUTTONS
        && body.chars().count() <= BUTTON_BODY_MAX
        && fits_labels(choices, BUTTON_TITLE_MAX, BUTTON_ID_MAX)
        // Buttons with the same title cannot be told apart.
        && distinct(choices.iter().map(|choice| choice.label.as_str()))
}

fn fits_list(body: &str, choices: &[Choice]) -> bool {
    choices.len() <= MAX_LIST_ROWS
        && body.chars().count() <= LIST_BODY_MAX
        && fits_labels(choices, ROW_TITLE_MAX, ROW_ID_MAX)
}

/// Every label and id non-empty and within its limit, and the ids distinct.
fn fits_labels(choices: &[Choice], label_max: usize, id_max: usize) -> bool {
    let within = |text: &str, max: usize| !text.trim().is_empty() && text.chars().count() <= max;
    choices
        .iter()
        .all(|choice| within(&choice.label, label_max) && within(&choice.id, id_max))
        && distinct(choices.iter().map(|choice| choice.id.as_str()))
}

fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> bool {
    let mut seen = BTreeSet::new();
    items.into_iter().all(|item| seen.insert(item))
}

/// The label of the list's button: the given one cut to 20 characters, or the default.
fn list_button(button: &str) -> String {
    let button = button.trim();
    let button = if button.is_empty() {
        DEFAULT_LIST_BUTTON
    } else {
        button
    };
    button
        .chars()
        .take(LIST_BUTTON_MAX)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

fn location_part(location: &Location) -> Result<(&'static str, Value), SendError> {
    if !location.latitude.is_finite() || !location.longitude.is_finite() {
        return Err(SendError::permanent(
            "the location's coordinates are not numbers",
        ));
    }
    let mut part = json!({ "latitude": location.latitude, "longitude": location.longitude });
    if let Some(name) = location.name.as_deref().filter(|n| !n.trim().is_empty()) {
        part["name"] = json!(name);
    }
    if let Some(address) = location.address.as_deref().filter(|a| !a.trim().is_empty()) {
        part["address"] = json!(address);
    }
    Ok(("location", part))
}

/// `text` trimmed, or a permanent error saying what is missing.
fn required_text<'a>(text: &'a str, missing: &str) -> Result<&'a str, SendError> {
    let text = text.trim();
    if text.is_empty() {
        Err(SendError::permanent(missing))
    } else {
        Ok(text)
    }
}

/// `messages[0].id` of a send response.
fn message_receipt(body: &str) -> Result<SendReceipt, SendError> {
    let id = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| value.pointer("/messages/0/id").and_then(text_of))
        .filter(|id| !id.is_empty());
    match id {
        Some(provider_message_id) => Ok(SendReceipt {
            provider_message_id,
        }),
        None => Err(SendError::retryable(format!(
            "the Cloud API answered 200 without a message id: {}",
            excerpt(body)
        ))),
    }
}

/// `{"success": true}` for a read receipt; its receipt names the message marked read.
fn read_receipt(body: &str, message_id: &str) -> Result<SendReceipt, SendError> {
    let success = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| value.get("success").and_then(Value::as_bool))
        .unwrap_or(false);
    if success {
        Ok(SendReceipt {
            provider_message_id: message_id.trim().to_owned(),
        })
    } else {
        Err(SendError::retryable(format!(
            "the Cloud API did not confirm the read receipt: {}",
            excerpt(body)
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// Graph's error response: `{"error": {"message", "type", "code", "error_data": {"details"}}}`.
#[derive(Debug, Deserialize)]
struct GraphErrorBody {
    error: ErrorObject,
}

/// An error object, as in Graph error responses and in webhooks' `errors` arrays.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorObject {
    /// A number from Meta; some resellers re-serialise it as a string.
    code: Option<Value>,
    title: Option<String>,
    message: Option<String>,
    error_data: Option<ErrorData>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorData {
    details: Option<String>,
}

impl ErrorObject {
    fn code(&self) -> Option<i64> {
        match self.code.as_ref()? {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    fn details(&self) -> Option<&str> {
        self.error_data
            .as_ref()
            .and_then(|data| data.details.as_deref())
            .map(str::trim)
            .filter(|details| !details.is_empty())
    }

    /// `(#code) message: details`, one line.
    fn describe(&self) -> String {
        let head = self
            .message
            .as_deref()
            .or(self.title.as_deref())
            .map(str::trim)
            .unwrap_or_default();
        let mut text = match self.code() {
            // Graph's messages already start with `(#code)`.
            Some(code) if !head.starts_with("(#") => format!("(#{code}) {head}"),
            _ => head.to_owned(),
        };
        if let Some(details) = self.details().filter(|details| *details != head) {
            text.push_str(": ");
            text.push_str(details);
        }
        excerpt(&text)
    }
}

/// A failed call's class and text, from its HTTP status and (when it is Graph's) error
/// body. Rate limits and transient server errors first (they are retried, whatever the
/// status); then what breaks the provider for the bot (auth, permissions, policy blocks,
/// any 401 or 403); then what fails only this message; then the status alone.
fn classify_failure(status: u16, body: &str) -> SendError {
    let graph = serde_json::from_str::<GraphErrorBody>(body)
        .ok()
        .map(|body| body.error);
    let code = graph.as_ref().and_then(ErrorObject::code);
    let class = class_of(code, status);
    let message = match &graph {
        Some(error) if !error.describe().is_empty() => error.describe(),
        _ if body.trim().is_empty() => format!("HTTP {status}"),
        _ => excerpt(&format!("HTTP {status}: {}", excerpt(body))),
    };
    SendError {
        class,
        code: Some(code.map_or_else(|| status.to_string(), |code| code.to_string())),
        message,
    }
}

fn class_of(code: Option<i64>, status: u16) -> ErrorClass {
    if let Some(code) = code {
        if matches!(
            code,
            1 | 2 | 4 | 80007 | 130429 | 131000 | 131016 | 131048 | 131056 | 133016
        ) {
            return ErrorClass::Retryable;
        }
        if matches!(code, 0 | 3 | 10 | 190 | 200..=299 | 368 | 131031) {
            return ErrorClass::ProviderBroken;
        }
    }
    if matches!(status, 401 | 403) {
        return ErrorClass::ProviderBroken;
    }
    if let Some(code) = code
        && matches!(
            code,
            100 | 131008
                | 131009
                | 131021
                | 131026
                | 131047
                | 131051
                | 131052
                | 131053
                | 131062
                | 132000..=132016
        )
    {
        return ErrorClass::Permanent;
    }
    match status {
        408 | 429 | 500..=599 => ErrorClass::Retryable,
        400..=499 => ErrorClass::Permanent,
        _ => ErrorClass::Retryable,
    }
}

/// `text` with every occurrence of `secret` masked.
fn scrub(text: &str, secret: &str) -> String {
    let secret = secret.trim();
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "***")
    }
}

// ---------------------------------------------------------------------------------------
// Webhooks

/// `{"object": "whatsapp_business_account", "entry": [{"changes": [...]}]}`.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Entry {
    changes: Vec<Change>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Change {
    field: String,
    value: Value,
}

/// The `value` of a `messages` (or `smb_message_echoes`) change. Items are kept as JSON
/// and read one by one, so one odd item does not cost the others.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessagesValue {
    contacts: Vec<Value>,
    messages: Vec<Value>,
    statuses: Vec<Value>,
    errors: Vec<Value>,
    message_echoes: Vec<Value>,
}

/// A customer as `value.contacts[]` describes them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WebhookContact {
    wa_id: Option<String>,
    user_id: Option<String>,
    parent_user_id: Option<String>,
    profile: Profile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Profile {
    name: Option<String>,
    username: Option<String>,
}

/// One of `value.messages[]` (or `value.message_echoes[]`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WebhookMessage {
    id: Option<String>,
    from: Option<String>,
    from_user_id: Option<String>,
    from_parent_user_id: Option<String>,
    /// The customer, on echoes of what the business sent from its own app.
    to: Option<String>,
    to_user_id: Option<String>,
    to_parent_user_id: Option<String>,
    timestamp: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<TextPart>,
    image: Option<MediaPart>,
    video: Option<MediaPart>,
    audio: Option<MediaPart>,
    document: Option<MediaPart>,
    sticker: Option<MediaPart>,
    interactive: Option<InteractivePart>,
    button: Option<ButtonPart>,
    location: Option<LocationPart>,
    contacts: Vec<ContactCard>,
    system: Option<SystemPart>,
    errors: Vec<ErrorObject>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TextPart {
    body: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MediaPart {
    id: Option<String>,
    url: Option<String>,
    mime_type: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InteractivePart {
    #[serde(rename = "type")]
    kind: String,
    button_reply: Option<ReplyPart>,
    list_reply: Option<ReplyPart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplyPart {
    id: String,
    title: String,
}

/// A template's quick-reply button tap.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ButtonPart {
    text: String,
    payload: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LocationPart {
    latitude: f64,
    longitude: f64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

/// A shared contact card.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContactCard {
    name: CardName,
    phones: Vec<CardPhone>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CardName {
    formatted_name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CardPhone {
    phone: Option<String>,
    wa_id: Option<String>,
}

/// A `system` message: the customer changed number or BSUID.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SystemPart {
    #[serde(rename = "type")]
    kind: String,
    user_id: Option<String>,
    previous_user_id: Option<String>,
}

/// One of `value.statuses[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WebhookStatus {
    id: Option<String>,
    status: String,
    timestamp: Option<Value>,
    recipient_id: Option<String>,
    recipient_user_id: Option<String>,
    recipient_parent_user_id: Option<String>,
    recipient_type: Option<String>,
    errors: Vec<ErrorObject>,
}

/// What the probe reads of the phone number's node.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PhoneNumberNode {
    display_phone_number: Option<String>,
    verified_name: Option<String>,
}

/// The events of one webhook change.
fn change_events(change: &Change, now: DateTime<Utc>) -> Vec<ProviderEvent> {
    match change.field.as_str() {
        "messages" | "smb_message_echoes" => match MessagesValue::deserialize(&change.value) {
            Ok(value) => messages_events(&value, now),
            Err(err) => vec![ignored(
                &format!("malformed {}", change.field),
                &err.to_string(),
            )],
        },
        "user_id_update" => user_id_updates(&change.value, now),
        "" => vec![ProviderEvent::Ignored {
            kind: "change without field".into(),
        }],
        field => vec![ProviderEvent::Ignored {
            kind: field.to_owned(),
        }],
    }
}

fn messages_events(value: &MessagesValue, now: DateTime<Utc>) -> Vec<ProviderEvent> {
    let contacts: Vec<WebhookContact> = value
        .contacts
        .iter()
        .filter_map(|contact| WebhookContact::deserialize(contact).ok())
        .collect();
    let mut events = Vec::new();
    for message in &value.messages {
        events.push(match WebhookMessage::deserialize(message) {
            Ok(message) => message_event(&message, &contacts, now),
            Err(err) => ignored("malformed message", &err.to_string()),
        });
    }
    for echo in &value.message_echoes {
        events.push(match WebhookMessage::deserialize(echo) {
            Ok(echo) => echo_event(&echo, &contacts, now),
            Err(err) => ignored("malformed message echo", &err.to_string()),
        });
    }
    for status in &value.statuses {
        events.push(match WebhookStatus::deserialize(status) {
            Ok(status) => status_event(&status, &contacts, now),
            Err(err) => ignored("malformed status", &err.to_string()),
        });
    }
    for error in &value.errors {
        let error = ErrorObject::deserialize(error).unwrap_or_default();
        let code = error
            .code()
            .map_or_else(|| "unknown".to_owned(), |code| code.to_string());
        tracing::warn!(code = %code, error = %error.describe(), "the Cloud API reported an error");
        events.push(ProviderEvent::Ignored {
            kind: format!("error:{code}"),
        });
    }
    if events.is_empty() {
        events.push(ProviderEvent::Ignored {
            kind: "messages:empty".into(),
        });
    }
    events
}

/// An event counted and otherwise dropped, logged with why.
fn ignored(kind: &str, why: &str) -> ProviderEvent {
    tracing::warn!(kind, why, "Cloud API webhook item not understood");
    ProviderEvent::Ignored {
        kind: kind.to_owned(),
    }
}

/// An inbound message (or a system message about the customer's identifiers).
fn message_event(
    message: &WebhookMessage,
    contacts: &[WebhookContact],
    now: DateTime<Utc>,
) -> ProviderEvent {
    let at = time_of(message.timestamp.as_ref(), now);
    let kind = message.kind.as_deref().unwrap_or_default();
    if kind == "system" {
        return system_event(message, at);
    }
    let from = contact_ids(
        message.from.as_deref(),
        message.from_user_id.as_deref(),
        message.from_parent_user_id.as_deref(),
        contacts,
    );
    let body = match message_body(message) {
        Ok(body) => body,
        Err(kind) => return ProviderEvent::Ignored { kind },
    };
    let Some(id) = message.id.as_deref().filter(|id| !id.is_empty()) else {
        return ignored("message without id", kind);
    };
    if from.is_empty() {
        return ignored("message without sender", kind);
    }
    ProviderEvent::Inbound {
        body: MessageBody {
            name: from.name.clone(),
            ..body
        },
        from,
        provider_message_id: id.to_owned(),
        at,
        from_me: false,
    }
}

/// A message the business sent from the WhatsApp Business app (coexistence), echoed.
fn echo_event(
    echo: &WebhookMessage,
    contacts: &[WebhookContact],
    now: DateTime<Utc>,
) -> ProviderEvent {
    let at = time_of(echo.timestamp.as_ref(), now);
    let kind = echo.kind.as_deref().unwrap_or_default();
    let to = contact_ids(
        echo.to.as_deref(),
        echo.to_user_id.as_deref(),
        echo.to_parent_user_id.as_deref(),
        contacts,
    );
    let body = match message_body(echo) {
        Ok(body) => body,
        Err(kind) => {
            return ProviderEvent::Ignored {
                kind: format!("echo:{kind}"),
            };
        }
    };
    let Some(id) = echo.id.as_deref().filter(|id| !id.is_empty()) else {
        return ignored("message echo without id", kind);
    };
    if to.is_empty() {
        return ignored("message echo without recipient", kind);
    }
    ProviderEvent::Inbound {
        from: to,
        provider_message_id: id.to_owned(),
        body,
        at,
        from_me: true,
    }
}

/// What a message says, or the kind to count it under when DashOffice does not act on it.
///
/// Text is the text; media is an [`Attachment`] named by its media id with the caption as
/// text (stickers count as images); a button or list reply gives its id as `reply_id` and
/// its title as text, as does a template's quick-reply button (payload and text); a
/// location gives its name as text; shared contact cards have no text. Reactions are not
/// answers to anything a flow asks, so they are counted, not passed on; so are
/// `unsupported` messages and types DashOffice does not know.
fn message_body(message: &WebhookMessage) -> Result<MessageBody, String> {
    let kind = message.kind.as_deref().unwrap_or_default();
    match kind {
        "text" => {
            let text = message.text.as_ref().map(|text| text.body.clone());
            Ok(MessageBody {
                text: text.unwrap_or_default(),
                ..MessageBody::default()
            })
        }
        "image" | "video" | "audio" | "document" | "sticker" => {
            let part = match kind {
                "image" => &message.image,
                "video" => &message.video,
                "audio" => &message.audio,
                "document" => &message.document,
                _ => &message.sticker,
            };
            media_body(kind, part.as_ref()).ok_or_else(|| format!("{kind} without media id"))
        }
        "interactive" => {
            let interactive = message.interactive.as_ref();
            let reply = interactive.and_then(|part| match part.kind.as_str() {
                "button_reply" => part.button_reply.as_ref(),
                "list_reply" => part.list_reply.as_ref(),
                _ => None,
            });
            match reply {
                Some(reply) => Ok(MessageBody {
                    text: reply.title.clone(),
                    reply_id: Some(reply.id.clone()).filter(|id| !id.is_empty()),
                    ..MessageBody::default()
                }),
                None => Err(format!(
                    "interactive:{}",
                    interactive
                        .map(|part| part.kind.as_str())
                        .unwrap_or_default()
                )),
            }
        }
        "button" => {
            let button = message.button.as_ref().ok_or("button without button")?;
            Ok(MessageBody {
                text: button.text.clone(),
                reply_id: button.payload.clone().filter(|payload| !payload.is_empty()),
                ..MessageBody::default()
            })
        }
        "location" => {
            let location = message
                .location
                .as_ref()
                .ok_or("location without location")?;
            Ok(MessageBody {
                text: location.name.clone().unwrap_or_default(),
                location: Some(Location {
                    latitude: location.latitude,
                    longitude: location.longitude,
                    name: location.name.clone(),
                    address: location.address.clone(),
                }),
                ..MessageBody::default()
            })
        }
        "contacts" => Ok(MessageBody {
            contacts: message.contacts.iter().map(shared_contact).collect(),
            ..MessageBody::default()
        }),
        "unsupported" => {
            if let Some(error) = message.errors.first() {
                tracing::info!(error = %error.describe(), "unsupported WhatsApp message");
            }
            Err("unsupported".into())
        }
        "" => Err("message without type".into()),
        other => Err(other.to_owned()),
    }
}

/// Media the Cloud API holds, named by its media id (the download URL when it has none).
fn media_body(kind: &str, part: Option<&MediaPart>) -> Option<MessageBody> {
    let part = part?;
    let reference = part
        .id
        .clone()
        .or_else(|| part.url.clone())
        .filter(|reference| !reference.is_empty())?;
    let media_kind = match kind {
        "video" => MediaKind::Video,
        "audio" => MediaKind::Audio,
        "document" => MediaKind::Document,
        // Stickers are WebP images.
        _ => MediaKind::Image,
    };
    let caption = part.caption.clone().filter(|caption| !caption.is_empty());
    Some(MessageBody {
        text: caption.clone().unwrap_or_default(),
        attachment: Some(Attachment {
            kind: media_kind,
            reference,
            mime_type: part.mime_type.clone(),
            caption,
            filename: part.filename.clone(),
        }),
        ..MessageBody::default()
    })
}

/// A contact card: its formatted name (or first and last), its numbers in E.164 where
/// they read as phone numbers, as given otherwise.
fn shared_contact(card: &ContactCard) -> SharedContact {
    let name = card
        .name
        .formatted_name
        .clone()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| {
            [&card.name.first_name, &card.name.last_name]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        });
    let phones = card
        .phones
        .iter()
        .filter_map(|phone| {
            let raw = phone.phone.as_deref().or(phone.wa_id.as_deref())?;
            Some(e164(raw).unwrap_or_else(|| raw.trim().to_owned()))
        })
        .collect();
    SharedContact { name, phones }
}

/// A `system` message: a BSUID change (`user_changed_user_id`, and `user_changed_number`
/// when it carries the previous BSUID) becomes [`ProviderEvent::ContactIdChanged`]; a
/// number change without BSUIDs is counted.
fn system_event(message: &WebhookMessage, at: DateTime<Utc>) -> ProviderEvent {
    let system = message.system.as_ref();
    let kind = system
        .map(|system| system.kind.as_str())
        .unwrap_or_default();
    let old_bsuid = system.and_then(|system| system.previous_user_id.clone());
    let new_bsuid = system
        .and_then(|system| system.user_id.clone())
        .or_else(|| message.from_user_id.clone());
    match (old_bsuid, new_bsuid) {
        (Some(old_bsuid), Some(new_bsuid))
            if !old_bsuid.is_empty() && !new_bsuid.is_empty() && old_bsuid != new_bsuid =>
        {
            ProviderEvent::ContactIdChanged {
                old_bsuid,
                new_bsuid,
                at,
            }
        }
        _ => ProviderEvent::Ignored {
            kind: format!("system:{kind}"),
        },
    }
}

/// The `user_id_update` field. Meta documented it with the BSUID launch and then said it
/// is not a subscribable field (BSUID changes come as `system` messages, changelog of
/// 2026-08-11); resellers that still forward it are read leniently: the previous BSUID
/// from `previous_user_id`, `old_user_id` or `detail.previous.user_id`, the new one from
/// `user_id`, `new_user_id` or `detail.current.user_id`, for the value itself or each item
/// of its `user_id_update` array.
fn user_id_updates(value: &Value, now: DateTime<Utc>) -> Vec<ProviderEvent> {
    let items: Vec<&Value> = match value
        .get("user_id_update")
        .or_else(|| value.get("user_id_updates"))
    {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        _ => vec![value],
    };
    let first_of = |item: &Value, pointers: &[&str]| {
        pointers
            .iter()
            .find_map(|pointer| item.pointer(pointer).and_then(text_of))
            .filter(|id| !id.is_empty())
    };
    items
        .into_iter()
        .map(|item| {
            let old = first_of(
                item,
                &[
                    "/previous_user_id",
                    "/old_user_id",
                    "/detail/previous/user_id",
                    "/previous/user_id",
                ],
            );
            let new = first_of(
                item,
                &[
                    "/user_id",
                    "/new_user_id",
                    "/detail/current/user_id",
                    "/current/user_id",
                ],
            );
            let at = time_of(
                item.get("timestamp").or_else(|| value.get("timestamp")),
                now,
            );
            match (old, new) {
                (Some(old_bsuid), Some(new_bsuid)) if old_bsuid != new_bsuid => {
                    ProviderEvent::ContactIdChanged {
                        old_bsuid,
                        new_bsuid,
                        at,
                    }
                }
                _ => ProviderEvent::Ignored {
                    kind: "user_id_update".into(),
                },
            }
        })
        .collect()
}

/// A delivery status. Statuses other than sent, delivered, read and failed (`played`,
/// for voice messages) are counted.
fn status_event(
    status: &WebhookStatus,
    contacts: &[WebhookContact],
    now: DateTime<Utc>,
) -> ProviderEvent {
    let delivery = match status.status.as_str() {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Failed,
        other => {
            return ProviderEvent::Ignored {
                kind: format!("status:{other}"),
            };
        }
    };
    let Some(id) = status.id.as_deref().filter(|id| !id.is_empty()) else {
        return ignored("status without id", &status.status);
    };
    // A group's id is not a customer's phone number.
    let phone = status
        .recipient_id
        .as_deref()
        .filter(|_| status.recipient_type.as_deref() != Some("group"));
    let recipient = contact_ids(
        phone,
        status.recipient_user_id.as_deref(),
        status.recipient_parent_user_id.as_deref(),
        contacts,
    );
    let error = status.errors.first().map(|error| {
        let code = error
            .code()
            .map_or_else(|| "unknown".to_owned(), |code| code.to_string());
        let reason = error
            .title
            .as_deref()
            .or(error.message.as_deref())
            .unwrap_or_default();
        let reason = match error.details() {
            Some(details) if !reason.is_empty() => format!("{reason}: {details}"),
            Some(details) => details.to_owned(),
            None => reason.to_owned(),
        };
        (code, excerpt(&reason))
    });
    ProviderEvent::Status {
        provider_message_id: id.to_owned(),
        status: delivery,
        error,
        recipient,
        at: time_of(status.timestamp.as_ref(), now),
    }
}

/// Every identifier known for a customer: from the message or status itself, completed
/// from the matching `contacts[]` entry (same `wa_id` or `user_id`; or the only entry,
/// when it does not contradict them).
fn contact_ids(
    phone: Option<&str>,
    bsuid: Option<&str>,
    parent_bsuid: Option<&str>,
    contacts: &[WebhookContact],
) -> ContactIds {
    let phone = phone.filter(|p| !p.is_empty());
    let bsuid = bsuid.filter(|b| !b.is_empty());
    let same =
        |mine: Option<&str>, theirs: &Option<String>| mine.is_some() && mine == theirs.as_deref();
    let compatible = |mine: Option<&str>, theirs: &Option<String>| {
        mine.is_none() || theirs.is_none() || mine == theirs.as_deref()
    };
    let contact = contacts
        .iter()
        .find(|c| same(phone, &c.wa_id) || same(bsuid, &c.user_id))
        .or_else(|| match contacts {
            [only] if compatible(phone, &only.wa_id) && compatible(bsuid, &only.user_id) => {
                Some(only)
            }
            _ => None,
        });
    let nonempty = |text: Option<&String>| text.filter(|t| !t.trim().is_empty()).cloned();
    ContactIds {
        phone: phone
            .or_else(|| contact.and_then(|c| c.wa_id.as_deref()))
            .and_then(e164),
        bsuid: bsuid
            .map(str::to_owned)
            .or_else(|| nonempty(contact.and_then(|c| c.user_id.as_ref()))),
        parent_bsuid: parent_bsuid
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .or_else(|| nonempty(contact.and_then(|c| c.parent_user_id.as_ref()))),
        lid: None,
        username: nonempty(contact.and_then(|c| c.profile.username.as_ref())),
        name: nonempty(contact.and_then(|c| c.profile.name.as_ref())),
    }
}

/// A webhook timestamp (Unix seconds, a string or a number), or `now` without one.
fn time_of(timestamp: Option<&Value>, now: DateTime<Utc>) -> DateTime<Utc> {
    timestamp
        .and_then(text_of)
        .and_then(|text| text.trim().parse::<i64>().ok())
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .unwrap_or(now)
}

/// A JSON string, or a number as text.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Where a body stopped being JSON, without quoting it.
fn json_problem(err: &serde_json::Error) -> String {
    format!(
        "not a JSON webhook body ({:?} error at line {} column {})",
        err.classify(),
        err.line(),
        err.column()
    )
}

/// A `hub.challenge` fit to echo: 1 to 128 letters, digits, `-`, `_` or `.`.
fn is_plain_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn choices(labels: &[&str]) -> Vec<Choice> {
        labels
            .iter()
            .enumerate()
            .map(|(index, label)| Choice {
                id: format!("c{index}"),
                label: (*label).to_owned(),
            })
            .collect()
    }

    fn phone() -> Recipient {
        Recipient {
            phone: Some("+16505551234".into()),
            ..Recipient::default()
        }
    }

    fn menu(body: &str, labels: &[&str]) -> Value {
        let content = Content::Menu {
            body: body.into(),
            choices: choices(labels),
            button: "Pick one".into(),
        };
        request_body(&phone(), &content).unwrap()
    }

    #[test]
    fn short_menus_are_buttons_longer_ones_lists_the_rest_numbered_text() {
        let buttons = menu("Size?", &["Small", "Medium", "Large"]);
        assert_eq!(buttons["type"], "interactive");
        assert_eq!(buttons["interactive"]["type"], "button");
        assert_eq!(
            buttons["interactive"]["action"]["buttons"][2]["reply"]["id"],
            "c2"
        );
        assert_eq!(
            buttons["interactive"]["action"]["buttons"][2]["reply"]["title"],
            "Large"
        );

        // Four choices, or one label past 20 characters: a list.
        let four = menu("Size?", &["S", "M", "L", "XL"]);
        assert_eq!(four["interactive"]["type"], "list");
        assert_eq!(four["interactive"]["action"]["button"], "Pick one");
        let rows = &four["interactive"]["action"]["sections"][0]["rows"];
        assert_eq!(rows.as_array().unwrap().len(), 4);
        assert_eq!(rows[3], json!({"id": "c3", "title": "XL"}));
        let long = menu("Size?", &["Small", "A label of 21 chars.."]);
        assert_eq!(long["interactive"]["type"], "list");

        // Eleven choices, or a label past 24 characters: numbered text.
        let labels: Vec<String> = (1..=11).map(|n| format!("Option {n}")).collect();
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let many = menu("Pick", &refs);
        assert_eq!(many["type"], "text");
        assert_eq!(many["text"]["body"], numbered_text("Pick", &choices(&refs)));
        let too_long = menu("Pick", &["A label that is 25 chars."]);
        assert_eq!(too_long["type"], "text");
        assert_eq!(
            too_long["text"]["body"],
            "Pick\n1. A label that is 25 chars."
        );

        // No body: the numbered choices alone, as text.
        let bare = menu("  ", &["Yes", "No"]);
        assert_eq!(bare["type"], "text");
        assert_eq!(bare["text"]["body"], "1. Yes\n2. No");

        // Duplicate button titles cannot be told apart: a list (ids differ).
        let twins = menu("Which?", &["Same", "Same"]);
        assert_eq!(twins["interactive"]["type"], "list");
    }

    #[test]
    fn list_button_is_cut_or_defaulted() {
        assert_eq!(list_button(""), DEFAULT_LIST_BUTTON);
        assert_eq!(
            list_button("A very long button label"),
            "A very long button l"
        );
        assert_eq!(list_button(" Choose "), "Choose");
    }

    #[test]
    fn media_drops_what_its_type_does_not_take() {
        let audio = Content::Media {
            kind: MediaKind::Audio,
            source: MediaSource::Id("123".into()),
            caption: Some("ignored".into()),
            filename: Some("ignored.ogg".into()),
        };
        assert_eq!(
            request_body(&phone(), &audio).unwrap()["audio"],
            json!({"id": "123"})
        );
        let image = Content::Media {
            kind: MediaKind::Image,
            source: MediaSource::Link("https://example.com/a.jpg".into()),
            caption: Some("A".into()),
            filename: Some("a.jpg".into()),
        };
        assert_eq!(
            request_body(&phone(), &image).unwrap()["image"],
            json!({"link": "https://example.com/a.jpg", "caption": "A"})
        );
    }

    #[test]
    fn addressing_prefers_the_phone_then_the_bsuid() {
        let text = Content::Text {
            body: "hi".into(),
            preview_url: false,
            reply_to: None,
        };
        let both = Recipient {
            phone: Some("16505551234".into()),
            bsuid: Some("US.1".into()),
            lid: None,
        };
        let body = request_body(&both, &text).unwrap();
        assert_eq!(body["to"], "+16505551234");
        assert!(body.get("recipient").is_none());
        let bsuid_only = Recipient {
            bsuid: Some("US.13491208655302741918".into()),
            ..Recipient::default()
        };
        let body = request_body(&bsuid_only, &text).unwrap();
        assert_eq!(body["recipient"], "US.13491208655302741918");
        assert!(body.get("to").is_none());
        let lid_only = Recipient {
            lid: Some("123@lid".into()),
            ..Recipient::default()
        };
        let err = request_body(&lid_only, &text).unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
    }

    #[test]
    fn empty_parts_are_refused_before_sending() {
        let cases = [
            Content::Text {
                body: " ".into(),
                preview_url: false,
                reply_to: None,
            },
            Content::Template {
                name: "".into(),
                language: "en".into(),
                parameters: vec![],
            },
            Content::Reaction {
                message_id: "".into(),
                emoji: "👍".into(),
            },
            Content::MarkRead {
                message_id: "".into(),
            },
            Content::Location(Location {
                latitude: f64::NAN,
                longitude: 0.0,
                name: None,
                address: None,
            }),
        ];
        for content in cases {
            let err = request_body(&phone(), &content).unwrap_err();
            assert_eq!(err.class, ErrorClass::Permanent, "{content:?}");
        }
    }

    #[test]
    fn failures_are_classified_by_code_then_status() {
        let graph = |code: i64| {
            format!(r#"{{"error":{{"message":"m","type":"OAuthException","code":{code}}}}}"#)
        };
        let cases: &[(u16, i64, ErrorClass)] = &[
            (429, 130429, ErrorClass::Retryable),
            (400, 131056, ErrorClass::Retryable),
            (403, 4, ErrorClass::Retryable),
            (503, 131016, ErrorClass::Retryable),
            (400, 1, ErrorClass::Retryable),
            (401, 190, ErrorClass::ProviderBroken),
            (400, 190, ErrorClass::ProviderBroken),
            (403, 200, ErrorClass::ProviderBroken),
            (403, 368, ErrorClass::ProviderBroken),
            (400, 131031, ErrorClass::ProviderBroken),
            (500, 3, ErrorClass::ProviderBroken),
            (403, 131047, ErrorClass::ProviderBroken),
            (400, 131047, ErrorClass::Permanent),
            (400, 131026, ErrorClass::Permanent),
            (400, 131062, ErrorClass::Permanent),
            (404, 132001, ErrorClass::Permanent),
            (400, 132016, ErrorClass::Permanent),
            (400, 100, ErrorClass::Permanent),
            (400, 999_999, ErrorClass::Permanent),
            (502, 999_999, ErrorClass::Retryable),
        ];
        for (status, code, class) in cases {
            let err = classify_failure(*status, &graph(*code));
            assert_eq!(err.class, *class, "HTTP {status} code {code}");
            assert_eq!(err.code.as_deref(), Some(code.to_string().as_str()));
        }
        // Not Graph's body: the status decides and is the code.
        let err = classify_failure(502, "<html>Bad Gateway</html>");
        assert_eq!(
            (err.class, err.code.as_deref()),
            (ErrorClass::Retryable, Some("502"))
        );
        assert_eq!(err.message, "HTTP 502: <html>Bad Gateway</html>");
        let err = classify_failure(401, "");
        assert_eq!(
            (err.class, err.message.as_str()),
            (ErrorClass::ProviderBroken, "HTTP 401")
        );
        let err = classify_failure(422, "{}");
        assert_eq!(err.class, ErrorClass::Permanent);
        // A code as a string, as some resellers send it.
        let err = classify_failure(
            400,
            r#"{"error":{"code":"131047","title":"Re-engagement message"}}"#,
        );
        assert_eq!(
            (err.class, err.code.as_deref()),
            (ErrorClass::Permanent, Some("131047"))
        );
        assert_eq!(err.message, "(#131047) Re-engagement message");
    }

    #[test]
    fn error_text_is_code_message_and_details_once() {
        let body = r##"{"error":{"message":"(#130429) Rate limit hit","code":130429,"error_data":{"details":"Too many"}}}"##;
        assert_eq!(
            classify_failure(429, body).message,
            "(#130429) Rate limit hit: Too many"
        );
        let body = r#"{"error":{"message":"Invalid parameter","code":100}}"#;
        assert_eq!(
            classify_failure(400, body).message,
            "(#100) Invalid parameter"
        );
        assert_eq!(scrub("token EAAB123 bad", "EAAB123"), "token *** bad");
    }

    #[test]
    fn paths_expand_and_check_their_placeholders() {
        let official = ProviderKind::Official;
        assert_eq!(
            expand_path(official, GRAPH_MESSAGES_PATH, "v23.0", Some("42")).unwrap(),
            "/v23.0/42/messages"
        );
        assert_eq!(
            expand_path(official, "messages", "v1", None).unwrap(),
            "/messages"
        );
        assert!(expand_path(official, GRAPH_MESSAGES_PATH, "v23.0", None).is_err());
        assert!(expand_path(official, "/{version}/messages", "v23.0", None).is_err());
        assert!(path_segment(official, "phone_number_id", "12/../34").is_err());
        assert!(path_segment(official, "api_version", "v23.0").is_ok());
    }

    #[test]
    fn construction_checks_the_kind_and_the_settings() {
        let config = |kind: ProviderKind, settings: &[(&str, &str)]| ProviderConfig {
            bot_id: uuid::Uuid::nil(),
            kind,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            secrets: [("access_token".to_owned(), Secret::new("tok"))].into(),
        };
        let http = reqwest::Client::new();
        assert!(CloudApi::new(&config(ProviderKind::Twilio, &[]), http.clone()).is_err());
        // meta needs its phone number id; base_url and api_version have defaults.
        assert!(CloudApi::new(&config(ProviderKind::Meta, &[]), http.clone()).is_err());
        let meta = CloudApi::new(
            &config(ProviderKind::Meta, &[("phone_number_id", "42")]),
            http.clone(),
        )
        .unwrap();
        assert_eq!(
            meta.messages_url.as_str(),
            "https://graph.facebook.com/v23.0/42/messages"
        );
        assert_eq!(
            meta.probe_url.as_ref().map(Url::as_str),
            Some("https://graph.facebook.com/v23.0/42?fields=display_phone_number,verified_name")
        );
        assert_eq!(meta.auth_value.expose(), "Bearer tok");
        // official needs a base URL; a header other than Authorization gets the bare token.
        assert!(CloudApi::new(&config(ProviderKind::Official, &[]), http.clone()).is_err());
        let official = CloudApi::new(
            &config(
                ProviderKind::Official,
                &[
                    ("base_url", "https://waba.example.com/"),
                    ("path", "/messages"),
                    ("auth_header", "D360-API-KEY"),
                ],
            ),
            http.clone(),
        )
        .unwrap();
        assert_eq!(
            official.messages_url.as_str(),
            "https://waba.example.com/messages"
        );
        assert_eq!(official.auth_value.expose(), "tok");
        assert!(official.probe_url.is_none());
        assert!(
            CloudApi::new(
                &config(
                    ProviderKind::Official,
                    &[("base_url", "ftp://example.com"), ("path", "/messages")]
                ),
                http.clone()
            )
            .is_err()
        );
        // The Debug output never shows the token.
        assert!(!format!("{meta:?}").contains("tok\""));
        assert!(!format!("{meta:?}").contains("Bearer tok"));
    }

    #[test]
    fn timestamps_read_as_unix_seconds_or_fall_back_to_now() {
        let now = DateTime::from_timestamp(1, 0).unwrap();
        assert_eq!(
            time_of(Some(&json!("1749416383")), now).timestamp(),
            1_749_416_383
        );
        assert_eq!(
            time_of(Some(&json!(1749416383)), now).timestamp(),
            1_749_416_383
        );
        assert_eq!(time_of(Some(&json!("soon")), now), now);
        assert_eq!(time_of(None, now), now);
    }

    #[test]
    fn contacts_complete_ids_only_when_they_match() {
        let contact = |wa_id: Option<&str>, user_id: Option<&str>, name: &str| WebhookContact {
            wa_id: wa_id.map(str::to_owned),
            user_id: user_id.map(str::to_owned),
            parent_user_id: None,
            profile: Profile {
                name: Some(name.to_owned()),
                username: None,
            },
        };
        let two = [
            contact(Some("111111111"), Some("US.1"), "One"),
            contact(Some("222222222"), Some("US.2"), "Two"),
        ];
        let ids = contact_ids(Some("222222222"), None, None, &two);
        assert_eq!(ids.bsuid.as_deref(), Some("US.2"));
        assert_eq!(ids.name.as_deref(), Some("Two"));
        let ids = contact_ids(None, Some("US.1"), None, &two);
        assert_eq!(ids.phone.as_deref(), Some("+111111111"));
        // The only contact, but for another number: not used.
        let other = [contact(Some("333333333"), None, "Three")];
        let ids = contact_ids(Some("444444444"), None, None, &other);
        assert_eq!(ids.name, None);
        assert_eq!(ids.phone.as_deref(), Some("+444444444"));
        // The only contact, phone-less message: used.
        let ids = contact_ids(None, None, None, &other);
        assert_eq!(ids.phone.as_deref(), Some("+333333333"));
    }

    #[test]
    fn challenge_tokens_are_plain() {
        assert!(is_plain_token("1158201444"));
        assert!(!is_plain_token(""));
        assert!(!is_plain_token("<script>"));
        assert!(!is_plain_token(&"9".repeat(129)));
    }
}
