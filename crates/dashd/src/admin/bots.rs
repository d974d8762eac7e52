//! Bot handlers. A bot is reached as `/v1/tenants/{tenant}/bots/{bot}` or
//! `/v1/bots/{id}`; [`BotPath`] resolves both, so one handler serves each verb.

use axum::extract::State;
use axum::http::StatusCode;
use dash_core::api::{BotFilter, CreateBot, UpdateBot};
use dash_core::{Bot, BotRef};

use super::paths::BotPath;
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;
use crate::store::TenantRef;

type BotJson = Result<axum::Json<Bot>, ApiError>;

pub async fn create(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Json(req): Json<CreateBot>,
) -> Result<(StatusCode, axum::Json<Bot>), ApiError> {
    let req = req.validated()?;
    let bot = state
        .store
        .create_bot(&TenantRef::parse(&tenant), &req)
        .await?;
    tracing::info!(bot = %bot.path(), "bot created");
    Ok((StatusCode::CREATED, axum::Json(bot)))
}

pub async fn list(
    State(state): State<AppState>,
    Query(filter): Query<BotFilter>,
) -> Result<axum::Json<Vec<Bot>>, ApiError> {
    let tenant = filter.tenant.as_deref().map(TenantRef::parse);
    Ok(axum::Json(state.store.list_bots(tenant.as_ref()).await?))
}

pub async fn list_of_tenant(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Vec<Bot>>, ApiError> {
    let tenant = TenantRef::parse(&tenant);
    Ok(axum::Json(state.store.list_bots(Some(&tenant)).await?))
}

pub async fn show(State(state): State<AppState>, BotPath(bot): BotPath) -> BotJson {
    Ok(axum::Json(state.store.bot(&bot).await?))
}

pub async fn update(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Json(req): Json<UpdateBot>,
) -> BotJson {
    Ok(axum::Json(apply_update(&state, &bot, req).await?))
}

/// Validates and applies a change to a bot, then lets the pipeline know (the admin socket
/// and the REST API both change bots through here).
pub(crate) async fn apply_update(
    state: &AppState,
    bot: &BotRef,
    req: UpdateBot,
) -> Result<Bot, ApiError> {
    let req = req.validated()?;
    if req.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give a name, phone, timezone, status, settings or chain".into(),
        ));
    }
    let bot = state.store.update_bot(bot, &req).await?;
    state.pipeline.bots_changed();
    if req.status == Some(dash_core::BotStatus::Active) {
        // Messages held while it was paused go out now, not a minute later.
        state
            .store
            .release_held(bot.id, chrono::Utc::now().timestamp_millis())
            .await?;
        state.pipeline.outbox_changed();
    }
    tracing::info!(bot = %bot.path(), "bot updated");
    Ok(bot)
}

/// Query of `DELETE .../bots/{bot}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    pub force: bool,
}

pub async fn delete(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Query(query): Query<DeleteQuery>,
) -> BotJson {
    Ok(axum::Json(delete_checked(&state, &bot, query.force).await?))
}

/// Deletes a bot, refusing while messages wait to be sent unless `force`.
pub(crate) async fn delete_checked(
    state: &AppState,
    bot: &BotRef,
    force: bool,
) -> Result<Bot, ApiError> {
    // An accepted message is never dropped silently: say so, and require force.
    let record = state.store.bot(bot).await?;
    let unsent = state.store.unfinished_outbound(record.id).await?;
    if unsent > 0 && !force {
        return Err(ApiError::Conflict {
            message: format!(
                "bot {} still has {unsent} message(s) waiting to be sent: wait for them, cancel them, or force the deletion (?force=true, dashctl bot delete {} --force)",
                record.path(),
                record.path()
            ),
            field: None,
        });
    }
    let bot = state.store.delete_bot(bot).await?;
    if unsent > 0 {
        tracing::warn!(bot = %bot.path(), dropped = unsent, "bot deleted with unsent messages");
    }
    tracing::info!(bot = %bot.path(), "bot deleted");
    Ok(bot)
}
