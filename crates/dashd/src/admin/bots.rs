//! Bot handlers. A bot is reached as `/v1/tenants/{tenant}/bots/{bot}` or
//! `/v1/bots/{id}`; both resolve to a [`BotRef`] and share one implementation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use dash_core::api::{BotFilter, CreateBot, UpdateBot};
use dash_core::{Bot, BotRef, ValidationError};
use uuid::Uuid;

use crate::error::{ApiError, Json, Query};
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

pub async fn show_by_path(
    State(state): State<AppState>,
    Path((tenant, bot)): Path<(String, String)>,
) -> BotJson {
    show(&state, &by_path(tenant, bot)?).await
}

pub async fn show_by_id(State(state): State<AppState>, Path(id): Path<String>) -> BotJson {
    show(&state, &by_id(&id)?).await
}

pub async fn update_by_path(
    State(state): State<AppState>,
    Path((tenant, bot)): Path<(String, String)>,
    Json(req): Json<UpdateBot>,
) -> BotJson {
    update(&state, &by_path(tenant, bot)?, &req).await
}

pub async fn update_by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<UpdateBot>,
) -> BotJson {
    update(&state, &by_id(&id)?, &req).await
}

pub async fn delete_by_path(
    State(state): State<AppState>,
    Path((tenant, bot)): Path<(String, String)>,
) -> BotJson {
    delete(&state, &by_path(tenant, bot)?).await
}

pub async fn delete_by_id(State(state): State<AppState>, Path(id): Path<String>) -> BotJson {
    delete(&state, &by_id(&id)?).await
}

async fn show(state: &AppState, bot: &BotRef) -> BotJson {
    Ok(axum::Json(state.store.bot(bot).await?))
}

async fn update(state: &AppState, bot: &BotRef, req: &UpdateBot) -> BotJson {
    let req = req.validated()?;
    if req.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give a name, phone, timezone, status or settings".into(),
        ));
    }
    let bot = state.store.update_bot(bot, &req).await?;
    tracing::info!(bot = %bot.path(), "bot updated");
    Ok(axum::Json(bot))
}

async fn delete(state: &AppState, bot: &BotRef) -> BotJson {
    let bot = state.store.delete_bot(bot).await?;
    tracing::info!(bot = %bot.path(), "bot deleted");
    Ok(axum::Json(bot))
}

fn by_path(tenant: String, bot: String) -> Result<BotRef, ApiError> {
    dash_core::validate::slug("tenant", &tenant)?;
    dash_core::validate::slug("bot", &bot)?;
    Ok(BotRef::Path { tenant, bot })
}

fn by_id(id: &str) -> Result<BotRef, ApiError> {
    Uuid::parse_str(id).map(BotRef::Id).map_err(|_| {
        ApiError::Validation(ValidationError::new(
            "id",
            format!("{id:?} is not a bot id (a UUID); address bots by name under /v1/tenants/TENANT/bots/BOT"),
        ))
    })
}
