//! Bots: one WhatsApp number answering one tenant's customers. A bot is addressed as
//! `TENANT/BOT` (slugs) or by its UUID; [`BotRef`] parses both.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

/// Whether a bot answers messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    fn statuses_round_trip() {
        for status in BotStatus::ALL {
            assert_eq!(status.as_str().parse::<BotStatus>().unwrap(), status);
        }
        assert_eq!("gone".parse::<BotStatus>().unwrap_err().field, "status");
    }
}
