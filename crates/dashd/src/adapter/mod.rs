//! The adapter subsystem: the [`WhatsAppProvider`] trait every provider implements, the
//! types that cross it (what to send, what a webhook reported, why a send failed), and
//! the per-bot registry, breakers and health probes the dispatcher and the webhooks use.
//!
//! A provider instance belongs to one bot's chain entry: it is built from that entry's
//! stored settings and secrets ([`ProviderConfig`]) and knows nothing of other bots.
//! Providers turn a normalised [`Content`] into their wire format (interactive messages
//! where they have them, numbered text where they do not: [`numbered_text`]) and their
//! webhooks into normalised [`ProviderEvent`]s, verifying the signature first.

pub mod bridge;
pub mod evolution;
pub mod meta;
pub mod registry;
pub mod sandbox;
pub mod session;
pub mod signature;
pub mod twilio;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, Method};
use chrono::{DateTime, Utc};
use dash_core::api::{Attachment, Choice, Location, MessageBody};
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use uuid::Uuid;

/// A secret value (token, app secret, API key). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it (a header, an HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One chain entry's settings and secrets, as stored for a bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub bot_id: Uuid,
    pub kind: ProviderKind,
    /// Plain settings (`base_url`, `phone_number_id`, ...), defaults not applied.
    pub settings: BTreeMap<String, String>,
    /// Decrypted secrets (`access_token`, `app_secret`, ...).
    pub secrets: BTreeMap<String, Secret>,
}

impl ProviderConfig {
    /// A setting, or its documented default ([`dash_core::provider::SettingSpec`]).
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .or_else(|| self.kind.setting(name).and_then(|spec| spec.default))
    }

    /// A setting that must be there.
    pub fn required(&self, name: &str) -> Result<&str, ConfigError> {
        self.setting(name)
            .ok_or_else(|| ConfigError(format!("{} needs the setting {name}", self.kind)))
    }

    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name).filter(|s| !s.expose().is_empty())
    }

    /// A secret that must be there.
    pub fn required_secret(&self, name: &str) -> Result<&Secret, ConfigError> {
        self.secret(name)
            .ok_or_else(|| ConfigError(format!("{} needs the secret {name}", self.kind)))
    }
}

/// A provider's settings cannot make a working client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Who a message goes to: every identifier DashOffice knows for the contact. A provider
/// uses the one it can address (the phone where known; a Cloud API BSUID otherwise; a
/// WhatsApp Web LID on bridges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipient {
    /// E.164 with the leading `+`.
    pub phone: Option<String>,
    /// Cloud API business-scoped user id (`US.13491208655302741918`).
    pub bsuid: Option<String>,
    /// WhatsApp Web LID (`12345678901234@lid`).
    pub lid: Option<String>,
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Text; `preview_url` asks for a link preview; `reply_to` quotes a provider message id.
    Text {
        body: String,
        preview_url: bool,
        reply_to: Option<String>,
    },
    /// Media by public link or by the provider's uploaded media id.
    Media {
        kind: MediaKind,
        source: MediaSource,
        caption: Option<String>,
        filename: Option<String>,
    },
    /// A menu: reply buttons (up to 3 short labels), a list (up to 10 rows), or numbered
    /// text past that or where the provider has no interactive messages.
    Menu {
        body: String,
        choices: Vec<Choice>,
        /// Label of the button that opens a list.
        button: String,
    },
    /// A pre-approved template. For Twilio `name` is the Content SID (`HX...`) and the
    /// parameters become `ContentVariables` `{"1": ..., "2": ...}`.
    Template {
        name: String,
        language: String,
        parameters: Vec<String>,
    },
    /// A reaction to a message (`emoji` empty removes it).
    Reaction {
        message_id: String,
        emoji: String,
    },
    Location(Location),
    /// Marks a received message as read.
    MarkRead {
        message_id: String,
    },
}

/// Where media comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSource {
    Link(String),
    /// An id the provider returned for an upload.
    Id(String),
}

/// The label of the button that opens a list menu.
pub const DEFAULT_LIST_BUTTON: &str = "Options";

