//! Bots: one WhatsApp number answering one tenant's customers. A bot is addressed as
//! `TENANT/BOT` (slugs) or by its UUID; [`BotRef`] parses both.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::provider::{ProviderKind, parse_chain};
use crate::{ValidationError, validate};

/// A bot as stored and as returned by the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bot {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The owning tenant's slug, so listings read as `TENANT/BOT` without a second lookup.
    pub tenant: String,
    /// Unique within the tenant, slug rules.
    pub name: String,
    /// E.164, when the bot is tied to a number.
    pub phone: Option<String>,
    /// IANA time zone name used for business hours and dates in flows.
    pub timezone: String,
    pub status: BotStatus,
    /// Free-form settings document (a JSON object) that later features extend:
    /// provider chain, flows, business hours.
    pub settings: serde_json::Value,
    /// The flow version new conversations start on (`dashctl flow activate`).
    #[serde(default)]
    pub flow_version: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Bot {
    /// `TENANT/BOT`, the name humans use.
    pub fn path(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }
}

/// The keys a bot's settings document may hold, checked whenever settings are written.
/// The document is stored as the JSON object this serialises to, so bots created before
/// the type existed read the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotSettings {
    /// Providers to send through, first to last (default: sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<ProviderKind>>,
    /// Messages this bot sends per minute at most; 0 means no per-bot limit. Unset: the
    /// daemon's `dispatcher.bot_rate_per_minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<u32>,
    /// Consecutive retryable failures that open a provider's breaker for this bot
    /// (default [`crate::provider::DEFAULT_FALLBACK_THRESHOLD`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_threshold_errors: Option<u32>,
    /// Seconds an open breaker waits before one probe (default
    /// [`crate::provider::DEFAULT_FALLBACK_COOLDOWN_S`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_cooldown_seconds: Option<u64>,
}

/// Highest `fallback_threshold_errors` accepted.
pub const MAX_FALLBACK_THRESHOLD: u32 = 1000;
/// Highest `fallback_cooldown_seconds` accepted (a day).
pub const MAX_FALLBACK_COOLDOWN_S: u64 = 86_400;

/// Highest `rate_limit_per_minute` accepted (a thousand a second: beyond what any
/// WhatsApp provider allows, so a larger number is a typo).
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 60_000;

impl BotSettings {
    /// Every key [`BotSettings`] knows, as its error messages list them.
    pub const KEYS: [&'static str; 4] = [
        "chain",
        "rate_limit_per_minute",
        "fallback_threshold_errors",
        "fallback_cooldown_seconds",
    ];

    /// Reads and checks a settings document as a client sent it. Each problem is a
    /// [`ValidationError`] naming the key (`settings.chain`, ...); nothing is replaced by
    /// a default. `null` for a key means the key is unset.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ValidationError> {
        let Some(map) = value.as_object() else {
            return Err(ValidationError::new(
                "settings",
                "must be a JSON object (e.g. {}), not a list, string or number",
            ));
        };
        if let Some(key) = map.keys().find(|key| !Self::KEYS.contains(&key.as_str())) {
            let field = if validate::token("settings", key, 64).is_ok() {
                format!("settings.{key}")
            } else {
                "settings".to_owned()
            };
            return Err(ValidationError::new(
                field,
                format!(
                    "{} is not a bot setting: use {}",
                    validate::quoted(key),
                    Self::KEYS.join(" or ")
                ),
            ));
        }
        let present = |key: &str| map.get(key).filter(|value| !value.is_null());
        let chain = present("chain").map(chain_setting).transpose()?;
        let rate_limit_per_minute = present("rate_limit_per_minute")
            .map(rate_setting)
            .transpose()?;
        let fallback_threshold_errors = present("fallback_threshold_errors")
            .map(|value| {
                bounded(
                    value,
                    "settings.fallback_threshold_errors",
                    1,
                    MAX_FALLBACK_THRESHOLD.into(),
                )
                .map(|v| v as u32)
            })
            .transpose()?;
        let fallback_cooldown_seconds = present("fallback_cooldown_seconds")
            .map(|value| {
                bounded(
                    value,
                    "settings.fallback_cooldown_seconds",
                    0,
                    MAX_FALLBACK_COOLDOWN_S,
                )
            })
            .transpose()?;
        Ok(Self {
            chain,
            rate_limit_per_minute,
            fallback_threshold_errors,
            fallback_cooldown_seconds,
        })
    }

    /// The document as stored in the bot's `settings` column.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if let Some(chain) = &self.chain {
            let names = chain.iter().map(|kind| kind.as_str().into()).collect();
            map.insert("chain".into(), serde_json::Value::Array(names));
        }
        if let Some(limit) = self.rate_limit_per_minute {
            map.insert("rate_limit_per_minute".into(), limit.into());
        }
        if let Some(threshold) = self.fallback_threshold_errors {
            map.insert("fallback_threshold_errors".into(), threshold.into());
        }
        if let Some(cooldown) = self.fallback_cooldown_seconds {
            map.insert("fallback_cooldown_seconds".into(), cooldown.into());
        }
        serde_json::Value::Object(map)
    }
}

