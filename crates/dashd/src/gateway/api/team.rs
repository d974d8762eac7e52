//! A tenant's people and programs: users (owners manage them) and API keys (shown once at
//! creation, then only their prefix); and, for platform admins, the list of tenants.

use axum::extract::State;
use axum::http::StatusCode;
use dash_core::Tenant;
use dash_core::access::{
    ApiKey, CreateApiKey, CreateUser, CreatedApiKey, Role, SetPassword, UpdateUser, User,
};
use uuid::Uuid;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{Caller, Page};
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;
use crate::store::users::UserRef;

/// The user a path's `{user}` names (id or email), found within the caller's tenant
/// before any body is read: another tenant's user is not found.
#[derive(Debug, Clone)]
pub struct ScopedUser(pub User);

impl FromRequestParts<AppState> for ScopedUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Path(user) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(ScopedUser(
            state
                .store
                .user(caller.scope(), &UserRef::parse(&user))
                .await?,
        ))
    }
}

pub async fn tenants(State(state): State<AppState>) -> Result<axum::Json<Page<Tenant>>, ApiError> {
    Ok(axum::Json(Page {
        data: state.store.list_tenants().await?,
        next_cursor: None,
    }))
}

pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Page<User>>, ApiError> {
    Ok(axum::Json(Page {
        data: state.store.list_users(caller.scope()).await?,
        next_cursor: None,
    }))
}

pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(mut req): Json<CreateUser>,
) -> Result<(StatusCode, axum::Json<User>), ApiError> {
    if caller.tenant.is_some() {
        // A tenant's owner adds people to its own tenant, never a platform admin.
        if req.role == Role::Admin {
            return Err(ApiError::Forbidden(
                "only a platform admin can create platform admins".into(),
            ));
        }
        req.tenant = caller.tenant.map(|id| id.to_string());
    }
    let user = add_user(&state, req).await?;
    Ok((StatusCode::CREATED, axum::Json(user)))
}

/// Validates a new user, hashes its password and stores it (the admin socket and the
/// REST API both add users through here).
pub(crate) async fn add_user(state: &AppState, req: CreateUser) -> Result<User, ApiError> {
    let req = req.validated()?;
    let tenant = req.tenant.as_deref().map(crate::store::TenantRef::parse);
    let hash = state
        .auth
        .hash_password(&req.password)
        .await
        .map_err(ApiError::Internal)?;
    let user = state
        .store
        .create_user(tenant.as_ref(), &req, &hash)
        .await?;
    tracing::info!(user = %user.id, role = %user.role, "user created");
    Ok(user)
}

/// Checks and sets a user's new password, ending its sessions.
pub(crate) async fn change_password(
    state: &AppState,
    scope: crate::store::TenantScope,
    target: &User,
    password: &str,
) -> Result<User, ApiError> {
    dash_core::access::check_password("password", password, &target.email)?;
    let hash = state
        .auth
        .hash_password(password)
        .await
        .map_err(ApiError::Internal)?;
    let user = state
        .store
        .set_password(scope, &UserRef::Id(target.id), &hash)
        .await?;
    tracing::info!(user = %user.id, "password changed");
    Ok(user)
}

pub async fn show_user(ScopedUser(user): ScopedUser) -> axum::Json<User> {
    axum::Json(user)
}

pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    ScopedUser(target): ScopedUser,
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
        .update_user(caller.scope(), &UserRef::Id(target.id), &req)
        .await?;
    tracing::info!(user = %user.id, "user updated");
    Ok(axum::Json(user))
}

pub async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    ScopedUser(target): ScopedUser,
) -> Result<axum::Json<User>, ApiError> {
    let user = state
        .store
        .delete_user(caller.scope(), &UserRef::Id(target.id))
        .await?;
    tracing::info!(user = %user.id, "user deleted");
    Ok(axum::Json(user))
}

pub async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    ScopedUser(target): ScopedUser,
    Json(req): Json<SetPassword>,
) -> Result<axum::Json<User>, ApiError> {
    let user = change_password(&state, caller.scope(), &target, &req.password).await?;
    Ok(axum::Json(user))
}

pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Page<ApiKey>>, ApiError> {
    Ok(axum::Json(Page {
        data: state.store.list_api_keys(caller.scope()).await?,
        next_cursor: None,
    }))
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateApiKey>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>), ApiError> {
    let req = req.validated(chrono::Utc::now())?;
    let tenant = caller.tenant_for_create(req.tenant.as_deref())?;
    let created = create_api_key(&state, &tenant, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Makes a key, stores its hash and returns it whole (the one time it is shown).
pub(crate) async fn create_api_key(
    state: &AppState,
    tenant: &crate::store::TenantRef,
    req: &CreateApiKey,
) -> Result<CreatedApiKey, ApiError> {
    let (key, prefix, hash) = crate::auth::new_api_key();
    let record = state
        .store
        .create_api_key(tenant, req, &prefix, &hash)
        .await?;
    tracing::info!(key = %record.prefix, tenant = %record.tenant, "API key created");
    Ok(CreatedApiKey { key, record })
}

pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<axum::Json<ApiKey>, ApiError> {
    let id = Uuid::parse_str(&key).map_err(|_| {
        ApiError::NotFound(format!(
            "API key {} not found",
            dash_core::validate::quoted(&key)
        ))
    })?;
    let key = state.store.revoke_api_key(caller.scope(), id).await?;
    tracing::info!(key = %key.prefix, "API key revoked");
    Ok(axum::Json(key))
}