impl Content {
    /// The content of a flow's or an operator's message body: media (with the text as
    /// caption), a location, a menu, or text.
    pub fn from_body(body: &MessageBody) -> Content {
        if let Some(template) = &body.template {
            return Content::Template {
                name: template.name.clone(),
                language: template.language.clone(),
                parameters: template.parameters.clone(),
            };
        }
        if let Some(media) = &body.media {
            let caption = media
                .caption
                .clone()
                .or_else(|| (!body.text.is_empty()).then(|| body.text.clone()));
            return Content::Media {
                kind: media.kind,
                source: MediaSource::Link(media.url.clone()),
                caption,
                filename: None,
            };
        }
        if let Some(Attachment {
            kind,
            reference,
            caption,
            filename,
            ..
        }) = &body.attachment
        {
            return Content::Media {
                kind: *kind,
                source: MediaSource::Id(reference.clone()),
                caption: caption
                    .clone()
                    .or_else(|| (!body.text.is_empty()).then(|| body.text.clone())),
                filename: filename.clone(),
            };
        }
        if let Some(location) = &body.location {
            return Content::Location(location.clone());
        }
        if !body.choices.is_empty() {
            return Content::Menu {
                body: body.text.clone(),
                choices: body.choices.clone(),
                button: DEFAULT_LIST_BUTTON.to_owned(),
            };
        }
        Content::Text {
            preview_url: body.text.contains("https://") || body.text.contains("http://"),
            body: body.text.clone(),
            reply_to: body.reply_id.clone(),
        }
    }
}

/// A menu as numbered text, for providers (or menus) without interactive messages:
/// the body, then `1. label` per choice. Replies "1", "2"... are matched by the flow
/// engine as the choice's number.
pub fn numbered_text(body: &str, choices: &[Choice]) -> String {
    let mut text = body.trim_end().to_owned();
    for (index, choice) in choices.iter().enumerate() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("{}. {}", index + 1, choice.label));
    }
    text
}

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub bot_id: Uuid,
    /// The outbox entry's id: stable across retries (an idempotency key where the
    /// provider takes one).
    pub message_id: Uuid,
    pub to: Recipient,
    pub content: Content,
}

/// A provider accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    pub provider_message_id: String,
}

/// Why a send (or a probe) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub class: ErrorClass,
    /// The provider's error code (`131047`, `63016`, an HTTP status), when it gave one.
    pub code: Option<String>,
    /// What went wrong, for the outbox and the operator. Never holds a secret.
    pub message: String,
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Retryable,
            code: None,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            code: None,
            message: message.into(),
        }
    }

    pub fn broken(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::ProviderBroken,
            code: None,
            message: message.into(),
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// A transport failure (timeout, refused connection, reset): retryable. The text
    /// names what failed, never the URL's query or headers.
    pub fn transport(err: &reqwest::Error) -> Self {
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        let host = err
            .url()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        Self::retryable(format!("{what} ({host})"))
    }
}

/// A webhook delivery as received on the public listener: what signature checks need.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub method: &'a Method,
    /// Path as received (`/webhook/twilio/...`), without the query.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The raw body, exactly as signed.
    pub body: &'a [u8],
    pub now: DateTime<Utc>,
}

/// Every identifier a webhook gave for a customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactIds {
    /// E.164 with the leading `+`.
    pub phone: Option<String>,
    pub bsuid: Option<String>,
    pub parent_bsuid: Option<String>,
    pub lid: Option<String>,
    pub username: Option<String>,
    /// The profile name the customer shows.
    pub name: Option<String>,
}

impl ContactIds {
    pub fn is_empty(&self) -> bool {
        self.phone.is_none() && self.bsuid.is_none() && self.lid.is_none()
    }
}

/// Delivery states a provider reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

