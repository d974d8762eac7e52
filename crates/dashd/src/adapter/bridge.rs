//! The bridge providers (`venom`, `wwebjs`, `baileys`): one client for the Node bridge
//! contract (`docs/bridges.md`), parameterised by provider kind, base URL, session name
//! and bearer token. A bridge is a local Node process holding WhatsApp Web sessions; this
//! client sends through it, asks it about its sessions (start, QR, state, logout) for the
//! sessions subsystem, and verifies and normalises the events it posts to
//! `/webhook/bridge/{provider}`.
//!
//! Every call carries `Authorization: Bearer <token>`. Events are signed with the same
//! token: `X-Dashd-Signature: sha256=<hex HMAC-SHA256(token, "<timestamp>.<raw body>")>`
//! with `X-Dashd-Timestamp` within ±300 s of now, checked before anything is parsed.
//! Menus go out as numbered text and locations as text with a map link; templates,
//! reactions and read receipts are not part of the contract (permanent errors).

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use dash_core::api::{Attachment, Location, MessageBody};
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::signature;
use super::{
    ConfigError, ContactIds, Content, DeliveryStatus, MediaSource, OutboundMessage, ProbeReport,
    ProviderConfig, ProviderEvent, Recipient, SEND_TIMEOUT, Secret, SendError, SendReceipt,
    SessionState, WebhookError, WebhookRequest, WhatsAppProvider, excerpt, numbered_text,
};

/// Header carrying the event's Unix time in seconds (part of what is signed).
pub const TIMESTAMP_HEADER: &str = "X-Dashd-Timestamp";
/// Header carrying `sha256=<hex>` of the event's HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "X-Dashd-Signature";
/// How far an event's timestamp may be from now, either way, in seconds.
pub const MAX_CLOCK_SKEW_S: i64 = 300;

/// A client of one bridge session.
#[derive(Debug, Clone)]
pub struct Bridge {
    http: reqwest::Client,
    kind: ProviderKind,
    base_url: Url,
    session: String,
    token: Secret,
}

/// A session as the bridge reports it (`GET /status/{name}`, `POST /sessions/{name}/start`,
/// `GET /sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub session: String,
    pub state: SessionState,
    /// The paired phone, E.164 with `+`, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Why the session is disconnected, logged out or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when the session is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// The code to type on the phone, when pairing by phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
}

/// A QR code to pair a session (`GET /qr/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionQr {
    /// The raw QR string (`2@...`), rendered by whoever shows it.
    pub qr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The code to type on the phone, when pairing by phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
}

