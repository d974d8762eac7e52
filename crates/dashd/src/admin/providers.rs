//! A bot's provider chain and its chain entries' settings (`dashctl chain`,
//! `dashctl provider`). Secrets are accepted, sealed under the master key, and never
//! returned: a view shows each as `set` or `not set`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use dash_core::api::{ChainView, ProbeResult, ProviderView, SetChain, SetProvider, UpdateBot};
use dash_core::bot::BotSettings;
use dash_core::provider::{ProviderKind, chain_of, fallback_of, parse_chain};
use dash_core::{Bot, ValidationError};

use super::paths::BotPath;
use crate::adapter::{ProviderConfig, Secret};
use crate::error::{ApiError, Json, Path};
use crate::secrets::provider_context;
use crate::state::AppState;
use crate::store::providers::StoredProvider;

pub async fn show_chain(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
) -> Result<axum::Json<ChainView>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    Ok(axum::Json(chain_view(&state, &bot)))
}

pub async fn set_chain(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Json(req): Json<SetChain>,
) -> Result<axum::Json<ChainView>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let chain = parse_chain(&req.chain)?;
    let mut settings = BotSettings::from_json(&bot.settings).unwrap_or_default();
    settings.chain = Some(chain);
    if req.fallback_threshold_errors.is_some() {
        settings.fallback_threshold_errors = req.fallback_threshold_errors;
    }
    if req.fallback_cooldown_seconds.is_some() {
        settings.fallback_cooldown_seconds = req.fallback_cooldown_seconds;
    }
    // Checked as any settings document is (bounds of threshold and cooldown).
    let settings = BotSettings::from_json(&settings.to_json())?;
    let update = UpdateBot {
        settings: Some(settings.to_json()),
        ..UpdateBot::default()
    };
    let bot = state.store.update_bot(&BotRef::Id(bot.id), &update).await?;
    state.pipeline.bots_changed();
    tracing::info!(bot = %bot.path(), chain = ?req.chain, "provider chain set");
    Ok(axum::Json(chain_view(&state, &bot)))
}

use dash_core::BotRef;

/// The chain with each entry's breaker state.
fn chain_view(state: &AppState, bot: &Bot) -> ChainView {
    let (threshold, cooldown) = fallback_of(&bot.settings);
    let now = chrono::Utc::now();
    let chain = chain_of(&bot.settings);
    ChainView {
        bot: bot.path(),
        chain: chain.iter().map(|k| k.as_str().to_owned()).collect(),
        fallback_threshold_errors: threshold,
        fallback_cooldown_seconds: cooldown,
        providers: chain
            .iter()
            .map(|kind| state.pipeline.providers().status(bot.id, *kind, now))
            .collect(),
    }
}

/// Every bot's chain with breaker states (`dashctl provider status`).
pub async fn status_all(
    State(state): State<AppState>,
) -> Result<axum::Json<Vec<ChainView>>, ApiError> {
    let bots = state.store.list_bots(None).await?;
    Ok(axum::Json(
        bots.iter().map(|bot| chain_view(&state, bot)).collect(),
    ))
}

fn provider_param(params: &HashMap<String, String>) -> Result<ProviderKind, ApiError> {
    let name = params
        .get("provider")
        .map(String::as_str)
        .unwrap_or_default();
    let kind: ProviderKind = name
        .parse()
        .map_err(|err: ValidationError| ValidationError::new("provider", err.message))?;
    if kind == ProviderKind::Sandbox {
        return Err(ValidationError::new("provider", "the sandbox takes no settings").into());
    }
    Ok(kind)
}

pub async fn list(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
) -> Result<axum::Json<Vec<ProviderView>>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let entries = state.store.providers_of(bot.id).await?;
    let mut views = Vec::new();
    for entry in &entries {
        if let Ok(kind) = entry.provider.parse::<ProviderKind>() {
            views.push(view(&state, &bot, kind, Some(entry))?);
        }
    }
    Ok(axum::Json(views))
}

