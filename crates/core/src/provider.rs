//! The WhatsApp providers DashOffice knows, a bot's provider chain (the order in which
//! they are tried, as stored in the bot's settings), the settings each provider takes,
//! and how a failed send is classified.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// Every provider the design names.
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
        true
    }

    /// The bridge providers (a Node process holding a WhatsApp Web session).
    pub fn is_bridge(self) -> bool {
        matches!(
            self,
            ProviderKind::Venom | ProviderKind::Wwebjs | ProviderKind::Baileys
        )
    }

    /// The providers paired with a phone by a QR code (or pairing code): the bridges and
    /// Evolution instances. They have sessions (`dashctl session`).
    pub fn is_paired(self) -> bool {
        self.is_bridge() || self == ProviderKind::Evolution
    }

    /// The settings this provider takes, secrets included.
    pub fn settings(self) -> &'static [SettingSpec] {
        match self {
            ProviderKind::Sandbox => &[],
            ProviderKind::Meta => META_SETTINGS,
            ProviderKind::Official => OFFICIAL_SETTINGS,
            ProviderKind::Twilio => TWILIO_SETTINGS,
            ProviderKind::Evolution => EVOLUTION_SETTINGS,
            ProviderKind::Venom => VENOM_SETTINGS,
            ProviderKind::Wwebjs => WWEBJS_SETTINGS,
            ProviderKind::Baileys => BAILEYS_SETTINGS,
        }
    }

    /// The spec of one setting, if this provider takes it.
    pub fn setting(self, name: &str) -> Option<&'static SettingSpec> {
        self.settings().iter().find(|spec| spec.name == name)
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

/// One setting a provider takes (`dashctl provider set ... --set name=value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingSpec {
    pub name: &'static str,
    /// Stored encrypted, written with `--secret`, never shown back.
    pub secret: bool,
    /// Needed before the provider can send (or verify its webhooks).
    pub required: bool,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

const fn setting(
    name: &'static str,
    required: bool,
    default: Option<&'static str>,
    help: &'static str,
) -> SettingSpec {
    SettingSpec {
        name,
        secret: false,
        required,
        default,
        help,
    }
}

const fn secret(name: &'static str, required: bool, help: &'static str) -> SettingSpec {
    SettingSpec {
        name,
        secret: true,
        required,
        default: None,
        help,
    }
}

/// The Graph API version used when none is set.
pub const GRAPH_API_VERSION: &str = "v23.0";

const META_SETTINGS: &[SettingSpec] = &[
    setting(
        "base_url",
        false,
        Some("https://graph.facebook.com"),
        "Graph API root",
    ),
    setting(
        "api_version",
        false,
        Some(GRAPH_API_VERSION),
        "Graph API version, e.g. v23.0",
    ),
    setting(
        "phone_number_id",
        true,
        None,
        "the business phone number's id (WhatsApp Manager)",
    ),
    secret(
        "access_token",
        true,
        "system-user access token (Authorization: Bearer)",
    ),
    secret(
        "app_secret",
        true,
        "the Meta app's secret: verifies X-Hub-Signature-256",
    ),
    secret(
        "verify_token",
        true,
        "the token Meta echoes when the webhook is registered",
    ),
];

const OFFICIAL_SETTINGS: &[SettingSpec] = &[
    setting(
        "base_url",
        true,
        None,
        "the Cloud-API-compatible endpoint's root",
    ),
    setting(
        "api_version",
        false,
        Some(GRAPH_API_VERSION),
        "version segment ({api_version} in path)",
    ),
    setting(
        "path",
        false,
        Some("/{api_version}/{phone_number_id}/messages"),
        "message path template ({api_version}, {phone_number_id})",
    ),
    setting(
        "auth_header",
        false,
        Some("Authorization"),
        "header carrying the token (Authorization gets \"Bearer \" before it; any other header the token alone, e.g. D360-API-KEY)",
    ),
    setting(
        "phone_number_id",
        false,
        None,
        "the business phone number's id, if the path uses one",
    ),
    secret("access_token", true, "the token sent in auth_header"),
    secret(
        "app_secret",
        false,
        "verifies X-Hub-Signature-256 on webhooks (unsigned webhooks are refused)",
    ),
    secret(
        "verify_token",
        false,
        "the token echoed when the webhook is registered",
    ),
];