/// What `GET /health` says about the bridge process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeHealth {
    #[serde(default)]
    pub ok: bool,
    /// The WhatsApp library it drives (`baileys`, `venom`, `wwebjs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// The library's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Bridge {
    /// A client for the chain entry's bridge: `base_url` (default per kind), `session`
    /// (default: the bot's id as a 32-digit hex string) and the secret `token`.
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Result<Self, ConfigError> {
        if !config.kind.is_bridge() {
            return Err(ConfigError(format!(
                "{} is not a bridge provider",
                config.kind
            )));
        }
        let base_url = parse_base_url(config.kind, config.required("base_url")?)?;
        let session = match config.setting("session") {
            Some(name) => name.to_owned(),
            None => config.bot_id.simple().to_string(),
        };
        // The contract's alphabet: a URL path segment and a whatsapp-web.js client id.
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if session.is_empty() || session.len() > 64 || !session.chars().all(valid) {
            return Err(ConfigError(format!(
                "{} session name {session:?} must be 1 to 64 letters, digits, - or _",
                config.kind
            )));
        }
        let token = config.required_secret("token")?.clone();
        Ok(Self {
            http,
            kind: config.kind,
            base_url,
            session,
            token,
        })
    }

    /// The session name on the bridge.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The bridge's root URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// `POST /sessions/{name}/start`: starts (or resumes) the session; the bridge answers
    /// with its state, then posts `qr` and `state` events as pairing goes on. With a
    /// pairing phone (digits) the library is asked for a pairing code instead of a QR.
    pub async fn start_session(
        &self,
        pairing_phone: Option<&str>,
    ) -> Result<SessionStatus, SendError> {
        self.session_call("start", pairing_phone).await
    }

    /// `POST /sessions/{name}/restart`: stops the session's connection without logging
    /// out and connects again (credentials kept).
    pub async fn restart_session(
        &self,
        pairing_phone: Option<&str>,
    ) -> Result<SessionStatus, SendError> {
        self.session_call("restart", pairing_phone).await
    }

    async fn session_call(
        &self,
        verb: &str,
        pairing_phone: Option<&str>,
    ) -> Result<SessionStatus, SendError> {
        let path = ["sessions", self.session.as_str(), verb];
        let body = match pairing_phone {
            Some(phone) => json!({ "pairing_phone": phone }),
            None => json!({}),
        };
        let answer = self.fetch(Method::POST, &path, Some(&body)).await?;
        self.decode(answer, "session status")
    }

    /// `GET /status/{name}`.
    pub async fn status(&self) -> Result<SessionStatus, SendError> {
        let answer = self
            .fetch(Method::GET, &["status", self.session.as_str()], None)
            .await?;
        self.decode(answer, "session status")
    }

    /// `GET /qr/{name}`: the current QR, or None when there is none (paired, or not
    /// generated yet: 404 with any code but `session_not_found`).
    pub async fn qr(&self) -> Result<Option<SessionQr>, SendError> {
        match self
            .call(Method::GET, &["qr", self.session.as_str()], None)
            .await
        {
            Ok(answer) => self.decode(answer, "QR").map(Some),
            Err(CallError::Status { status, error }) if status == StatusCode::NOT_FOUND => {
                if error.code.as_deref() == Some("session_not_found") {
                    Err(self.classify(status, &error))
                } else {
                    Ok(None)
                }
            }
            Err(err) => Err(self.call_error(err)),
        }
    }

    /// `DELETE /session/{name}`: logs the session out and deletes its credentials. A
    /// session the bridge does not know is already gone.
    pub async fn logout(&self) -> Result<(), SendError> {
        match self
            .call(Method::DELETE, &["session", self.session.as_str()], None)
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Status { status, error })
                if status == StatusCode::NOT_FOUND
                    && error.code.as_deref() == Some("session_not_found") =>
            {
                Ok(())
            }
            Err(err) => Err(self.call_error(err)),
        }
    }

    /// `GET /sessions`: every session the bridge holds.
    pub async fn sessions(&self) -> Result<Vec<SessionStatus>, SendError> {
        let answer = self.fetch(Method::GET, &["sessions"], None).await?;
        let list = answer.get("sessions").cloned().unwrap_or(answer);
        self.decode(list, "session list")
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<BridgeHealth, SendError> {
        let answer = self.fetch(Method::GET, &["health"], None).await?;
        self.decode(answer, "health")
    }

    fn url(&self, segments: &[&str]) -> Url {
        super::join_url(&self.base_url, segments)
    }

    /// One call: bearer token, JSON body, time bound. A 2xx answer's JSON (Null when
    /// empty), or why it failed.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut request = self
            .http
            .request(method, self.url(segments))
            .bearer_auth(self.token.expose())
            .timeout(SEND_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| CallError::Transport(SendError::transport(&err)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|err| CallError::Transport(SendError::transport(&err)))?;
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        Err(CallError::Status {
            status,
            error: BridgeError::from_body(&text),
        })
    }

    /// [`Bridge::call`] with the failure classified.
    async fn fetch(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, SendError> {
        self.call(method, segments, body)
            .await
            .map_err(|err| self.call_error(err))
    }

    fn call_error(&self, err: CallError) -> SendError {
        match err {
            CallError::Transport(err) => err,
            CallError::Status { status, error } => self.classify(status, &error),
        }
    }

    /// How a bridge's error answer is treated: a bad token, an unknown session or one
    /// that is not ready break the provider for the bot; a bad recipient fails the
    /// message; rate limits and server errors are retried.
    fn classify(&self, status: StatusCode, error: &BridgeError) -> SendError {
        let code = error.code.as_deref().unwrap_or_default();
        let class = match status.as_u16() {
            401 | 403 => ErrorClass::ProviderBroken,
            // An unknown session, or a route the bridge lacks (wrong base URL, or a
            // bridge from another contract version).
            404 => ErrorClass::ProviderBroken,
            409 => ErrorClass::ProviderBroken,
            408 | 429 => ErrorClass::Retryable,
            400..=499 => ErrorClass::Permanent,
            _ => ErrorClass::Retryable,
        };
        let detail = match (&error.message, code) {
            (Some(message), "") => message.clone(),
            (Some(message), code) => format!("{code}: {message}"),
            (None, "") => format!("HTTP {}", status.as_u16()),
            (None, code) => code.to_owned(),
        };
        let what = match (status.as_u16(), code) {
            (401, _) => "rejected the token",
            (404, "session_not_found") => "does not know the session",
            (409, _) => "session is not ready",
            (400, "invalid_recipient") => "refused the recipient",
            _ => "answered",
        };
        SendError {
            class,
            code: Some(if code.is_empty() {
                status.as_u16().to_string()
            } else {
                code.to_owned()
            }),
            message: format!(
                "{} bridge {what} (HTTP {}, session {}): {detail}",
                self.kind,
                status.as_u16(),
                self.session
            ),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        value: Value,
        what: &str,
    ) -> Result<T, SendError> {
        serde_json::from_value(value).map_err(|err| {
            SendError::broken(format!(
                "{} bridge answered an unreadable {what} (contract mismatch): {err}",
                self.kind
            ))
        })
    }

    async fn post_send(&self, path: &str, body: Value) -> Result<SendReceipt, SendError> {
        let answer = self
            .call(Method::POST, &[path], Some(&body))
            .await
            .map_err(|err| self.call_error(err))?;
        match answer.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(SendReceipt {
                provider_message_id: id.to_owned(),
            }),
            _ => Err(SendError::broken(format!(
                "{} bridge accepted a message without answering its id (contract mismatch)",
                self.kind
            ))),
        }
    }

    fn not_supported(&self, what: &str) -> SendError {
        SendError::permanent(format!(
            "{} bridge: {what} are not part of the bridge contract",
            self.kind
        ))
    }
}

#[async_trait]
impl WhatsAppProvider for Bridge {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let text_body = |text: String, reply_to: Option<&String>| -> Result<Value, SendError> {
            if text.trim().is_empty() {
                return Err(SendError::permanent("empty text message"));
            }
            let mut body = json!({
                "session": self.session,
                "to": address_of(&message.to)?,
                "text": text,
                "idempotency_key": message.message_id.to_string(),
            });
            if let Some(reply_to) = reply_to {
                body["reply_to"] = json!(reply_to);
            }
            Ok(body)
        };
        match &message.content {
            Content::Text { body, reply_to, .. } => {
                self.post_send("send", text_body(body.clone(), reply_to.as_ref())?)
                    .await
            }
            // Interactive buttons and lists are not rendered reliably by WhatsApp Web
            // clients: menus go as numbered text (the contract reserves `buttons`/`list`).
            Content::Menu { body, choices, .. } => {
                self.post_send("send", text_body(numbered_text(body, choices), None)?)
                    .await
            }
            Content::Location(location) => {
                self.post_send("send", text_body(location_text(location), None)?)
                    .await
            }
            Content::Media {
                kind,
                source,
                caption,
                filename,
            } => {
                let MediaSource::Link(url) = source else {
                    return Err(SendError::permanent(format!(
                        "{} bridge sends media by URL only, not by a provider media id",
                        self.kind
                    )));
                };
                let mut body = json!({
                    "session": self.session,
                    "to": address_of(&message.to)?,
                    "kind": media_kind_name(*kind),
                    "url": url,
                    "idempotency_key": message.message_id.to_string(),
                });
                if let Some(caption) = caption.as_ref().filter(|c| !c.is_empty()) {
                    body["caption"] = json!(caption);
                }
                if let Some(filename) = filename.as_ref().filter(|f| !f.is_empty()) {
                    body["filename"] = json!(filename);
                }
                self.post_send("send-media", body).await
            }
            Content::Template { .. } => Err(self.not_supported("templates")),
            Content::Reaction { .. } => Err(self.not_supported("reactions")),
            Content::MarkRead { .. } => Err(self.not_supported("read receipts")),
        }
    }

    fn parse_webhook(
        &self,
        request: &WebhookRequest<'_>,
    ) -> Result<Vec<ProviderEvent>, WebhookError> {
        verify_signature(self.token.expose().as_bytes(), request)?;
        let envelope: Value = serde_json::from_slice(request.body)
            .map_err(|err| WebhookError::Malformed(format!("bridge event is not JSON: {err}")))?;
        let event = envelope
            .get("event")
            .and_then(Value::as_str)
            .ok_or_else(|| WebhookError::Malformed("bridge event without \"event\"".into()))?;
        let session = envelope
            .get("session")
            .and_then(Value::as_str)
            .ok_or_else(|| WebhookError::Malformed("bridge event without \"session\"".into()))?;
        if session != self.session {
            // Routing picked this bot by the session; a mismatch is a routing bug and
            // must not become another bot's message.
            return Err(WebhookError::Malformed(format!(
                "event for session {session:?}, this provider holds {:?}",
                self.session
            )));
        }
        let data = envelope.get("data").unwrap_or(&Value::Null);
        let now = request.now;
        let event = match event {
            "message" => message_event(data, now)?,
            "ack" => ack_event(data, now)?,
            "state" => state_event(session, data, now)?,
            "qr" => qr_event(session, data, now)?,
            "pairing_code" => pairing_code_event(session, data, now)?,
            "lid_mapping" => lid_mapping_event(data, now)?,
            other => ProviderEvent::Ignored {
                kind: format!("bridge {other}"),
            },
        };
        Ok(vec![event])
    }

    /// The bridge's `/health` (the process answers and says it is well), then the
    /// session's status, which must be `ready`.
    async fn probe(&self) -> Result<ProbeReport, SendError> {
        let health = self.health().await?;
        if !health.ok {
            return Err(SendError::retryable(format!(
                "the {} bridge at {} reports itself unhealthy",
                self.kind,
                self.base_url.host_str().unwrap_or_default()
            )));
        }
        let status = self.status().await?;
        if status.state == SessionState::Ready {
            let phone = status
                .phone
                .map(|phone| format!(" ({phone})"))
                .unwrap_or_default();
            return Ok(ProbeReport {
                detail: format!("{} session {} ready{phone}", self.kind, self.session),
            });
        }
        let reason = status
            .reason
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        Err(SendError::broken(format!(
            "{} session {} is {}{reason}",
            self.kind,
            self.session,
            state_name(status.state)
        ))
        .with_code(state_name(status.state)))
    }
}