fn chain_setting(value: &serde_json::Value) -> Result<Vec<ProviderKind>, ValidationError> {
    const FIELD: &str = "settings.chain";
    let not_a_list = || {
        ValidationError::new(
            FIELD,
            "must be a list of provider names (e.g. [\"sandbox\"])",
        )
    };
    let names = value
        .as_array()
        .ok_or_else(not_a_list)?
        .iter()
        .map(|name| name.as_str().map(str::to_owned).ok_or_else(not_a_list))
        .collect::<Result<Vec<String>, _>>()?;
    parse_chain(&names).map_err(|err| ValidationError::new(FIELD, err.message))
}

/// A whole number from `min` to `max`.
fn bounded(
    value: &serde_json::Value,
    field: &str,
    min: u64,
    max: u64,
) -> Result<u64, ValidationError> {
    value
        .as_u64()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| {
            ValidationError::new(
                field,
                format!(
                    "must be a whole number from {min} to {max}, not {}",
                    validate::quoted(&value.to_string())
                ),
            )
        })
}

fn rate_setting(value: &serde_json::Value) -> Result<u32, ValidationError> {
    value
        .as_u64()
        .and_then(|limit| u32::try_from(limit).ok())
        .filter(|limit| *limit <= MAX_RATE_LIMIT_PER_MINUTE)
        .ok_or_else(|| {
            ValidationError::new(
                "settings.rate_limit_per_minute",
                format!(
                    "must be a whole number from 0 (no limit) to {MAX_RATE_LIMIT_PER_MINUTE}, not {}",
                    validate::quoted(&value.to_string())
                ),
            )
        })
}

/// Whether a bot answers messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BotStatus {
    Active,
    Paused,
}

impl BotStatus {
    /// Every status, in the order shown in help text.
    pub const ALL: [BotStatus; 2] = [BotStatus::Active, BotStatus::Paused];

    /// The stored and displayed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BotStatus::Active => "active",
            BotStatus::Paused => "paused",
        }
    }
}

impl std::fmt::Display for BotStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BotStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "status",
                    format!("{s:?} is not a bot status: use active or paused"),
                )
            })
    }
}

/// How a user names a bot: `TENANT/BOT` or the bot's UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BotRef {
    Id(Uuid),
    Path { tenant: String, bot: String },
}

