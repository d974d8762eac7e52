//! Paired WhatsApp Web sessions of the bridge providers (`dashctl session`): list, show
//! with history, start (pairing), restart, logout, and a live stream of changes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dash_core::api::SessionView;
use dash_core::provider::{ProviderKind, chain_of};
use dash_core::{Bot, ValidationError};
use serde::Deserialize;

use super::paths::BotPath;
use crate::adapter::bridge::SessionStatus;
use crate::adapter::session::{SessionClient, is_unknown_session};
use crate::error::{ApiError, Path, Query};
use crate::pipeline::session_state_name;
use crate::state::AppState;
use crate::store::TenantRef;
use crate::store::sessions::SessionReport;

/// State changes kept on `show`.
const HISTORY: u32 = 20;

/// Query of `GET /v1/sessions` and its stream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFilter {
    tenant: Option<String>,
    bot: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(filter): Query<SessionFilter>,
) -> Result<axum::Json<Vec<SessionView>>, ApiError> {
    let tenant = match &filter.tenant {
        Some(slug) => Some(state.store.tenant(&TenantRef::parse(slug)).await?.id),
        None => None,
    };
    Ok(axum::Json(state.store.sessions(tenant).await?))
}

pub async fn of_bot(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
) -> Result<axum::Json<Vec<SessionView>>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    Ok(axum::Json(state.store.bot_sessions(bot.id, None, 0).await?))
}

pub async fn show(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let kind = bridge_param(&params)?;
    one(&state, &bot, kind).await.map(axum::Json)
}

async fn one(state: &AppState, bot: &Bot, kind: ProviderKind) -> Result<SessionView, ApiError> {
    state
        .store
        .bot_sessions(bot.id, Some(kind.as_str()), HISTORY)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "bot {} has no {kind} session yet (dashctl session pair {} --provider {kind})",
                bot.path(),
                bot.path()
            ))
        })
}

fn bridge_param(params: &HashMap<String, String>) -> Result<ProviderKind, ApiError> {
    let name = params
        .get("provider")
        .map(String::as_str)
        .unwrap_or_default();
    match name.parse::<ProviderKind>() {
        Ok(kind) if kind.is_paired() => Ok(kind),
        _ => Err(ValidationError::new(
            "provider",
            format!(
                "{} has no sessions: use baileys, venom, wwebjs or evolution",
                dash_core::validate::quoted(name)
            ),
        )
        .into()),
    }
}

async fn client_of(
    state: &AppState,
    bot: &Bot,
    kind: ProviderKind,
) -> Result<SessionClient, ApiError> {
    state
        .pipeline
        .providers()
        .session_client(bot.id, kind)
        .await
        .map_err(|err| ValidationError::new("settings", err.to_string()))?
        .ok_or_else(|| {
            ApiError::Conflict {
                message: format!(
                    "bot {} has no {kind} settings: dashctl provider set {} {kind} ... (dashctl provider set --help lists them)",
                    bot.path(),
                    bot.path()
                ),
                field: Some("provider"),
            }
        })
}

/// Refuses session control of a bridge the bot's chain does not use.
fn in_chain(bot: &Bot, kind: ProviderKind) -> Result<(), ApiError> {
    if chain_of(&bot.settings).contains(&kind) {
        Ok(())
    } else {
        Err(ApiError::Conflict {
            message: format!(
                "bot {} does not send through {kind}: add it to its chain first (dashctl chain set {} ...,{kind})",
                bot.path(),
                bot.path()
            ),
            field: Some("provider"),
        })
    }
}

/// A bridge or Evolution call that failed: unreachable or refused (503 with the reason).
fn bridge_failed(kind: ProviderKind, err: &crate::adapter::SendError) -> ApiError {
    let what = if kind.is_bridge() {
        "bridge"
    } else {
        "instance"
    };
    ApiError::Unavailable(format!("the {kind} {what}: {}", err.message))
}

/// Body of `POST .../sessions/{provider}/start` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartSession {
    /// Pair by a code typed on this phone (E.164) instead of a QR code.
    pairing_phone: Option<String>,
}

