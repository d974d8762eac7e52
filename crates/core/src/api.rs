//! The admin API contract: the JSON bodies `dashctl` sends to `dashd` over the admin
//! socket and the bodies it gets back. Field names here are stable: they are also what
//! `dashctl --output json` prints, and scripts depend on them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::bot::BotSettings;
use crate::{BotStatus, TenantStatus, ValidationError, validate};

/// Version of the admin API. Raised when a change would break an older `dashctl`.
pub const ADMIN_API_VERSION: u32 = 1;

/// Response header carrying `dashd`'s release version.
pub const HEADER_DAEMON_VERSION: &str = "x-dashd-version";
/// Response header carrying `dashd`'s admin API version.
pub const HEADER_API_VERSION: &str = "x-dashd-api";

/// The body of every error response: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One of the [`codes`] constants.
    pub code: String,
    pub message: String,
    /// The offending field, for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem, when there are several (e.g. a flow document's errors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// Error codes used in [`ErrorDetail::code`].
pub mod codes {
    pub const VALIDATION: &str = "validation_failed";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const NOT_FOUND: &str = "not_found";
    pub const CONFLICT: &str = "conflict";
    pub const FORBIDDEN: &str = "forbidden";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const INTERNAL: &str = "internal";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const URI_TOO_LONG: &str = "uri_too_long";
    pub const HEADERS_TOO_LARGE: &str = "headers_too_large";
    pub const TIMEOUT: &str = "request_timeout";
    /// A bridge event for a session no bot owns: the bridge sets it aside, no retry.
    pub const UNKNOWN_SESSION: &str = "unknown_session";
}

/// `GET /v1/status`: what the daemon is and how it is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub api_version: u32,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub uptime_s: u64,
    pub data_dir: String,
    pub admin_socket: String,
    /// Address of the public HTTP listener (REST API, webhooks, `/health`).
    pub listen: String,
    pub database: DatabaseStatus,
    pub tenants: u64,
    pub bots: u64,
    /// Verified webhook events acknowledged without effect since start (unknown event
    /// types, group messages, statuses of no interest).
    #[serde(default)]
    pub webhook_events_ignored: u64,
}

/// The storage backend as the status command reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseStatus {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Where the data lives, with any password removed.
    pub location: String,
    /// Latest applied migration.
    pub schema_version: i64,
}

/// `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub slug: String,
    /// Defaults to the slug.
    #[serde(default)]
    pub name: Option<String>,
}

impl CreateTenant {
    /// Checks every field and returns the normalised request.
    pub fn validated(&self) -> Result<CreateTenant, ValidationError> {
        validate::slug("slug", &self.slug)?;
        let name = match &self.name {
            Some(name) => validate::display_name("name", name)?,
            None => self.slug.clone(),
        };
        Ok(CreateTenant {
            slug: self.slug.clone(),
            name: Some(name),
        })
    }
}

/// `PATCH /v1/tenants/{tenant}`: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TenantStatus>,
    /// REST API requests a minute for this tenant; 0 returns it to the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_rate_per_minute: Option<u32>,
}

impl UpdateTenant {
    /// Checks every present field and returns the normalised request.
    pub fn validated(&self) -> Result<UpdateTenant, ValidationError> {
        let name = self
            .name
            .as_deref()
            .map(|name| validate::display_name("name", name))
            .transpose()?;
        if self
            .api_rate_per_minute
            .is_some_and(|rate| rate > 1_000_000)
        {
            return Err(ValidationError::new(
                "api_rate_per_minute",
                "at most 1000000 requests a minute (0: the server's default)",
            ));
        }
        Ok(UpdateTenant {
            name,
            status: self.status,
            api_rate_per_minute: self.api_rate_per_minute,
        })
    }

    /// True when the request changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.status.is_none() && self.api_rate_per_minute.is_none()
    }
}

/// `DELETE /v1/tenants/{tenant}` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantDeleted {
    pub tenant: crate::Tenant,
    /// Bots removed with the tenant (only non-zero with `force`).
    pub bots_deleted: u64,
}

