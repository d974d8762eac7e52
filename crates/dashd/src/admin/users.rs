//! Users and API keys from the admin socket: how the first platform admin is made (never
//! with a default password), and how an operator manages any tenant's people and keys.

use axum::extract::State;
use axum::http::StatusCode;
use dash_core::access::{
    ApiKey, CreateApiKey, CreateUser, CreatedApiKey, SetPassword, UpdateUser, User,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;
use crate::store::users::UserRef;
use crate::store::{TenantRef, TenantScope};

/// `?tenant=` of the lists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFilter {
    #[serde(default)]
    tenant: Option<String>,
}

async fn scope_of(state: &AppState, filter: &TenantFilter) -> Result<TenantScope, ApiError> {
    match &filter.tenant {
        Some(tenant) => Ok(TenantScope::Tenant(
            state.store.tenant(&TenantRef::parse(tenant)).await?.id,
        )),
        None => Ok(TenantScope::All),
    }
}

pub async fn list(
    State(state): State<AppState>,
    Query(filter): Query<TenantFilter>,
) -> Result<axum::Json<Vec<User>>, ApiError> {
    let scope = scope_of(&state, &filter).await?;
    Ok(axum::Json(state.store.list_users(scope).await?))
}

pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateUser>,
) -> Result<(StatusCode, axum::Json<User>), ApiError> {
    let user = crate::gateway::api::add_user(&state, req).await?;
    Ok((StatusCode::CREATED, axum::Json(user)))
}

pub async fn show(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    Ok(axum::Json(
        state
            .store
            .user(TenantScope::All, &UserRef::parse(&user))
            .await?,
    ))
}

pub async fn update(
    State(state): State<AppState>,
    Path(user): Path<String>,
    Json(req): Json<UpdateUser>,
) -> Result<axum::Json<User>, ApiError> {
    let req = req.validated()?;
    if req.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give a name, role or status".into(),
        ));
    }
    let user = state
        .store
        .update_user(TenantScope::All, &UserRef::parse(&user), &req)
        .await?;
    tracing::info!(user = %user.id, "user updated");
    Ok(axum::Json(user))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    let user = state
        .store
        .delete_user(TenantScope::All, &UserRef::parse(&user))
        .await?;
    tracing::info!(user = %user.id, "user deleted");
    Ok(axum::Json(user))
}

pub async fn set_password(
    State(state): State<AppState>,
    Path(user): Path<String>,
    Json(req): Json<SetPassword>,
) -> Result<axum::Json<User>, ApiError> {
    let target = state
        .store
        .user(TenantScope::All, &UserRef::parse(&user))
        .await?;
    let user =
        crate::gateway::api::change_password(&state, TenantScope::All, &target, &req.password)
            .await?;
    Ok(axum::Json(user))
}

pub async fn list_keys(
    State(state): State<AppState>,
    Query(filter): Query<TenantFilter>,
) -> Result<axum::Json<Vec<ApiKey>>, ApiError> {
    let scope = scope_of(&state, &filter).await?;
    Ok(axum::Json(state.store.list_api_keys(scope).await?))
}

pub async fn create_key(
    State(state): State<AppState>,
    Json(req): Json<CreateApiKey>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>), ApiError> {
    let req = req.validated(chrono::Utc::now())?;
    let tenant = req.tenant.as_deref().map(TenantRef::parse).ok_or_else(|| {
        ApiError::from(dash_core::ValidationError::new(
            "tenant",
            "an API key belongs to a tenant: name it",
        ))
    })?;
    let created = crate::gateway::api::create_api_key(&state, &tenant, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<ApiKey>, ApiError> {
    let key = state.store.revoke_api_key(TenantScope::All, id).await?;
    tracing::info!(key = %key.prefix, "API key revoked");
    Ok(axum::Json(key))
}