/// The session an event names, read without verifying anything: only for picking the
/// bot whose provider then verifies the signature. Never act on it alone.
pub fn session_of(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        session: String,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|envelope| envelope.session)
        .filter(|session| !session.is_empty())
}

/// Checks `X-Dashd-Signature` over `"<X-Dashd-Timestamp>.<raw body>"` and the timestamp
/// against `request.now`.
fn verify_signature(secret: &[u8], request: &WebhookRequest<'_>) -> Result<(), WebhookError> {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let timestamp = header(TIMESTAMP_HEADER)
        .ok_or_else(|| WebhookError::Signature(format!("missing {TIMESTAMP_HEADER}")))?;
    let given = header(SIGNATURE_HEADER)
        .ok_or_else(|| WebhookError::Signature(format!("missing {SIGNATURE_HEADER}")))?;
    let given = given.strip_prefix("sha256=").ok_or_else(|| {
        WebhookError::Signature(format!("{SIGNATURE_HEADER} is not sha256=<hex>"))
    })?;
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + request.body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(request.body);
    if !signature::verify_sha256_hex(secret, &signed, given) {
        return Err(WebhookError::Signature(
            "bridge event signature does not match".into(),
        ));
    }
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| WebhookError::Signature(format!("{TIMESTAMP_HEADER} is not Unix seconds")))?;
    let skew = request.now.timestamp().saturating_sub(seconds);
    if skew.abs() > MAX_CLOCK_SKEW_S {
        return Err(WebhookError::Signature(format!(
            "bridge event timestamp is {skew} s from now (more than {MAX_CLOCK_SKEW_S} s)"
        )));
    }
    Ok(())
}

