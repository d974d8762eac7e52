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
use crate::adapter::SessionState;
use crate::adapter::bridge::Bridge;
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
        Ok(kind) if kind.is_bridge() => Ok(kind),
        _ => Err(ValidationError::new(
            "provider",
            format!(
                "{} is not a bridge provider: use baileys, venom or wwebjs",
                dash_core::validate::quoted(name)
            ),
        )
        .into()),
    }
}

async fn bridge_of(state: &AppState, bot: &Bot, kind: ProviderKind) -> Result<Bridge, ApiError> {
    state
        .pipeline
        .providers()
        .bridge(bot.id, kind)
        .await
        .map_err(|err| ValidationError::new("settings", err.to_string()))?
        .ok_or_else(|| {
            ApiError::Conflict {
                message: format!(
                    "bot {} has no {kind} settings: dashctl provider set {} {kind} --secret token=@FILE",
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

/// A bridge call that failed: the bridge is unreachable or refused (503 with the reason).
fn bridge_failed(kind: ProviderKind, err: &crate::adapter::SendError) -> ApiError {
    ApiError::Unavailable(format!("the {kind} bridge: {}", err.message))
}

/// Starts the session (or asks the bridge again for its state) and records it; the QR
/// to scan follows in the session's state (`qr`).
pub async fn start(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let kind = bridge_param(&params)?;
    in_chain(&bot, kind)?;
    let bridge = bridge_of(&state, &bot, kind).await?;
    let status = bridge
        .start_session()
        .await
        .map_err(|err| bridge_failed(kind, &err))?;
    let qr = if status.state == SessionState::Qr {
        bridge.qr().await.ok().flatten().map(|qr| qr.qr)
    } else {
        None
    };
    tracing::info!(bot = %bot.path(), provider = %kind, state = session_state_name(status.state), "session started by an operator");
    let view = state
        .pipeline
        .record_session(&SessionReport {
            bot_id: bot.id,
            provider: kind.as_str().to_owned(),
            session: bridge.session().to_owned(),
            state: session_state_name(status.state).to_owned(),
            reason: status.reason,
            phone: status.phone,
            qr,
            at: chrono::Utc::now(),
        })
        .await?;
    Ok(axum::Json(view))
}

/// Logs the session out on its bridge (the phone must pair again).
pub async fn logout(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let kind = bridge_param(&params)?;
    let bridge = bridge_of(&state, &bot, kind).await?;
    bridge
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
            session: bridge.session().to_owned(),
            state: "logged_out".to_owned(),
            reason: Some("logged out by an operator".to_owned()),
            phone: None,
            qr: None,
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