/// `POST /v1/tenants/{tenant}/bots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBot {
    pub name: String,
    #[serde(default)]
    pub phone: Option<String>,
    /// IANA zone; defaults to `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// A JSON object; defaults to `{}`.
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    /// Providers to send through, in order (stored as `settings.chain`; default `sandbox`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<String>>,
}

impl CreateBot {
    /// Checks every field and returns the normalised request (phone in E.164, time zone
    /// in its canonical spelling, settings an object).
    pub fn validated(&self) -> Result<CreateBot, ValidationError> {
        validate::slug("name", &self.name)?;
        let phone = self
            .phone
            .as_deref()
            .map(|phone| validate::phone("phone", phone))
            .transpose()?;
        let timezone = match self.timezone.as_deref() {
            Some(tz) => validate::timezone("timezone", tz)?.name().to_owned(),
            None => "UTC".to_owned(),
        };
        let mut settings = match &self.settings {
            Some(settings) => BotSettings::from_json(settings)?,
            None => BotSettings::default(),
        };
        if let Some(chain) = &self.chain {
            settings.chain = Some(crate::provider::parse_chain(chain)?);
        }
        if settings.chain.is_none() {
            settings.chain = Some(crate::provider::DEFAULT_CHAIN.to_vec());
        }
        Ok(CreateBot {
            name: self.name.clone(),
            phone,
            timezone: Some(timezone),
            settings: Some(settings.to_json()),
            chain: None,
        })
    }
}

/// `PATCH /v1/bots/{id}`: only the fields present change. `"phone": null` removes
/// the number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub phone: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BotStatus>,
    /// Replaces the whole settings document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    /// Replaces the provider chain (`settings.chain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<String>>,
}

impl UpdateBot {
    /// Checks every present field and returns the normalised request.
    pub fn validated(&self) -> Result<UpdateBot, ValidationError> {
        if let Some(name) = &self.name {
            validate::slug("name", name)?;
        }
        let phone = match &self.phone {
            Some(Some(phone)) => Some(Some(validate::phone("phone", phone)?)),
            other => other.clone(),
        };
        let timezone = self
            .timezone
            .as_deref()
            .map(|tz| validate::timezone("timezone", tz).map(|tz| tz.name().to_owned()))
            .transpose()?;
        let settings = self
            .settings
            .as_ref()
            .map(|settings| BotSettings::from_json(settings).map(|s| s.to_json()))
            .transpose()?;
        let chain = self
            .chain
            .as_ref()
            .map(|chain| {
                crate::provider::parse_chain(chain)
                    .map(|kinds| kinds.iter().map(|k| k.as_str().to_owned()).collect())
            })
            .transpose()?;
        Ok(UpdateBot {
            name: self.name.clone(),
            phone,
            timezone,
            status: self.status,
            settings,
            chain,
        })
    }

    /// True when the request changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.phone.is_none()
            && self.timezone.is_none()
            && self.status.is_none()
            && self.settings.is_none()
            && self.chain.is_none()
    }
}

/// Query of `GET /v1/bots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotFilter {
    /// Only this tenant's bots (slug).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// A deleted record's identity, returned by deletions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: Uuid,
    /// `TENANT/BOT` for bots, the slug for tenants.
    pub name: String,
}

/// `POST .../flows`: a new version of the bot's flow document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportFlows {
    /// The document as written (TOML or JSON).
    pub source: String,
    /// Defaults to what the text looks like (JSON when it starts with `{`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<crate::flow::Format>,
    /// Make the new version the one new conversations start on.
    #[serde(default)]
    pub activate: bool,
}

/// Largest flow document accepted, in bytes.
pub const MAX_FLOW_DOCUMENT: usize = 1 << 20;

/// A stored version of a bot's flows, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowVersionInfo {
    pub version: u32,
    /// New conversations start on the active version.
    pub active: bool,
    pub format: crate::flow::Format,
    pub size_bytes: u64,
    pub flows: Vec<FlowSummary>,
    pub created_at: DateTime<Utc>,
}