/// A normalised message (`docs/bridges.md`, "message") as an inbound event.
fn message_event(data: &Value, now: DateTime<Utc>) -> Result<ProviderEvent, WebhookError> {
    let text_field = |name: &str| {
        data.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let message_id = text_field("message_id")
        .ok_or_else(|| WebhookError::Malformed("bridge message without message_id".into()))?;
    let chat_id = text_field("chat_id")
        .ok_or_else(|| WebhookError::Malformed("bridge message without chat_id".into()))?;
    let is_group = data
        .get("is_group")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chat = jid::Jid::parse(chat_id);
    if is_group || !chat.is_person() {
        return Ok(ProviderEvent::Ignored {
            kind: format!("bridge message ({})", chat.kind_name(is_group)),
        });
    }
    let from_me = data
        .get("from_me")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut from = ContactIds::default();
    chat.fill(&mut from);
    // The bridge may know the other identifier of the chat (a LID's phone, a phone's LID).
    if let Some(phone) = text_field("phone") {
        jid::Jid::parse(phone).fill(&mut from);
    }
    if let Some(lid) = text_field("lid") {
        jid::Jid::parse(lid).fill(&mut from);
    }
    if from.is_empty() {
        return Err(WebhookError::Malformed(format!(
            "bridge message chat_id {chat_id:?} names no phone or LID"
        )));
    }
    let push_name = text_field("push_name").map(str::to_owned);
    if !from_me {
        from.name = push_name.clone();
    }
    let mut body = MessageBody {
        text: data
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        reply_id: text_field("reply_id").map(str::to_owned),
        name: if from_me { None } else { push_name },
        ..MessageBody::default()
    };
    let kind_name = text_field("type").unwrap_or_default();
    let media = data.get("media").filter(|m| m.is_object());
    let has_media = data
        .get("has_media")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if media.is_some() || has_media {
        let media = media.unwrap_or(&Value::Null);
        let media_text = |name: &str| {
            media
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let kind = media_text("kind")
            .as_deref()
            .and_then(media_kind_of)
            .or_else(|| media_kind_of(kind_name));
        if let Some(kind) = kind {
            let caption = media_text("caption");
            if body.text.is_empty()
                && let Some(caption) = &caption
            {
                body.text = caption.clone();
            }
            body.attachment = Some(Attachment {
                kind,
                reference: media_text("url").unwrap_or_else(|| message_id.to_owned()),
                mime_type: media_text("mime_type"),
                caption,
                filename: media_text("filename"),
            });
        }
    }
    if let Some(location) = data.get("location").filter(|l| l.is_object()) {
        let number = |name: &str| location.get(name).and_then(Value::as_f64);
        let text = |name: &str| {
            location
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if let (Some(latitude), Some(longitude)) = (number("latitude"), number("longitude")) {
            body.location = Some(Location {
                latitude,
                longitude,
                name: text("name"),
                address: text("address"),
            });
        }
    }
    Ok(ProviderEvent::Inbound {
        from,
        provider_message_id: message_id.to_owned(),
        body,
        at: unix_seconds(data.get("timestamp_s")).unwrap_or(now),
        from_me,
    })
}

/// A delivery acknowledgement (`ack` as a name, or wwebjs's numbers) as a status event.
fn ack_event(data: &Value, now: DateTime<Utc>) -> Result<ProviderEvent, WebhookError> {
    let message_id = data
        .get("message_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WebhookError::Malformed("bridge ack without message_id".into()))?;
    let ack = data
        .get("ack")
        .ok_or_else(|| WebhookError::Malformed("bridge ack without ack".into()))?;
    let status = match ack_status(ack) {
        Some(Some(status)) => status,
        Some(None) => {
            return Ok(ProviderEvent::Ignored {
                kind: "bridge ack pending".into(),
            });
        }
        None => {
            return Err(WebhookError::Malformed(format!(
                "bridge ack {ack} is not a known acknowledgement"
            )));
        }
    };
    let mut recipient = ContactIds::default();
    if let Some(chat_id) = data.get("chat_id").and_then(Value::as_str) {
        jid::Jid::parse(chat_id).fill(&mut recipient);
    }
    let error = (status == DeliveryStatus::Failed).then(|| {
        let error = data.get("error");
        let field = |name: &str| {
            error.and_then(|e| e.get(name)).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        (
            field("code").unwrap_or_else(|| "failed".into()),
            field("message").unwrap_or_else(|| "the bridge reported the message failed".into()),
        )
    });
    Ok(ProviderEvent::Status {
        provider_message_id: message_id.to_owned(),
        status,
        error,
        recipient,
        at: unix_seconds(data.get("timestamp_s")).unwrap_or(now),
    })
}

/// An acknowledgement: Some(Some(status)), Some(None) for "pending", None when unknown.
/// Numbers follow whatsapp-web.js (`-1` error, `0` pending, `1` server, `2` device,
/// `3` read, `4` played); the Baileys bridge converts its status enum to them.
fn ack_status(ack: &Value) -> Option<Option<DeliveryStatus>> {
    if let Some(number) = ack.as_i64() {
        return match number {
            -1 => Some(Some(DeliveryStatus::Failed)),
            0 => Some(None),
            1 => Some(Some(DeliveryStatus::Sent)),
            2 => Some(Some(DeliveryStatus::Delivered)),
            3 | 4 => Some(Some(DeliveryStatus::Read)),
            _ => None,
        };
    }
    let name = ack.as_str()?.trim().to_ascii_lowercase();
    match name.as_str() {
        "failed" | "error" => Some(Some(DeliveryStatus::Failed)),
        "pending" => Some(None),
        "sent" | "server" | "server_ack" => Some(Some(DeliveryStatus::Sent)),
        "delivered" | "device" | "delivery_ack" => Some(Some(DeliveryStatus::Delivered)),
        "read" | "played" => Some(Some(DeliveryStatus::Read)),
        _ => None,
    }
}

fn state_event(
    session: &str,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<ProviderEvent, WebhookError> {
    let state = data
        .get("state")
        .cloned()
        .ok_or_else(|| WebhookError::Malformed("bridge state event without state".into()))?;
    let state: SessionState = serde_json::from_value(state.clone()).map_err(|_| {
        WebhookError::Malformed(format!("bridge state {state} is not a session state"))
    })?;
    let text = |name: &str| {
        data.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    Ok(ProviderEvent::Session {
        session: session.to_owned(),
        state,
        qr: None,
        qr_expires_at: None,
        pairing_code: None,
        phone: text("phone").and_then(super::e164),
        reason: text("reason").map(str::to_owned),
        at: text("since")
            .and_then(|since| DateTime::parse_from_rfc3339(since).ok())
            .map(|since| since.with_timezone(&Utc))
            .unwrap_or(now),
    })
}

fn qr_event(
    session: &str,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<ProviderEvent, WebhookError> {
    let qr = data
        .get("qr")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WebhookError::Malformed("bridge qr event without qr".into()))?;
    Ok(ProviderEvent::Session {
        session: session.to_owned(),
        state: SessionState::Qr,
        qr: Some(qr.to_owned()),
        qr_expires_at: expires_at(data),
        pairing_code: None,
        phone: None,
        reason: None,
        at: now,
    })
}

/// `pairing_code`: the code to type on the phone (pairing by phone number).
fn pairing_code_event(
    session: &str,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<ProviderEvent, WebhookError> {
    let code = data
        .get("code")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .ok_or_else(|| WebhookError::Malformed("bridge pairing_code event without code".into()))?;
    Ok(ProviderEvent::Session {
        session: session.to_owned(),
        state: SessionState::Qr,
        qr: None,
        qr_expires_at: expires_at(data),
        pairing_code: Some(code.to_owned()),
        phone: None,
        reason: None,
        at: now,
    })
}

/// `lid_mapping`: the bridge learnt which phone number a LID stands for.
fn lid_mapping_event(data: &Value, now: DateTime<Utc>) -> Result<ProviderEvent, WebhookError> {
    let text = |name: &str| data.get(name).and_then(Value::as_str);
    let lid = match text("lid").map(jid::Jid::parse) {
        Some(jid::Jid::Lid(lid)) => lid,
        _ => {
            return Err(WebhookError::Malformed(
                "bridge lid_mapping event without a LID (\"...@lid\")".into(),
            ));
        }
    };
    let phone = text("phone")
        .and_then(|phone| match jid::Jid::parse(phone) {
            jid::Jid::Phone(phone) => Some(phone),
            _ => None,
        })
        .ok_or_else(|| {
            WebhookError::Malformed("bridge lid_mapping event without a phone number".into())
        })?;
    Ok(ProviderEvent::ContactLinked {
        ids: ContactIds {
            phone: Some(phone),
            lid: Some(lid),
            ..ContactIds::default()
        },
        at: now,
    })
}

/// `expires_at` of a `qr` or `pairing_code` event (RFC 3339), when given.
fn expires_at(data: &Value) -> Option<DateTime<Utc>> {
    data.get("expires_at")
        .and_then(Value::as_str)
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc))
}

/// The address a bridge (or Evolution) sends to: phone digits without `+`
/// (`15551234567`), or the LID JID when no phone is known.
pub(crate) fn address_of(to: &Recipient) -> Result<String, SendError> {
    if let Some(phone) = to.phone.as_deref().and_then(super::e164) {
        return Ok(phone.trim_start_matches('+').to_owned());
    }
    if let Some(jid::Jid::Lid(lid)) = to.lid.as_deref().map(jid::Jid::parse) {
        return Ok(lid);
    }
    Err(SendError::permanent(
        "the contact has no phone number or WhatsApp LID to send to",
    ))
}

/// A location as text: name, address and a map link.
fn location_text(location: &Location) -> String {
    let mut lines: Vec<String> = Vec::new();
    lines.extend(location.name.iter().filter(|s| !s.is_empty()).cloned());
    lines.extend(location.address.iter().filter(|s| !s.is_empty()).cloned());
    lines.push(format!(
        "https://maps.google.com/?q={},{}",
        location.latitude, location.longitude
    ));
    lines.join("\n")
}

pub(crate) fn media_kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "image",
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
        MediaKind::Document => "document",
    }
}

/// A media kind from a contract kind or a library's message type (`ptt`, `imageMessage`).
fn media_kind_of(name: &str) -> Option<MediaKind> {
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_suffix("message").unwrap_or(&name);
    match name {
        "image" | "sticker" => Some(MediaKind::Image),
        "video" | "ptv" | "gif" => Some(MediaKind::Video),
        "audio" | "ptt" | "voice" => Some(MediaKind::Audio),
        "document" | "documentwithcaption" => Some(MediaKind::Document),
        _ => None,
    }
}

fn state_name(state: SessionState) -> &'static str {
    match state {
        SessionState::Initializing => "initializing",
        SessionState::Qr => "qr",
        SessionState::Authenticated => "authenticated",
        SessionState::Ready => "ready",
        SessionState::Disconnected => "disconnected",
        SessionState::LoggedOut => "logged_out",
        SessionState::Failed => "failed",
    }
}

/// Unix seconds as a number, a numeric string, or a protobuf Long (`{low, high}`).
pub(crate) fn unix_seconds(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let seconds = match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?,
        Value::String(s) => s.trim().parse().ok()?,
        Value::Object(long) => {
            let low = long.get("low")?.as_i64()?;
            let high = long.get("high").and_then(Value::as_i64).unwrap_or(0);
            (high << 32) | (low & 0xffff_ffff)
        }
        _ => return None,
    };
    (seconds > 0)
        .then(|| Utc.timestamp_opt(seconds, 0).single())
        .flatten()
}

/// A provider's `base_url`: http(s), usable as a base for paths (Evolution's too).
pub(crate) fn parse_base_url(kind: ProviderKind, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim())
        .map_err(|err| ConfigError(format!("{kind} base_url {raw:?} is not a URL: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ConfigError(format!(
            "{kind} base_url {raw:?} must be an http:// or https:// URL"
        )));
    }
    Ok(url)
}