pub async fn show(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<axum::Json<ProviderView>, ApiError> {
    let kind = provider_param(&params)?;
    let bot = state.store.bot(&bot).await?;
    let entries = state.store.providers_of(bot.id).await?;
    let entry = entries.iter().find(|e| e.provider == kind.as_str());
    Ok(axum::Json(view(&state, &bot, kind, entry)?))
}

pub async fn set(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
    Json(req): Json<SetProvider>,
) -> Result<axum::Json<ProviderView>, ApiError> {
    let kind = provider_param(&params)?;
    let bot = state.store.bot(&bot).await?;
    let registry = state.pipeline.providers();
    let entries = state.store.providers_of(bot.id).await?;
    let current = entries.iter().find(|e| e.provider == kind.as_str());
    let mut config = match current {
        Some(entry) => registry.open(entry, kind).map_err(ApiError::Internal)?,
        None => ProviderConfig {
            bot_id: bot.id,
            kind,
            settings: BTreeMap::new(),
            secrets: BTreeMap::new(),
        },
    };
    for (name, value) in &req.settings {
        let spec = spec(kind, name)?;
        if spec.secret {
            return Err(ValidationError::new(
                format!("settings.{name}"),
                format!(
                    "{name} is a secret: give it with --secret {name}=@FILE (or {name}=- for stdin)"
                ),
            )
            .into());
        }
        check_value(kind, name, value)?;
        config
            .settings
            .insert(name.clone(), value.trim().to_owned());
    }
    for (name, value) in &req.secrets {
        let spec = spec(kind, name)?;
        if !spec.secret {
            return Err(ValidationError::new(
                format!("secrets.{name}"),
                format!("{name} is not a secret: give it with --set {name}=VALUE"),
            )
            .into());
        }
        let value = value.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(ValidationError::new(format!("secrets.{name}"), "is empty").into());
        }
        config.secrets.insert(name.clone(), Secret::new(value));
    }
    for name in &req.unset {
        spec(kind, name)?;
        config.settings.remove(name);
        config.secrets.remove(name);
    }
    // What can be checked without the network: a client builds from these settings.
    if missing(&config).is_empty()
        && let Err(err) = registry.build(&config)
    {
        return Err(ValidationError::new("settings", err.0).into());
    }
    let sealed = (!config.secrets.is_empty()).then(|| {
        registry
            .master_key()
            .seal_map(&provider_context(bot.id, kind.as_str()), &config.secrets)
    });
    let entry = StoredProvider {
        bot_id: bot.id,
        provider: kind.as_str().to_owned(),
        settings: config.settings.clone(),
        secrets: sealed,
        route_key: route_key(&config),
        updated_at: chrono::Utc::now(),
    };
    state.store.put_provider(&entry).await?;
    state.pipeline.providers_changed(bot.id);
    let names: Vec<&String> = req.settings.keys().chain(req.secrets.keys()).collect();
    tracing::info!(bot = %bot.path(), provider = %kind, changed = ?names, "provider settings written");
    Ok(axum::Json(view(&state, &bot, kind, Some(&entry))?))
}

pub async fn delete(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let kind = provider_param(&params)?;
    let bot = state.store.bot(&bot).await?;
    if !state.store.delete_provider(bot.id, kind.as_str()).await? {
        return Err(ApiError::NotFound(format!(
            "bot {} has no {kind} settings",
            bot.path()
        )));
    }
    state.pipeline.providers_changed(bot.id);
    tracing::info!(bot = %bot.path(), provider = %kind, "provider settings removed");
    Ok(axum::Json(serde_json::json!({"deleted": kind.as_str()})))
}

/// Runs the provider's health probe now and feeds the breaker with its outcome.
pub async fn test(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<axum::Json<ProbeResult>, ApiError> {
    let kind = provider_param(&params)?;
    let bot = state.store.bot(&bot).await?;
    Ok(axum::Json(probe(&state, &bot, kind).await))
}

/// One health probe of a bot's provider, fed to its breaker.
pub async fn probe(state: &AppState, bot: &Bot, kind: ProviderKind) -> ProbeResult {
    let registry: &Arc<_> = state.pipeline.providers();
    let policy = state.pipeline.fallback_policy(bot);
    let started = Instant::now();
    let outcome = match registry.client(bot.id, kind).await {
        Ok(client) => client.probe().await,
        Err(err) => Err(err),
    };
    let latency = started.elapsed();
    let now = chrono::Utc::now();
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(report) => {
            registry.report(bot.id, kind, policy, Ok(latency), now);
            ProbeResult {
                provider: kind.as_str().to_owned(),
                ok: true,
                detail: report.detail,
                error_class: None,
                error_code: None,
                latency_ms,
            }
        }
        Err(err) => {
            if err.class == dash_core::provider::ErrorClass::ProviderBroken {
                registry.trip(bot.id, kind, policy, &err.message, now);
            } else {
                registry.report(bot.id, kind, policy, Err(&err), now);
            }
            ProbeResult {
                provider: kind.as_str().to_owned(),
                ok: false,
                detail: err.message.clone(),
                error_class: Some(err.class),
                error_code: err.code.clone(),
                latency_ms,
            }
        }
    }
}

fn spec(
    kind: ProviderKind,
    name: &str,
) -> Result<&'static dash_core::provider::SettingSpec, ApiError> {
    kind.setting(name).ok_or_else(|| {
        let names: Vec<&str> = kind.settings().iter().map(|s| s.name).collect();
        ValidationError::new(
            format!("settings.{}", dash_core::validate::bounded(name, 64)),
            format!(
                "{} is not a {kind} setting: use {}",
                dash_core::validate::quoted(name),
                names.join(", ")
            ),
        )
        .into()
    })
}