/// One flow of a version, in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSummary {
    pub id: String,
    pub triggers: usize,
    pub steps: usize,
}

/// A version with its document: `source` as imported (comments kept) and `document`,
/// the parsed form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowVersionDetail {
    #[serde(flatten)]
    pub info: FlowVersionInfo,
    pub source: String,
    pub document: serde_json::Value,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bot_normalises_and_defaults() {
        let req = CreateBot {
            name: "sales".into(),
            phone: Some("+54 9 11 2345-6789".into()),
            timezone: None,
            settings: None,
            chain: None,
        }
        .validated()
        .unwrap();
        assert_eq!(req.phone.as_deref(), Some("+5491123456789"));
        assert_eq!(req.timezone.as_deref(), Some("UTC"));
        assert_eq!(
            req.settings,
            Some(serde_json::json!({"chain": ["sandbox"]}))
        );
    }

    #[test]
    fn create_bot_rejects_each_bad_field_by_name() {
        let base = CreateBot {
            name: "sales".into(),
            phone: None,
            timezone: None,
            settings: None,
            chain: None,
        };
        let cases = [
            (
                CreateBot {
                    name: "Sales".into(),
                    ..base.clone()
                },
                "name",
            ),
            (
                CreateBot {
                    phone: Some("12345".into()),
                    ..base.clone()
                },
                "phone",
            ),
            (
                CreateBot {
                    timezone: Some("Nowhere/City".into()),
                    ..base.clone()
                },
                "timezone",
            ),
            (
                CreateBot {
                    settings: Some(serde_json::json!([1])),
                    ..base.clone()
                },
                "settings",
            ),
            (
                CreateBot {
                    chain: Some(vec!["meta".into(), "meta".into()]),
                    ..base.clone()
                },
                "chain",
            ),
        ];
        for (req, field) in cases {
            assert_eq!(req.validated().unwrap_err().field, field);
        }
    }

    #[test]
    fn update_bot_tells_null_from_absent() {
        let absent: UpdateBot = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.phone, None);
        assert!(absent.is_empty());
        let cleared: UpdateBot = serde_json::from_str(r#"{"phone":null}"#).unwrap();
        assert_eq!(cleared.phone, Some(None));
        let set: UpdateBot = serde_json::from_str(r#"{"phone":"+14155552671"}"#).unwrap();
        assert_eq!(set.phone, Some(Some("+14155552671".into())));
        assert!(serde_json::from_str::<UpdateBot>(r#"{"phon":"x"}"#).is_err());
    }

    #[test]
    fn bot_settings_are_typed_on_create_and_update() {
        let base = CreateBot {
            name: "sales".into(),
            phone: None,
            timezone: None,
            settings: Some(serde_json::json!({"rate_limit_per_minute": "abc"})),
            chain: None,
        };
        assert_eq!(
            base.validated().unwrap_err().field,
            "settings.rate_limit_per_minute"
        );
        let update: UpdateBot =
            serde_json::from_str(r#"{"settings":{"chain":"sandbox"}}"#).unwrap();
        assert_eq!(update.validated().unwrap_err().field, "settings.chain");
        let update: UpdateBot =
            serde_json::from_str(r#"{"settings":{"rate_limit_per_minute":5}}"#).unwrap();
        assert_eq!(
            update.validated().unwrap().settings,
            Some(serde_json::json!({"rate_limit_per_minute": 5}))
        );
    }

    #[test]
    fn sandbox_fields_are_bounded() {
        let base = SandboxInbound {
            from: "+5491100000001".into(),
            name: Some(" Ana ".into()),
            text: "hola".into(),
            reply_id: None,
            message_id: None,
        };
        assert_eq!(base.validated().unwrap().name.as_deref(), Some("Ana"));
        let cases = [
            (
                SandboxInbound {
                    name: Some("a\u{1b}]0;x\u{7}".into()),
                    ..base.clone()
                },
                "name",
            ),
            (
                SandboxInbound {
                    name: Some("n".repeat(201)),
                    ..base.clone()
                },
                "name",
            ),
            (
                SandboxInbound {
                    text: "t".repeat(MAX_TEXT + 1),
                    ..base.clone()
                },
                "text",
            ),
            (
                SandboxInbound {
                    reply_id: Some("r".repeat(MAX_ID + 1)),
                    ..base.clone()
                },
                "reply_id",
            ),
            (
                SandboxInbound {
                    message_id: Some("m".repeat(MAX_ID + 1)),
                    ..base.clone()
                },
                "message_id",
            ),
            (
                SandboxInbound {
                    from: "1".repeat(100_000),
                    ..base.clone()
                },
                "from",
            ),
        ];
        for (req, field) in cases {
            let err = req.validated().unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.message.len() < 300, "{}", err.message);
        }
    }

    #[test]
    fn tenant_requests_validate() {
        let req = CreateTenant {
            slug: "acme".into(),
            name: None,
        };
        assert_eq!(req.validated().unwrap().name.as_deref(), Some("acme"));
        let bad = CreateTenant {
            slug: "ACME".into(),
            name: None,
        };
        assert_eq!(bad.validated().unwrap_err().field, "slug");
        assert!(UpdateTenant::default().is_empty());
    }
}

/// Where a message is in its life. Inbound: `received` → `processed`. Outbound (the
/// outbox): `pending` → `processing` → `sent` → `delivered` → `read`, or after a failed
/// attempt `failed` (a retry is scheduled) … → `dead`; `cancelled` by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Received,
    Processed,
    Pending,
    Processing,
    Sent,
    Delivered,
    Read,
    Failed,
    Dead,
    Cancelled,
}

impl MessageState {
    /// Every state.
    pub const ALL: [MessageState; 10] = [
        MessageState::Received,
        MessageState::Processed,
        MessageState::Pending,
        MessageState::Processing,
        MessageState::Sent,
        MessageState::Delivered,
        MessageState::Read,
        MessageState::Failed,
        MessageState::Dead,
        MessageState::Cancelled,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Received => "received",
            MessageState::Processed => "processed",
            MessageState::Pending => "pending",
            MessageState::Processing => "processing",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::Read => "read",
            MessageState::Failed => "failed",
            MessageState::Dead => "dead",
            MessageState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for MessageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MessageState {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = MessageState::ALL.iter().map(|s| s.as_str()).collect();
                ValidationError::new(
                    "state",
                    format!(
                        "{s:?} is not a message state: use one of {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

/// What a message says: text, optional media, menu choices, and for inbound messages the
/// interactive reply id and the sender's name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<crate::flow::document::Media>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Media held by the provider, named by its reference (a Cloud API media id, a
    /// bridge's media key): set on inbound media, and on outbound media sent by an
    /// uploaded id rather than by `media.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// A shared location (inbound), or one to send (outbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Contact cards shared by the customer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<SharedContact>,
    /// A pre-approved template (Cloud API, Twilio), sent instead of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateMessage>,
}

/// Media the provider holds, by its own reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "type")]
    pub kind: crate::flow::document::MediaKind,
    /// The provider's id or URL for the media.
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// A point on the map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A contact card a customer shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedContact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
}

/// A menu choice offered to the contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub id: String,
    pub label: String,
}

/// A message as the log and the queue show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: Uuid,
    pub bot_id: Uuid,
    pub contact: String,
    pub direction: Direction,
    pub body: MessageBody,
    pub state: MessageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    pub attempts: u32,
    /// When the next attempt is due (outbound, pending or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
}

/// One entry of a message's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub state: MessageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// `GET /v1/queue/{id}`: an outbox entry with its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    #[serde(flatten)]
    pub message: MessageRecord,
    pub history: Vec<MessageEvent>,
    /// Each try at sending it through a provider, oldest first.
    #[serde(default)]
    pub send_attempts: Vec<SendAttemptRecord>,
}

/// One try at sending an outbox entry through one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAttemptRecord {
    pub provider: String,
    /// `sent`, `retryable`, `permanent`, `provider_broken`, or `skipped` (breaker open).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

/// Query of `GET /v1/queue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFilter {
    /// `TENANT/BOT` or a bot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MessageState>,
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A pre-approved WhatsApp template: its name, language and body parameters ({{1}}...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateMessage {
    pub name: String,
    /// A language code as the template was approved in, e.g. `es_AR`.
    pub language: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
}

/// `POST .../messages`: send a text, a media file by link, or a template to a contact
/// through the bot's chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub to: String,
    /// The text; with `media`, its caption.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub media: Option<crate::flow::document::Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateMessage>,
}

/// Longest text accepted for one WhatsApp message.
pub const MAX_TEXT: usize = 4096;

impl SendMessage {
    /// Checks the recipient (an E.164 number or another contact identifier, see
    /// [`validate::contact_id`]) and the content: a text (1 to 4096 characters), a media
    /// link (`https://`, with an optional caption), or a template (name, language, at
    /// most 20 parameters), one of them.
    pub fn validated(&self) -> Result<SendMessage, ValidationError> {
        let to = validate::contact_id("to", &self.to)?;
        let count = self.text.chars().count();
        if count > MAX_TEXT {
            return Err(ValidationError::new("text", "must be 1 to 4096 characters"));
        }
        match (&self.media, &self.template) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::new(
                    "template",
                    "send media or a template, not both",
                ));
            }
            (Some(media), None) => {
                if !(media.url.starts_with("https://") || media.url.starts_with("http://"))
                    || media.url.len() > 2048
                {
                    return Err(ValidationError::new(
                        "media.url",
                        "a media link is an https:// URL of at most 2048 characters",
                    ));
                }
            }
            (None, Some(template)) => {
                if !self.text.is_empty() {
                    return Err(ValidationError::new(
                        "text",
                        "a template carries its own text: give parameters instead",
                    ));
                }
                if template.name.trim().is_empty() || template.language.trim().is_empty() {
                    return Err(ValidationError::new(
                        "template",
                        "a template needs its name and language",
                    ));
                }
                validate::token("template.name", &template.name, 512)?;
                validate::token("template.language", &template.language, 20)?;
                if template.parameters.len() > 20
                    || template
                        .parameters
                        .iter()
                        .any(|p| p.is_empty() || p.chars().count() > 1024)
                {
                    return Err(ValidationError::new(
                        "template.parameters",
                        "at most 20 parameters of 1 to 1024 characters",
                    ));
                }
            }
            (None, None) => {
                if self.text.trim().is_empty() {
                    return Err(ValidationError::new("text", "must be 1 to 4096 characters"));
                }
            }
        }
        Ok(SendMessage { to, ..self.clone() })
    }

    /// The body to queue.
    pub fn body(&self) -> MessageBody {
        MessageBody {
            text: self.text.clone(),
            media: self.media.clone(),
            template: self.template.clone(),
            ..MessageBody::default()
        }
    }
}