/// What a provider's webhook reported, normalised.
// Events live for one webhook delivery, a handful at a time: boxing the message body
// would buy nothing but an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// A message from a customer, or (with `from_me`) one the business sent from its own
    /// phone, which is logged and never answered.
    Inbound {
        from: ContactIds,
        provider_message_id: String,
        body: MessageBody,
        at: DateTime<Utc>,
        from_me: bool,
    },
    /// A delivery status for a message we sent.
    Status {
        provider_message_id: String,
        status: DeliveryStatus,
        /// The provider's error code and reason, on `Failed`.
        error: Option<(String, String)>,
        recipient: ContactIds,
        at: DateTime<Utc>,
    },
    /// A WhatsApp Web session changed (bridges, Evolution): state, QR, paired phone.
    Session {
        session: String,
        state: SessionState,
        qr: Option<String>,
        /// When that QR code expires, when the library says.
        qr_expires_at: Option<DateTime<Utc>>,
        /// A code to type on the phone instead of scanning (pairing by phone number).
        pairing_code: Option<String>,
        phone: Option<String>,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// Two identifiers of one customer learnt apart from a message (a bridge's LID ↔
    /// phone mapping): they become one contact.
    ContactLinked { ids: ContactIds, at: DateTime<Utc> },
    /// The Cloud API issued a customer a new BSUID (`user_id_update`).
    ContactIdChanged {
        old_bsuid: String,
        new_bsuid: String,
        at: DateTime<Utc>,
    },
    /// An event type DashOffice does not act on: acknowledged and counted.
    Ignored { kind: String },
}

/// A paired WhatsApp Web session's state, across bridges and Evolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Initializing,
    Qr,
    Authenticated,
    Ready,
    Disconnected,
    LoggedOut,
    Failed,
}

impl SessionState {
    /// A session that cannot send (its provider's breaker opens for the bot).
    pub fn is_broken(self) -> bool {
        matches!(
            self,
            SessionState::Disconnected | SessionState::LoggedOut | SessionState::Failed
        )
    }
}

/// A webhook that is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong signature or token: 401, nothing stored.
    #[error("bad signature: {0}")]
    Signature(String),
    /// Not the provider's format: 400.
    #[error("malformed webhook: {0}")]
    Malformed(String),
    /// The provider's settings lack what verification needs (an app secret): 401, and
    /// the operator is told what to set.
    #[error("not configured: {0}")]
    NotConfigured(String),
}

/// What a health probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// One line for the operator (`phone number +1 555... verified`, `session ready`).
    pub detail: String,
}

/// One WhatsApp provider instance, for one bot.
#[async_trait]
pub trait WhatsAppProvider: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> ProviderKind;

    /// Sends one message.
    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, SendError>;

    /// Verifies a webhook delivery (signature or token) and normalises it. Nothing is
    /// parsed before the signature holds.
    fn parse_webhook(
        &self,
        request: &WebhookRequest<'_>,
    ) -> Result<Vec<ProviderEvent>, WebhookError>;

    /// Answers a webhook registration challenge (`hub.challenge` for Cloud API): the body
    /// to return, or an error when the token does not match.
    fn challenge(&self, query: &str) -> Result<String, WebhookError> {
        let _ = query;
        Err(WebhookError::Malformed(format!(
            "{} has no registration challenge",
            self.kind()
        )))
    }

    /// Checks that the provider can send for this bot (token valid, session ready).
    async fn probe(&self) -> Result<ProbeReport, SendError>;
}

/// How long a provider call may take before it counts as a (retryable) timeout.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Text of an HTTP error body for an error message: at most 300 characters, one line.
pub fn excerpt(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    one_line.trim().to_owned()
}

/// Digits of a phone number, `whatsapp:` and `+` and JID suffixes stripped, as E.164
/// with `+`; None when what is left is not 6 to 15 digits.
pub fn e164(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("whatsapp:").unwrap_or(raw);
    let raw = raw.split('@').next().unwrap_or(raw);
    let raw = raw.split(':').next().unwrap_or(raw);
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, '+' | ' ' | '-' | '(' | ')'))
        .collect();
    (digits.len() >= 6 && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("+{digits}"))
}

/// `base` with path segments appended (each percent-encoded as needed). `base` must be
/// able to be a base (an http or https URL with a host), which the providers check when
/// they are built.
pub(crate) fn join_url(base: &reqwest::Url, segments: &[&str]) -> reqwest::Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}