const TWILIO_SETTINGS: &[SettingSpec] = &[
    setting(
        "base_url",
        false,
        Some("https://api.twilio.com"),
        "Twilio REST API root",
    ),
    setting("account_sid", true, None, "account SID (AC...)"),
    setting(
        "from",
        true,
        None,
        "the WhatsApp sender, +E164 (whatsapp: is added)",
    ),
    setting(
        "public_url",
        true,
        None,
        "the exact public URL Twilio calls for this bot's webhook (signatures cover it)",
    ),
    secret(
        "auth_token",
        true,
        "auth token: Basic auth and X-Twilio-Signature",
    ),
];

const EVOLUTION_SETTINGS: &[SettingSpec] = &[
    setting(
        "base_url",
        true,
        None,
        "Evolution API root, e.g. http://127.0.0.1:8080",
    ),
    setting("instance", true, None, "instance name"),
    secret(
        "api_key",
        true,
        "apikey header (global key or the instance token)",
    ),
    secret(
        "webhook_token",
        true,
        "token Evolution must send in the X-Dashd-Token header",
    ),
    setting(
        "interactive",
        false,
        Some("false"),
        "true: send menus as buttons (up to 3) and lists (up to 10 rows) with sendButtons/sendList; false: numbered text, which every WhatsApp client shows",
    ),
];

const fn bridge_settings(default_url: &'static str) -> [SettingSpec; 3] {
    [
        setting(
            "base_url",
            false,
            Some(default_url),
            "the bridge's root URL",
        ),
        setting(
            "session",
            false,
            None,
            "session name on the bridge (default: the bot's id)",
        ),
        secret("token", true, "bearer token of the bridge's API"),
    ]
}

const BAILEYS_SETTINGS: &[SettingSpec] = &bridge_settings("http://127.0.0.1:3012");
const VENOM_SETTINGS: &[SettingSpec] = &bridge_settings("http://127.0.0.1:3013");
const WWEBJS_SETTINGS: &[SettingSpec] = &bridge_settings("http://127.0.0.1:3014");

/// How a failed send is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Timeouts, connection errors, 5xx, rate limits: try the next provider now, this one
    /// again later; counts toward the provider's breaker.
    Retryable,
    /// This message cannot be delivered (bad recipient, outside the 24-hour window): no
    /// fallback, the message fails with the provider's reason.
    Permanent,
    /// The provider cannot send for this bot at all (revoked token, logged-out session,
    /// suspended number): its breaker opens at once; the next provider is tried.
    ProviderBroken,
}

/// Consecutive retryable failures that open a provider's breaker, by default.
pub const DEFAULT_FALLBACK_THRESHOLD: u32 = 3;
/// How long an open breaker stays open before one probe, by default.
pub const DEFAULT_FALLBACK_COOLDOWN_S: u64 = 300;

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
                format!("provider {kind} is not available in this release"),
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

/// The bot's breaker policy from its settings: (consecutive retryable failures that open
/// a provider's breaker, seconds it stays open before a probe).
pub fn fallback_of(settings: &serde_json::Value) -> (u32, u64) {
    let threshold = settings
        .get("fallback_threshold_errors")
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_FALLBACK_THRESHOLD);
    let cooldown = settings
        .get("fallback_cooldown_seconds")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(DEFAULT_FALLBACK_COOLDOWN_S);
    (threshold, cooldown)
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
        assert_eq!(
            parse_chain(&["meta".into(), " twilio".into()]).unwrap(),
            [ProviderKind::Meta, ProviderKind::Twilio]
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
