//! Bots and their flows through the REST API. Each handler first finds the bot within
//! the caller's tenant ([`ScopedBot`]); everything after that works on that bot's id.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use dash_core::api::{CreateBot, FlowVersionDetail, FlowVersionInfo, ImportFlows, UpdateBot};
use dash_core::{Bot, BotRef};
use serde::Deserialize;

use super::{Caller, Page, PageQuery, page};
use crate::admin::bots::{DeleteQuery, apply_update, delete_checked};
use crate::admin::flows::{check_document, detail, import_version, info};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;

/// The bot a path's `{bot}` names (an id, or a name within the caller's tenant), found
/// within the caller's scope: another tenant's bot is not found.
#[derive(Debug, Clone)]
pub struct ScopedBot(pub Bot);

impl FromRequestParts<AppState> for ScopedBot {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await?;
        let name = params
            .get("bot")
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a bot route without {{bot}}")))?;
        Ok(ScopedBot(
            state.store.scoped_bot(caller.scope(), name).await?,
        ))
    }
}

/// `?tenant=` of `POST /bots`, for platform admins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    #[serde(default)]
    tenant: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<Page<Bot>>, ApiError> {
    let limit = query.limit()?;
    let bots = state
        .store
        .bots_page(caller.scope(), query.after()?, limit + 1)
        .await?;
    Ok(axum::Json(page(bots, limit, |bot| bot.id)))
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<TenantQuery>,
    Json(req): Json<CreateBot>,
) -> Result<(StatusCode, axum::Json<Bot>), ApiError> {
    let req = req.validated()?;
    let tenant = caller.tenant_for_create(query.tenant.as_deref())?;
    let bot = state.store.create_bot(&tenant, &req).await?;
    state.pipeline.bots_changed();
    tracing::info!(bot = %bot.path(), "bot created");
    Ok((StatusCode::CREATED, axum::Json(bot)))
}

pub async fn show(ScopedBot(bot): ScopedBot) -> axum::Json<Bot> {
    axum::Json(bot)
}

pub async fn update(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Json(req): Json<UpdateBot>,
) -> Result<axum::Json<Bot>, ApiError> {
    Ok(axum::Json(
        apply_update(&state, &BotRef::Id(bot.id), req).await?,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Query(query): Query<DeleteQuery>,
) -> Result<axum::Json<Bot>, ApiError> {
    Ok(axum::Json(
        delete_checked(&state, &BotRef::Id(bot.id), query.force).await?,
    ))
}

pub async fn list_flows(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
) -> Result<axum::Json<Page<FlowVersionInfo>>, ApiError> {
    let versions = state.store.list_flow_versions(&BotRef::Id(bot.id)).await?;
    Ok(axum::Json(Page {
        data: versions.iter().map(info).collect(),
        next_cursor: None,
    }))
}

pub async fn import_flows(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Json(req): Json<ImportFlows>,
) -> Result<(StatusCode, axum::Json<FlowVersionDetail>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(import_version(&state, &bot, req).await?),
    ))
}

/// `POST .../flows/validate`: the same checks as an import, nothing kept.
pub async fn validate_flows(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Json(req): Json<ImportFlows>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let (format, document) = check_document(&state, bot.tenant_id, &req).await?;
    Ok(axum::Json(serde_json::json!({
        "valid": true,
        "format": format,
        "flows": document.flows.iter().map(|flow| &flow.id).collect::<Vec<_>>(),
    })))
}

/// `{version}`: a number, or `active`.
fn version(params: &str) -> Result<Option<u32>, ApiError> {
    match params {
        "active" => Ok(None),
        number => number.parse().map(Some).map_err(|_| {
            ApiError::NotFound(format!(
                "flow version {} not found",
                dash_core::validate::quoted(number)
            ))
        }),
    }
}

pub async fn show_flow(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Path((_, number)): Path<(String, String)>,
) -> Result<axum::Json<FlowVersionDetail>, ApiError> {
    let stored = state
        .store
        .flow_version(&BotRef::Id(bot.id), version(&number)?)
        .await?;
    Ok(axum::Json(detail(stored)))
}

pub async fn activate_flow(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Path((_, number)): Path<(String, String)>,
) -> Result<axum::Json<FlowVersionInfo>, ApiError> {
    let number = version(&number)?.ok_or_else(|| {
        ApiError::from(dash_core::ValidationError::new(
            "version",
            "give a version number, not `active`",
        ))
    })?;
    let stored = state
        .store
        .activate_flow_version(&BotRef::Id(bot.id), number)
        .await?;
    tracing::info!(bot = %bot.path(), version = number, "flow version activated");
    Ok(axum::Json(info(&stored)))
}

/// `POST /api/v1/bots/{bot}/messages`: queues a text. With an `Idempotency-Key` header
/// (1 to 255 visible characters), the same key and body answer the first message again
/// (200, `Idempotent-Replayed: true`), and another body under the same key is 409.
pub async fn send(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    headers: axum::http::HeaderMap,
    Json(req): Json<dash_core::api::SendMessage>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|key| {
                    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    ApiError::from(dash_core::ValidationError::new(
                        "Idempotency-Key",
                        "an idempotency key is 1 to 255 visible ASCII characters (a UUID is a good one)",
                    ))
                })?,
        ),
    };
    let (record, replayed) = crate::admin::messages::queue_text(&state, &bot, req, key).await?;
    let mut response = if replayed {
        (StatusCode::OK, axum::Json(record)).into_response()
    } else {
        (StatusCode::CREATED, axum::Json(record)).into_response()
    };
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The admin socket's bot path for a bot already found in the caller's scope.
fn by_id(bot: &Bot) -> crate::admin::paths::BotPath {
    crate::admin::paths::BotPath(BotRef::Id(bot.id))
}

/// `GET .../chain`: the providers in order, with their breakers.
pub async fn show_chain(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
) -> Result<axum::Json<dash_core::api::ChainView>, ApiError> {
    crate::admin::providers::show_chain(State(state), by_id(&bot)).await
}

/// `PUT .../chain`.
pub async fn set_chain(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    body: Json<dash_core::api::SetChain>,
) -> Result<axum::Json<dash_core::api::ChainView>, ApiError> {
    crate::admin::providers::set_chain(State(state), by_id(&bot), body).await
}

/// `GET .../providers`: settings, and secrets only as set or not.
pub async fn list_providers(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
) -> Result<axum::Json<Vec<dash_core::api::ProviderView>>, ApiError> {
    crate::admin::providers::list(State(state), by_id(&bot)).await
}

pub async fn show_provider(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    params: Path<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<dash_core::api::ProviderView>, ApiError> {
    crate::admin::providers::show(State(state), by_id(&bot), params).await
}

/// `PUT .../providers/{provider}`: settings and secrets (write-only: never shown back).
pub async fn set_provider(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    params: Path<std::collections::HashMap<String, String>>,
    body: Json<dash_core::api::SetProvider>,
) -> Result<axum::Json<dash_core::api::ProviderView>, ApiError> {
    crate::admin::providers::set(State(state), by_id(&bot), params, body).await
}

pub async fn delete_provider(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    params: Path<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    crate::admin::providers::delete(State(state), by_id(&bot), params).await
}