/// `POST .../sandbox/messages`: a message from a pretend customer to a sandbox bot, going
/// through the real inbound pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxInbound {
    /// The customer's number (E.164).
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub text: String,
    /// An interactive reply's id (a menu option's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<String>,
    /// The provider's message id; a repeated id is a duplicate delivery and is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// Longest interactive reply id or provider message id accepted.
pub const MAX_ID: usize = 256;

impl SandboxInbound {
    /// Checks every field with the send API's bounds: the number (E.164), the text (at
    /// most 4096 characters), the contact's name (a display name) and the ids (at most
    /// 256 characters, no control characters).
    pub fn validated(&self) -> Result<SandboxInbound, ValidationError> {
        let from = validate::phone("from", &self.from)?;
        if self.text.chars().count() > MAX_TEXT {
            return Err(ValidationError::new(
                "text",
                "must be at most 4096 characters",
            ));
        }
        let name = self
            .name
            .as_deref()
            .map(|name| validate::display_name("name", name))
            .transpose()?;
        if let Some(reply_id) = &self.reply_id {
            validate::token("reply_id", reply_id, MAX_ID)?;
        }
        if let Some(message_id) = &self.message_id {
            validate::token("message_id", message_id, MAX_ID)?;
        }
        Ok(SandboxInbound {
            from,
            name,
            ..self.clone()
        })
    }
}

