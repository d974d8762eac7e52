//! The WhatsApp providers DashOffice knows, and a bot's provider chain (the order in
//! which they are tried), as stored in the bot's settings.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// Every provider the design names. Only those in [`ProviderKind::available`] can send
/// in this release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Sandbox,
    Meta,
    Official,
    Twilio,
    Evolution,
    Venom,
    Wwebjs,
    Baileys,
}

impl ProviderKind {
    /// Every kind, in the order help text lists them.
    pub const ALL: [ProviderKind; 8] = [
        ProviderKind::Sandbox,
        ProviderKind::Meta,
        ProviderKind::Official,
        ProviderKind::Twilio,
        ProviderKind::Evolution,
        ProviderKind::Venom,
        ProviderKind::Wwebjs,
        ProviderKind::Baileys,
    ];

    /// The spelling used in chains, logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Sandbox => "sandbox",
            ProviderKind::Meta => "meta",
            ProviderKind::Official => "official",
            ProviderKind::Twilio => "twilio",
            ProviderKind::Evolution => "evolution",
            ProviderKind::Venom => "venom",
            ProviderKind::Wwebjs => "wwebjs",
            ProviderKind::Baileys => "baileys",
        }
    }

    /// Whether this release can send through it.
    pub fn available(self) -> bool {
        matches!(self, ProviderKind::Sandbox)
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                ValidationError::new(
                    "chain",
                    format!(
                        "{} is not a provider: use one of {}",
                        crate::validate::quoted(s),
                        names.join(", ")
                    ),
                )
            })
    }
}

/// The providers a bot sends through, first to last.
pub const DEFAULT_CHAIN: &[ProviderKind] = &[ProviderKind::Sandbox];

/// Parses and checks a chain (`sandbox` or `meta,twilio`): known, available in this
/// release, no repeats, not empty.
pub fn parse_chain(names: &[String]) -> Result<Vec<ProviderKind>, ValidationError> {
    if names.is_empty() {
        return Err(ValidationError::new("chain", "give at least one provider"));
    }
    let mut chain = Vec::new();
    for name in names {
        let kind: ProviderKind = name.trim().parse()?;
        if !kind.available() {
            return Err(ValidationError::new(
                "chain",
                format!(
                    "provider {kind} is not available in this release yet (available: sandbox)"
                ),
            ));
        }
        if chain.contains(&kind) {
            return Err(ValidationError::new(
                "chain",
                format!("provider {kind} is listed twice"),
            ));
        }
        chain.push(kind);
    }
    Ok(chain)
}

/// The bot's chain from its settings document (`settings.chain`), or the default.
/// Settings are checked when they are written ([`crate::bot::BotSettings::from_json`]); a
/// stored document written before that check reads as the default here.
pub fn chain_of(settings: &serde_json::Value) -> Vec<ProviderKind> {
    settings
        .get("chain")
        .and_then(|chain| serde_json::from_value::<Vec<ProviderKind>>(chain.clone()).ok())
        .filter(|chain| !chain.is_empty())
        .unwrap_or_else(|| DEFAULT_CHAIN.to_vec())
}

/// The bot's send limit per minute from its settings (`settings.rate_limit_per_minute`).
pub fn rate_limit_of(settings: &serde_json::Value) -> Option<u32> {
    settings
        .get("rate_limit_per_minute")
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chains_parse_and_check() {
        assert_eq!(
            parse_chain(&["sandbox".into()]).unwrap(),
            [ProviderKind::Sandbox]
        );
        assert!(parse_chain(&[]).is_err());
        assert!(
            parse_chain(&["carrier-pigeon".into()])
                .unwrap_err()
                .message
                .contains("not a provider")
        );
        assert!(
            parse_chain(&["meta".into()])
                .unwrap_err()
                .message
                .contains("not available")
        );
        assert!(
            parse_chain(&["sandbox".into(), "sandbox".into()])
                .unwrap_err()
                .message
                .contains("twice")
        );
    }

    #[test]
    fn settings_give_chain_and_limit() {
        assert_eq!(chain_of(&json!({})), [ProviderKind::Sandbox]);
        assert_eq!(
            chain_of(&json!({"chain": ["sandbox"]})),
            [ProviderKind::Sandbox]
        );
        assert_eq!(
            chain_of(&json!({"chain": "bogus"})),
            [ProviderKind::Sandbox]
        );
        assert_eq!(
            rate_limit_of(&json!({"rate_limit_per_minute": 120})),
            Some(120)
        );
        assert_eq!(rate_limit_of(&json!({})), None);
    }
}