/// Starts the session (or asks the bridge again for its state) and records it; the QR
/// to scan (or, with `pairing_phone`, the pairing code) follows in the session's state.
pub async fn start(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
    body: Bytes,
) -> Result<axum::Json<SessionView>, ApiError> {
    let request: StartSession = if body.iter().all(u8::is_ascii_whitespace) {
        StartSession::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::BadRequest(format!(
                "invalid JSON body: {}",
                dash_core::validate::bounded(&err.to_string(), 200)
            ))
        })?
    };
    let pairing_phone = match request.pairing_phone.as_deref() {
        Some(phone) => Some(
            crate::adapter::e164(phone)
                .map(|e164| e164.trim_start_matches('+').to_owned())
                .ok_or_else(|| {
                    ValidationError::new(
                        "pairing_phone",
                        "the phone number to pair, with its country code (+15551234567)",
                    )
                })?,
        ),
        None => None,
    };
    let bot = state.store.bot(&bot).await?;
    let kind = bridge_param(&params)?;
    if pairing_phone.is_some() && kind == ProviderKind::Venom {
        return Err(ValidationError::new(
            "pairing_phone",
            "venom cannot pair by code: scan the QR code (pair without a phone number)",
        )
        .into());
    }
    in_chain(&bot, kind)?;
    let client = client_of(&state, &bot, kind).await?;
    let status = client
        .start(pairing_phone.as_deref())
        .await
        .map_err(|err| bridge_failed(kind, &err))?;
    state.pipeline.session_restarted(bot.id, kind.as_str());
    tracing::info!(bot = %bot.path(), provider = %kind, state = session_state_name(status.state), "session started by an operator");
    record_status(&state, &bot, kind, &client, status).await
}

/// Drops the session's connection and connects again with its stored credentials (no
/// new pairing); a failed session gets its full count of automatic restarts again.
pub async fn restart(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let kind = bridge_param(&params)?;
    in_chain(&bot, kind)?;
    let client = client_of(&state, &bot, kind).await?;
    let status = match client.restart().await {
        Ok(status) => status,
        // Not on the bridge (yet): restarting it is starting it.
        Err(err) if is_unknown_session(&err) => client
            .start(None)
            .await
            .map_err(|err| bridge_failed(kind, &err))?,
        Err(err) => return Err(bridge_failed(kind, &err)),
    };
    state.pipeline.session_restarted(bot.id, kind.as_str());
    tracing::info!(bot = %bot.path(), provider = %kind, state = session_state_name(status.state), "session restarted by an operator");
    record_status(&state, &bot, kind, &client, status).await
}

/// Records what the bridge answered (with its QR, when one waits) and returns it.
async fn record_status(
    state: &AppState,
    bot: &Bot,
    kind: ProviderKind,
    client: &SessionClient,
    status: SessionStatus,
) -> Result<axum::Json<SessionView>, ApiError> {
    let report = client
        .report(bot.id, kind, status, chrono::Utc::now())
        .await;
    Ok(axum::Json(state.pipeline.record_session(&report).await?))
}

/// Logs the session out on its bridge (the phone must pair again).
pub async fn logout(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let kind = bridge_param(&params)?;
    let client = client_of(&state, &bot, kind).await?;
    client
        .logout()
        .await
        .map_err(|err| bridge_failed(kind, &err))?;
    tracing::info!(bot = %bot.path(), provider = %kind, "session logged out by an operator");
    let now = chrono::Utc::now();
    let policy = state.pipeline.fallback_policy(&bot);
    state.pipeline.providers().trip(
        bot.id,
        kind,
        policy,
        "session logged out by an operator",
        now,
    );
    let view = state
        .pipeline
        .record_session(&SessionReport {
            bot_id: bot.id,
            provider: kind.as_str().to_owned(),
            session: client.session().to_owned(),
            state: "logged_out".to_owned(),
            reason: Some("logged out by an operator".to_owned()),
            phone: None,
            qr: None,
            qr_expires_at: None,
            pairing_code: None,
            at: now,
        })
        .await?;
    Ok(axum::Json(view))
}

/// Newline-delimited JSON: a [`SessionView`] each time a session's state or QR changes
/// (`?tenant=` or `?bot=` narrow it).
pub async fn stream(
    State(state): State<AppState>,
    Query(filter): Query<SessionFilter>,
) -> Result<Response, ApiError> {
    let tenant = match &filter.tenant {
        Some(slug) => Some(state.store.tenant(&TenantRef::parse(slug)).await?.slug),
        None => None,
    };
    let bot = match &filter.bot {
        Some(bot) => Some(state.store.bot(&dash_core::BotRef::parse(bot)?).await?.id),
        None => None,
    };
    let receiver = state.pipeline.subscribe_sessions();
    let shutdown = state.pipeline.shutdown_token();
    let stream = futures_util::stream::unfold(
        (receiver, shutdown),
        move |(mut receiver, shutdown)| {
            let tenant = tenant.clone();
            async move {
                loop {
                    let view = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        view = receiver.recv() => view,
                        () = tokio::time::sleep(Duration::from_secs(15)) => {
                            return Some((Ok::<_, Infallible>(Bytes::from_static(b"\n")), (receiver, shutdown)));
                        }
                    };
                    match view {
                        Ok(view) => {
                            let wanted = bot.is_none_or(|id| view.bot_id == id)
                                && tenant
                                    .as_deref()
                                    .is_none_or(|slug| view.bot.split('/').next() == Some(slug));
                            if wanted {
                                let mut line = serde_json::to_vec(&view).unwrap_or_default();
                                line.push(b'\n');
                                return Some((Ok(Bytes::from(line)), (receiver, shutdown)));
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