/// Answer to an inbound message: stored (or recognised as a duplicate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub message_id: Uuid,
    pub duplicate: bool,
}

/// One line of `GET .../sandbox/stream` (newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SandboxEvent {
    /// The bot sent this to the contact.
    Reply {
        contact: String,
        message_id: Uuid,
        body: Box<MessageBody>,
        at: DateTime<Utc>,
    },
    /// Nothing more is pending for the contact: every message in is handled and every
    /// message out is sent (or has failed for good).
    Idle { contact: String, at: DateTime<Utc> },
}

/// One line of `GET /v1/sandbox/stream`: every sandbox bot's events, with the bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxFeedEvent {
    pub bot_id: Uuid,
    #[serde(flatten)]
    pub event: SandboxEvent,
}

/// A conversation as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub contact: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_name: Option<String>,
    /// `idle`, `active`, `handoff` or `waiting_http`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A conversation with its flow state and transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub summary: ConversationSummary,
    /// The engine's state (variables, timers...).
    pub state: serde_json::Value,
    /// Messages in and out, oldest first.
    pub transcript: Vec<MessageRecord>,
}

/// A (bot, provider)'s health as the dispatcher sees it (`dashctl provider status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub provider: String,
    /// `closed` (sending), `open` (skipped until `open_until`), `half_open` (one probe
    /// goes through).
    pub breaker: String,
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
    /// Median send latency of the last 64 sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_latency_ms: Option<u64>,
}