/// Why a call failed, before classification.
#[derive(Debug)]
enum CallError {
    Transport(SendError),
    Status {
        status: StatusCode,
        error: BridgeError,
    },
}

/// The contract's error body, `{"error": {"code", "message"}}`, leniently read.
#[derive(Debug, Default)]
struct BridgeError {
    code: Option<String>,
    message: Option<String>,
}

impl BridgeError {
    fn from_body(text: &str) -> Self {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            let text = excerpt(text);
            return Self {
                code: None,
                message: (!text.is_empty()).then_some(text),
            };
        };
        let error = value.get("error").unwrap_or(&value);
        let field = |name: &str| {
            error
                .get(name)
                .and_then(Value::as_str)
                .map(excerpt)
                .filter(|s| !s.is_empty())
        };
        Self {
            code: field("code"),
            message: field("message").or_else(|| error.as_str().map(excerpt)),
        }
    }
}

/// WhatsApp Web identifiers (JIDs), shared by the bridges and Evolution: `<digits>@c.us`
/// and `<digits>@s.whatsapp.net` are phones (the same user), `<digits>@lid` a privacy id
/// that is never a phone number, `@g.us` groups, `@broadcast` and `@newsletter` channels.
/// A device suffix (`user:device@server`) is dropped.
pub(crate) mod jid {
    use super::ContactIds;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Jid {
        /// E.164 with `+`.
        Phone(String),
        /// `<digits>@lid`.
        Lid(String),
        Group,
        Broadcast,
        Other,
    }