impl BotRef {
    /// Parses `TENANT/BOT` or a UUID, checking both slugs.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if let Ok(id) = Uuid::parse_str(value) {
            return Ok(BotRef::Id(id));
        }
        let Some((tenant, bot)) = value.split_once('/') else {
            return Err(ValidationError::new(
                "bot",
                format!(
                    "{value:?} is not a bot reference: use TENANT/BOT (e.g. acme/sales) or the bot's id"
                ),
            ));
        };
        validate::slug("tenant", tenant)?;
        validate::slug("bot", bot)?;
        Ok(BotRef::Path {
            tenant: tenant.to_owned(),
            bot: bot.to_owned(),
        })
    }
}

impl std::fmt::Display for BotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BotRef::Id(id) => write!(f, "{id}"),
            BotRef::Path { tenant, bot } => write!(f, "{tenant}/{bot}"),
        }
    }
}

impl std::str::FromStr for BotRef {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_refs_parse_paths_and_ids() {
        assert_eq!(
            BotRef::parse("acme/sales").unwrap(),
            BotRef::Path {
                tenant: "acme".into(),
                bot: "sales".into()
            }
        );
        let id = Uuid::new_v4();
        assert_eq!(BotRef::parse(&id.to_string()).unwrap(), BotRef::Id(id));
        assert_eq!(BotRef::parse("acme").unwrap_err().field, "bot");
        assert_eq!(BotRef::parse("Acme/sales").unwrap_err().field, "tenant");
        assert_eq!(BotRef::parse("acme/sales/x").unwrap_err().field, "bot");
        assert_eq!(
            BotRef::parse("acme/sales").unwrap().to_string(),
            "acme/sales"
        );
    }

    #[test]
    fn settings_are_checked_key_by_key() {
        use serde_json::json;
        let good =
            BotSettings::from_json(&json!({"chain": ["sandbox"], "rate_limit_per_minute": 120}))
                .unwrap();
        assert_eq!(good.chain, Some(vec![ProviderKind::Sandbox]));
        assert_eq!(good.rate_limit_per_minute, Some(120));
        assert_eq!(
            good.to_json(),
            json!({"chain": ["sandbox"], "rate_limit_per_minute": 120})
        );
        assert_eq!(
            BotSettings::from_json(&json!({"rate_limit_per_minute": 0}))
                .unwrap()
                .rate_limit_per_minute,
            Some(0)
        );
        assert_eq!(
            BotSettings::from_json(&json!({"chain": null})).unwrap(),
            BotSettings::default()
        );
        let cases = [
            (json!([1]), "settings"),
            (json!({"chain": "sandbox"}), "settings.chain"),
            (json!({"chain": [1]}), "settings.chain"),
            (json!({"chain": []}), "settings.chain"),
            (json!({"chain": ["carrier-pigeon"]}), "settings.chain"),
            (
                json!({"rate_limit_per_minute": -1}),
                "settings.rate_limit_per_minute",
            ),
            (
                json!({"rate_limit_per_minute": "-1"}),
                "settings.rate_limit_per_minute",
            ),
            (
                json!({"rate_limit_per_minute": "abc"}),
                "settings.rate_limit_per_minute",
            ),
            (
                json!({"rate_limit_per_minute": 1.5}),
                "settings.rate_limit_per_minute",
            ),
            (
                json!({"rate_limit_per_minute": u64::from(u32::MAX) + 1}),
                "settings.rate_limit_per_minute",
            ),
            (
                json!({"rate_limit_per_minute": 60_001}),
                "settings.rate_limit_per_minute",
            ),
            (json!({"greeting": "hola"}), "settings.greeting"),
            (json!({"x".repeat(100): 1}), "settings"),
        ];
        for (value, field) in cases {
            let err = BotSettings::from_json(&value).unwrap_err();
            assert_eq!(err.field, field, "{value}");
            assert!(err.message.len() < 300, "{}", err.message);
        }
    }

    #[test]
    fn statuses_round_trip() {
        for status in BotStatus::ALL {
            assert_eq!(status.as_str().parse::<BotStatus>().unwrap(), status);
        }
        assert_eq!("gone".parse::<BotStatus>().unwrap_err().field, "status");
    }
}