/// A bot's provider chain and fallback policy (`dashctl chain show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainView {
    pub bot: String,
    pub chain: Vec<String>,
    pub fallback_threshold_errors: u32,
    pub fallback_cooldown_seconds: u64,
    /// Each chain entry's state, in chain order.
    pub providers: Vec<ProviderStatus>,
}

/// `PUT /v1/bots/{tenant}/{bot}/chain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetChain {
    pub chain: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_threshold_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_cooldown_seconds: Option<u64>,
}

/// `PUT /v1/bots/{tenant}/{bot}/providers/{provider}`: settings and secrets to set
/// (merged into what is stored), and names to unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetProvider {
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
}

/// A bot's provider entry as the admin API shows it: settings, secrets only as set or
/// not, and what to configure on the provider's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderView {
    pub bot: String,
    pub provider: String,
    /// Every setting the provider takes, with the stored value or its default.
    pub settings: std::collections::BTreeMap<String, String>,
    /// Each secret the provider takes: `set` or `not set`. Values are never returned.
    pub secrets: std::collections::BTreeMap<String, String>,
    /// Required settings or secrets still missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// The webhook URL to configure on the provider's side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// What else to do on the provider's side (e.g. Evolution's `webhook/set` body).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instructions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The outcome of `dashctl provider test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub provider: String,
    pub ok: bool,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<crate::provider::ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    pub latency_ms: u64,
}

/// A bot's paired WhatsApp Web session on one provider (`dashctl session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// `tenant/bot`.
    pub bot: String,
    pub bot_id: Uuid,
    pub provider: String,
    /// The session's name on the bridge or Evolution instance.
    pub session: String,
    /// `initializing`, `qr`, `authenticated`, `ready`, `disconnected`, `logged_out`,
    /// `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The paired phone number, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The QR code payload to scan, while the session waits for pairing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_at: Option<DateTime<Utc>>,
    /// When the QR code stops being valid, when the library says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_expires_at: Option<DateTime<Utc>>,
    /// The code to type on the phone (Linked devices > Link with phone number), when
    /// pairing was started with a phone number and the library supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    /// Since when the session is in this state.
    pub since: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Recent state changes, newest last (on `show`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SessionChange>,
}

/// One state change of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionChange {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}