    impl Jid {
        pub(crate) fn parse(raw: &str) -> Jid {
            let raw = raw.trim();
            let Some((user, server)) = raw.split_once('@') else {
                // A bare number (a bridge's `phone` field).
                return super::super::e164(raw).map_or(Jid::Other, Jid::Phone);
            };
            let user = user.split(':').next().unwrap_or(user);
            match server.to_ascii_lowercase().as_str() {
                "s.whatsapp.net" | "c.us" => {
                    super::super::e164(user).map_or(Jid::Other, Jid::Phone)
                }
                "lid" if !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()) => {
                    Jid::Lid(format!("{user}@lid"))
                }
                "g.us" => Jid::Group,
                "broadcast" | "newsletter" => Jid::Broadcast,
                _ => Jid::Other,
            }
        }

        /// A one-to-one chat with a person.
        pub(crate) fn is_person(&self) -> bool {
            matches!(self, Jid::Phone(_) | Jid::Lid(_))
        }

        /// What kind of chat, for an ignored event's name.
        pub(crate) fn kind_name(&self, group: bool) -> &'static str {
            match self {
                _ if group => "group",
                Jid::Group => "group",
                Jid::Broadcast => "broadcast",
                Jid::Phone(_) | Jid::Lid(_) => "person",
                Jid::Other => "unknown chat",
            }
        }

        /// Adds this identifier to a contact's, keeping what is already there.
        pub(crate) fn fill(self, ids: &mut ContactIds) {
            match self {
                Jid::Phone(phone) => {
                    ids.phone.get_or_insert(phone);
                }
                Jid::Lid(lid) => {
                    ids.lid.get_or_insert(lid);
                }
                Jid::Group | Jid::Broadcast | Jid::Other => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jid::Jid;
    use super::*;

    #[test]
    fn jids_name_phones_lids_and_groups() {
        assert_eq!(
            Jid::parse("554199999999@c.us"),
            Jid::Phone("+554199999999".into())
        );
        assert_eq!(
            Jid::parse("5511999999999:12@s.whatsapp.net"),
            Jid::Phone("+5511999999999".into())
        );
        assert_eq!(Jid::parse("13718@lid"), Jid::Lid("13718@lid".into()));
        assert_eq!(Jid::parse("13718:3@lid"), Jid::Lid("13718@lid".into()));
        assert_eq!(Jid::parse("120363025246125888@g.us"), Jid::Group);
        assert_eq!(Jid::parse("status@broadcast"), Jid::Broadcast);
        assert_eq!(Jid::parse("chat@s.whatsapp.net"), Jid::Other);
        assert_eq!(
            Jid::parse("+1 555 123 4567"),
            Jid::Phone("+15551234567".into())
        );
    }

    #[test]
    fn acks_map_numbers_and_names() {
        assert_eq!(ack_status(&json!(-1)), Some(Some(DeliveryStatus::Failed)));
        assert_eq!(ack_status(&json!(0)), Some(None));
        assert_eq!(ack_status(&json!(1)), Some(Some(DeliveryStatus::Sent)));
        assert_eq!(ack_status(&json!(2)), Some(Some(DeliveryStatus::Delivered)));
        assert_eq!(ack_status(&json!(3)), Some(Some(DeliveryStatus::Read)));
        assert_eq!(ack_status(&json!(4)), Some(Some(DeliveryStatus::Read)));
        assert_eq!(ack_status(&json!(9)), None);
        assert_eq!(
            ack_status(&json!("DELIVERY_ACK")),
            Some(Some(DeliveryStatus::Delivered))
        );
        assert_eq!(
            ack_status(&json!("played")),
            Some(Some(DeliveryStatus::Read))
        );
        assert_eq!(ack_status(&json!("bogus")), None);
    }

    #[test]
    fn timestamps_read_numbers_strings_and_longs() {
        let at = Utc.timestamp_opt(1_717_607_420, 0).single();
        assert_eq!(unix_seconds(Some(&json!(1_717_607_420))), at);
        assert_eq!(unix_seconds(Some(&json!("1717607420"))), at);
        assert_eq!(
            unix_seconds(Some(
                &json!({"low": 1_717_607_420, "high": 0, "unsigned": true})
            )),
            at
        );
        assert_eq!(unix_seconds(Some(&json!(null))), None);
        assert_eq!(unix_seconds(None), None);
    }
}
