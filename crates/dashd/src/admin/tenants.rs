//! Tenant handlers: create, list, show, update, delete (`?force=true` takes the bots too).

use axum::extract::State;
use axum::http::StatusCode;
use dash_core::Tenant;
use dash_core::api::{CreateTenant, TenantDeleted, UpdateTenant};
use serde::Deserialize;

use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;
use crate::store::TenantRef;

pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<Tenant>), ApiError> {
    let req = req.validated()?;
    let tenant = state.store.create_tenant(&req).await?;
    tracing::info!(tenant = %tenant.slug, "tenant created");
    Ok((StatusCode::CREATED, axum::Json(tenant)))
}

pub async fn list(State(state): State<AppState>) -> Result<axum::Json<Vec<Tenant>>, ApiError> {
    Ok(axum::Json(state.store.list_tenants().await?))
}

pub async fn show(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Tenant>, ApiError> {
    Ok(axum::Json(
        state.store.tenant(&TenantRef::parse(&tenant)).await?,
    ))
}

pub async fn update(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Json(req): Json<UpdateTenant>,
) -> Result<axum::Json<Tenant>, ApiError> {
    let req = req.validated()?;
    if req.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give a name, a status or api_rate_per_minute".into(),
        ));
    }
    let tenant = state
        .store
        .update_tenant(&TenantRef::parse(&tenant), &req)
        .await?;
    state.pipeline.bots_changed();
    tracing::info!(tenant = %tenant.slug, status = %tenant.status, "tenant updated");
    Ok(axum::Json(tenant))
}

/// Query of `DELETE /v1/tenants/{tenant}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

pub async fn delete(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<axum::Json<TenantDeleted>, ApiError> {
    let (tenant, bots_deleted) = state
        .store
        .delete_tenant(&TenantRef::parse(&tenant), query.force)
        .await?;
    tracing::info!(tenant = %tenant.slug, bots_deleted, "tenant deleted");
    Ok(axum::Json(TenantDeleted {
        tenant,
        bots_deleted,
    }))
}