/// Values whose shape is known.
fn check_value(kind: ProviderKind, name: &str, value: &str) -> Result<(), ApiError> {
    let value = value.trim();
    let bad = |message: String| -> Result<(), ApiError> {
        Err(ValidationError::new(format!("settings.{name}"), message).into())
    };
    match name {
        "base_url" | "public_url" => match reqwest::Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
            _ => bad(format!(
                "must be an http:// or https:// URL, not {}",
                dash_core::validate::quoted(value)
            )),
        },
        "from" if kind == ProviderKind::Twilio => {
            if crate::adapter::e164(value).is_some() {
                Ok(())
            } else {
                bad("must be a WhatsApp sender number in E.164 form (+14155238886)".into())
            }
        }
        "interactive" if !matches!(value, "true" | "false") => bad("must be true or false".into()),
        _ if value.is_empty() => bad("is empty: use --unset to remove a setting".into()),
        _ if value.len() > 2048 => bad("is longer than 2048 characters".into()),
        _ => Ok(()),
    }
}

/// Required settings and secrets not set (defaults count as set).
fn missing(config: &ProviderConfig) -> Vec<String> {
    config
        .kind
        .settings()
        .iter()
        .filter(|spec| spec.required)
        .filter(|spec| {
            if spec.secret {
                config.secret(spec.name).is_none()
            } else {
                config.setting(spec.name).is_none()
            }
        })
        .map(|spec| spec.name.to_owned())
        .collect()
}

/// What routes a shared webhook to the bot: the Cloud API number, the Evolution
/// instance, the bridge session.
fn route_key(config: &ProviderConfig) -> Option<String> {
    match config.kind {
        ProviderKind::Meta | ProviderKind::Official => {
            config.setting("phone_number_id").map(str::to_owned)
        }
        ProviderKind::Evolution => config.setting("instance").map(str::to_owned),
        kind if kind.is_bridge() => Some(
            config
                .setting("session")
                .map(str::to_owned)
                .unwrap_or_else(|| config.bot_id.simple().to_string()),
        ),
        _ => None,
    }
}

/// The public root URL providers reach this dashd at.
fn public_root(state: &AppState) -> String {
    state
        .config
        .providers
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", state.http_addr))
        .trim_end_matches('/')
        .to_owned()
}

fn view(
    state: &AppState,
    bot: &Bot,
    kind: ProviderKind,
    entry: Option<&StoredProvider>,
) -> Result<ProviderView, ApiError> {
    let config = match entry {
        Some(entry) => state
            .pipeline
            .providers()
            .open(entry, kind)
            .map_err(ApiError::Internal)?,
        None => ProviderConfig {
            bot_id: bot.id,
            kind,
            settings: BTreeMap::new(),
            secrets: BTreeMap::new(),
        },
    };
    let mut settings = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    for spec in kind.settings() {
        if spec.secret {
            let set = if config.secret(spec.name).is_some() {
                "set"
            } else {
                "not set"
            };
            secrets.insert(spec.name.to_owned(), set.to_owned());
        } else if let Some(value) = config.setting(spec.name) {
            settings.insert(spec.name.to_owned(), value.to_owned());
        }
    }
    let root = public_root(state);
    let (webhook_url, instructions) = match kind {
        ProviderKind::Meta => (
            Some(format!("{root}/webhook/meta/{}", bot.id)),
            vec![format!(
                "In the Meta app's WhatsApp configuration set the callback URL to {root}/webhook/meta/{} (or {root}/webhook/meta for every number of the app) and the verify token to this entry's verify_token; subscribe to the messages field.",
                bot.id
            )],
        ),
        ProviderKind::Official => (
            Some(format!("{root}/webhook/official/{}", bot.id)),
            Vec::new(),
        ),
        ProviderKind::Twilio => {
            let url = format!("{root}/webhook/twilio/{}", bot.id);
            let mut notes = vec![format!(
                "In Twilio set the sender's incoming-message webhook (HTTP POST) to {url}, and public_url to exactly that URL as Twilio calls it."
            )];
            if config.setting("public_url").is_some_and(|set| set != url) {
                notes.push(format!(
                    "public_url differs from {url}: that is right only if a proxy maps one to the other."
                ));
            }
            (Some(url), notes)
        }
        ProviderKind::Evolution => {
            let url = format!("{root}/webhook/evolution/{}", bot.id);
            let instance = config.setting("instance").unwrap_or("INSTANCE");
            let body = crate::adapter::evolution::webhook_set_body(&url, "<webhook_token>");
            (
                Some(url),
                vec![format!(
                    "Point the instance's webhook at dashd: POST {}/webhook/set/{instance} with header apikey and body {body} (put the webhook_token you set in place of <webhook_token>).",
                    config.setting("base_url").unwrap_or("EVOLUTION_URL")
                )],
            )
        }
        kind if kind.is_bridge() => (
            Some(format!("{root}/webhook/bridge/{kind}")),
            vec![format!(
                "The {kind} bridge posts its events to {root}/webhook/bridge/{kind}, signed with its token."
            )],
        ),
        _ => (None, Vec::new()),
    };
    Ok(ProviderView {
        bot: bot.path(),
        provider: kind.as_str().to_owned(),
        settings,
        secrets,
        missing: missing(&config),
        webhook_url,
        instructions,
        updated_at: entry.map(|e| e.updated_at),
    })
}
