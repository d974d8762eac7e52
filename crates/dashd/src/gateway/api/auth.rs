//! Logging in and out: `login` (email and password → access token and refresh token),
//! `refresh` (a refresh token is traded once; using it twice ends the session), `logout`,
//! `register` (self-service sign-up, when the operator opens it) and `me`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dash_core::access::{
    CreateUser, Login, RefreshRequest, Register, Role, Tokens, User, UserStatus,
};
use dash_core::api::CreateTenant;
use uuid::Uuid;

use super::{Caller, Peer, Principal, client_address};
use crate::error::{ApiError, Json};
use crate::state::AppState;
use crate::store::TenantRef;
use crate::store::users::Refreshed;

/// The one answer to a failed login, whether the account exists or not.
const WRONG_LOGIN: &str = "wrong email or password";

pub async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Json(req): Json<Login>,
) -> Result<axum::Json<Tokens>, ApiError> {
    let address = client_address(&state, peer, &headers);
    let account = req.email.trim().to_lowercase();
    if let Err(retry_after_s) = state.auth.login_allowed(&account, address) {
        return Err(ApiError::RateLimited {
            message: format!(
                "too many failed logins for this account or from this address: retry in {retry_after_s} s"
            ),
            retry_after_s,
        });
    }
    let found = state.store.user_for_login(&account).await?;
    let matched = state
        .auth
        .verify_password(&req.password, found.as_ref().map(|(_, hash)| hash.as_str()))
        .await;
    let user = match found {
        Some((user, _)) if matched => user,
        _ => {
            state.auth.login_failed(&account, address);
            tracing::info!(client = ?address, "login refused");
            return Err(ApiError::Unauthorized(WRONG_LOGIN.into()));
        }
    };
    if user.status != UserStatus::Active {
        return Err(ApiError::Unauthorized(
            "this account is disabled: ask the tenant's owner".into(),
        ));
    }
    let tokens = start_session(&state, user).await?;
    tracing::info!(user = %tokens.user.id, "logged in");
    Ok(axum::Json(tokens))
}

/// Opens a login session for `user` and issues its first tokens.
async fn start_session(state: &AppState, user: User) -> Result<Tokens, ApiError> {
    let session = Uuid::now_v7();
    let (refresh_token, hash) = crate::auth::new_refresh_token();
    let refresh_expires_at = state.auth.refresh_expiry();
    state
        .store
        .start_session(user.id, session, &hash, refresh_expires_at)
        .await?;
    tokens(state, user, session, refresh_token, refresh_expires_at)
}

fn tokens(
    state: &AppState,
    user: User,
    session: Uuid,
    refresh_token: String,
    refresh_expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<Tokens, ApiError> {
    let access_token = state
        .auth
        .access_token(&user, session)
        .map_err(ApiError::Internal)?;
    Ok(Tokens {
        access_token,
        token_type: "Bearer".into(),
        expires_in: state.auth.access_ttl_s(),
        refresh_token,
        refresh_expires_at,
        user,
    })
}

pub async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> Result<axum::Json<Tokens>, ApiError> {
    let old = crate::auth::refresh_hash(&req.refresh_token);
    let (new_token, new_hash) = crate::auth::new_refresh_token();
    let expires = state.auth.refresh_expiry();
    match state.store.rotate_refresh(&old, &new_hash, expires).await? {
        Refreshed::Rotated { session, user } => Ok(axum::Json(tokens(
            &state, user, session, new_token, expires,
        )?)),
        Refreshed::Reused { session } => {
            tracing::warn!(%session, "a refresh token was used twice: its session is revoked");
            Err(ApiError::Unauthorized(
                "this refresh token was already used, so the session has been ended: log in again"
                    .into(),
            ))
        }
        Refreshed::Invalid => Err(ApiError::Unauthorized(
            "this refresh token is unknown or its session has ended: log in again".into(),
        )),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let hash = crate::auth::refresh_hash(&req.refresh_token);
    let session = state
        .store
        .session_of_refresh(&hash)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("this refresh token is unknown".into()))?;
    state.store.revoke_session(session, "logged out").await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn register(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Json(req): Json<Register>,
) -> Result<(StatusCode, axum::Json<Tokens>), ApiError> {
    if !state.config.api.self_signup {
        return Err(ApiError::Forbidden(
            "self-service sign-up is closed on this server (api.self_signup)".into(),
        ));
    }
    // Sign-ups from one address are limited like failed logins, in a count of their own.
    let address = client_address(&state, peer, &headers);
    let counter = format!("register from {address:?}");
    if let Err(retry_after_s) = state.auth.login_allowed(&counter, None) {
        return Err(ApiError::RateLimited {
            message: format!("too many sign-ups from this address: retry in {retry_after_s} s"),
            retry_after_s,
        });
    }
    let tenant_req = CreateTenant {
        slug: req.tenant.clone(),
        name: req.tenant_name.clone(),
    }
    .validated()?;
    let owner = CreateUser {
        tenant: Some(req.tenant.clone()),
        email: req.email.clone(),
        name: req.name.clone(),
        role: Role::Owner,
        password: req.password.clone(),
    }
    .validated()?;
    let hash = state
        .auth
        .hash_password(&owner.password)
        .await
        .map_err(ApiError::Internal)?;
    let tenant = state.store.create_tenant(&tenant_req).await?;
    let user = match state
        .store
        .create_user(Some(&TenantRef::Id(tenant.id)), &owner, &hash)
        .await
    {
        Ok(user) => user,
        Err(err) => {
            // The tenant was made for this owner alone: take it back.
            if let Err(undo) = state
                .store
                .delete_tenant(&TenantRef::Id(tenant.id), true)
                .await
            {
                tracing::error!(error = %undo, tenant = %tenant.slug, "cannot remove a half-registered tenant");
            }
            return Err(err.into());
        }
    };
    state.auth.login_failed(&counter, None);
    tracing::info!(tenant = %tenant.slug, user = %user.id, "tenant registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(start_session(&state, user).await?),
    ))
}

pub async fn me(caller: Caller) -> axum::Json<serde_json::Value> {
    // The guard read the user (through its session) or the key for this request.
    axum::Json(match caller.principal {
        Principal::User { user, session } => {
            serde_json::json!({ "kind": "user", "session": session, "user": user })
        }
        Principal::Key(key) => serde_json::json!({ "kind": "key", "key": key }),
    })
}
