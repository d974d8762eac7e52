//! Users, their login sessions with rotating refresh tokens, and tenants' API keys. The
//! store keeps hashes only (bcrypt for passwords, SHA-256 for refresh tokens and keys);
//! hashing and checking happen in `crate::auth`. Every read and change of a user or key
//! takes the caller's [`TenantScope`] and filters by it in SQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::access::{ApiKey, CreateApiKey, CreateUser, Role, Scope, UpdateUser, User};
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::{Exec, Row, sql};
use super::{SqlStore, StoreError, StoreResult, TenantRef, TenantScope, now, parse_status};

/// A user named by id or email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(Uuid),
    Email(String),
}

impl UserRef {
    /// A UUID is an id; anything else an email (compared in lower case).
    pub fn parse(value: &str) -> Self {
        match Uuid::parse_str(value) {
            Ok(id) => UserRef::Id(id),
            Err(_) => UserRef::Email(value.trim().to_lowercase()),
        }
    }
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserRef::Id(id) => write!(f, "{id}"),
            UserRef::Email(email) => f.write_str(email),
        }
    }
}

/// The outcome of trading a refresh token.
#[derive(Debug, Clone, PartialEq)]
pub enum Refreshed {
    /// The token was current: the session goes on with the new token.
    Rotated { session: Uuid, user: User },
    /// The token had already been traded: someone holds a copy, so the whole session
    /// (every token descended from the same login) is revoked.
    Reused { session: Uuid },
    /// Unknown, expired, revoked, or its user is disabled.
    Invalid,
}

/// Users, sessions and API keys.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Creates a user; `tenant` must be `None` exactly for admins (checked by the request's
    /// validation and again by the schema).
    async fn create_user(
        &self,
        tenant: Option<&TenantRef>,
        req: &CreateUser,
        password_hash: &str,
    ) -> StoreResult<User>;
    async fn list_users(&self, scope: TenantScope) -> StoreResult<Vec<User>>;
    async fn user(&self, scope: TenantScope, user: &UserRef) -> StoreResult<User>;
    /// An active or disabled user with its password hash, for a login.
    async fn user_for_login(&self, email: &str) -> StoreResult<Option<(User, String)>>;
    /// Changes a user; disabling one revokes its sessions. The last active owner of a
    /// tenant cannot be demoted or disabled.
    async fn update_user(
        &self,
        scope: TenantScope,
        user: &UserRef,
        changes: &UpdateUser,
    ) -> StoreResult<User>;
    /// Sets a password hash and revokes the user's sessions.
    async fn set_password(
        &self,
        scope: TenantScope,
        user: &UserRef,
        password_hash: &str,
    ) -> StoreResult<User>;
    /// Deletes a user (its sessions go with it). The last active owner stays.
    async fn delete_user(&self, scope: TenantScope, user: &UserRef) -> StoreResult<User>;

    /// Starts a login session with its first refresh token.
    async fn start_session(
        &self,
        user: Uuid,
        session: Uuid,
        refresh_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Trades a refresh token (by hash) for a new one.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Refreshed>;
    /// The session a refresh token belongs to, if any.
    async fn session_of_refresh(&self, hash: &str) -> StoreResult<Option<Uuid>>;
    /// Ends a session; false when it was already over or unknown.
    async fn revoke_session(&self, session: Uuid, why: &str) -> StoreResult<bool>;
    /// The user of a live session (not revoked, not expired, user active).
    async fn session_user(&self, session: Uuid) -> StoreResult<Option<User>>;

    /// Creates an API key from its public prefix and the hash of its secret.
    async fn create_api_key(
        &self,
        tenant: &TenantRef,
        req: &CreateApiKey,
        prefix: &str,
        secret_hash: &str,
    ) -> StoreResult<ApiKey>;
    async fn list_api_keys(&self, scope: TenantScope) -> StoreResult<Vec<ApiKey>>;
    /// Revokes a key (idempotent: a revoked key keeps its first revocation time).
    async fn revoke_api_key(&self, scope: TenantScope, id: Uuid) -> StoreResult<ApiKey>;
    /// A key by its public prefix, with the hash of its secret.
    async fn api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<(ApiKey, String)>>;
    /// Records that a key was used.
    async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;
}

/// A user's columns with its tenant's slug.
macro_rules! select_user {
    () => {
        "SELECT u.id, u.tenant_id, t.slug AS tenant, u.email, u.name, u.role, u.status, \
         u.password_hash, u.created_at, u.updated_at, u.last_login_at \
         FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id "
    };
}

macro_rules! select_key {
    () => {
        "SELECT k.id, k.tenant_id, t.slug AS tenant, k.name, k.prefix, k.secret_hash, \
         k.scopes, k.created_at, k.expires_at, k.revoked_at, k.last_used_at \
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
    };
}

fn user_from_row(row: &Row) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        tenant: row.try_get("tenant")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role: parse_status(&row.try_get::<String>("role")?)?,
        status: parse_status(&row.try_get::<String>("status")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_login_at: row.try_get("last_login_at")?,
    })
}

fn key_from_row(row: &Row) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: row.try_get::<Json<Vec<Scope>>>("scopes")?.0,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

/// A user within `scope`, its row locked in a transaction.
async fn find_user<'c>(
    exec: impl Into<Exec<'c>>,
    scope: TenantScope,
    user: &UserRef,
) -> StoreResult<User> {
    let query = match user {
        UserRef::Id(id) => sql(concat!(
            select_user!(),
            "WHERE u.id = $1 AND ($2 IS NULL OR u.tenant_id = $2)"
        ))
        .bind(*id),
        UserRef::Email(email) => sql(concat!(
            select_user!(),
            "WHERE u.email = $1 AND ($2 IS NULL OR u.tenant_id = $2)"
        ))
        .bind(email),
    };
    query
        .bind(scope.tenant())
        .locking("FOR UPDATE OF u")
        .fetch_optional(exec)
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound {
            what: format!("user {user}"),
        })
}

/// Refuses a change that would leave `user`'s tenant without an active owner.
async fn keep_an_owner<'c>(exec: impl Into<Exec<'c>>, user: &User) -> StoreResult<()> {
    let (Role::Owner, Some(tenant)) = (user.role, user.tenant_id) else {
        return Ok(());
    };
    let others: i64 = sql(
        "SELECT count(*) FROM users WHERE tenant_id = $1 AND role = 'owner' \
         AND status = 'active' AND id <> $2",
    )
    .bind(tenant)
    .bind(user.id)
    .fetch_scalar(exec)
    .await?;
    if others == 0 {
        return Err(StoreError::Conflict {
            message: format!(
                "{} is the last active owner of tenant {}: make another user owner first",
                user.email,
                user.tenant.as_deref().unwrap_or_default()
            ),
            field: Some("role"),
        });
    }
    Ok(())
}

async fn revoke_user_sessions<'c>(
    exec: impl Into<Exec<'c>>,
    user: Uuid,
    why: &str,
) -> StoreResult<()> {
    sql(
        "UPDATE auth_sessions SET revoked_at = $1, revoked_why = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(why)
    .bind(user)
    .execute(exec)
    .await?;
    Ok(())
}

fn user_conflict(err: sqlx::Error, email: &str) -> StoreError {
    match err.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Conflict {
            message: format!("a user with email {email} already exists"),
            field: Some("email"),
        },
        _ => StoreError::Database(err),
    }
}

#[async_trait]
impl AccessStore for SqlStore {
    async fn create_user(
        &self,
        tenant: Option<&TenantRef>,
        req: &CreateUser,
        password_hash: &str,
    ) -> StoreResult<User> {
        let mut tx = self.write().await?;
        let tenant = match tenant {
            Some(tenant) => Some(super::tenants::find_tenant(&mut tx, tenant).await?),
            None => None,
        };
        let at = now();
        let user = User {
            id: Uuid::now_v7(),
            tenant_id: tenant.as_ref().map(|t| t.id),
            tenant: tenant.map(|t| t.slug),
            email: req.email.clone(),
            name: req.name.clone().unwrap_or_else(|| req.email.clone()),
            role: req.role,
            status: dash_core::access::UserStatus::Active,
            created_at: at,
            updated_at: at,
            last_login_at: None,
        };
        sql(
            "INSERT INTO users (id, tenant_id, email, name, role, status, password_hash, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(user.id)
        .bind(user.tenant_id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(user.status.as_str())
        .bind(password_hash)
        .bind(at)
        .bind(at)
        .execute(&mut tx)
        .await
        .map_err(|err| user_conflict(err, &user.email))?;
        tx.commit().await?;
        Ok(user)
    }

    async fn list_users(&self, scope: TenantScope) -> StoreResult<Vec<User>> {
        let rows = sql(concat!(
            select_user!(),
            "WHERE ($1 IS NULL OR u.tenant_id = $1) ORDER BY COALESCE(t.slug, ''), u.email"
        ))
        .bind(scope.tenant())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn user(&self, scope: TenantScope, user: &UserRef) -> StoreResult<User> {
        find_user(&self.pool, scope, user).await
    }

    async fn user_for_login(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let row = sql(concat!(select_user!(), "WHERE u.email = $1"))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some((user_from_row(&row)?, row.try_get("password_hash")?))),
            None => Ok(None),
        }
    }

    async fn update_user(
        &self,
        scope: TenantScope,
        user: &UserRef,
        changes: &UpdateUser,
    ) -> StoreResult<User> {
        let mut tx = self.write().await?;
        let mut record = find_user(&mut tx, scope, user).await?;
        if let Some(role) = changes.role
            && role != record.role
            && (role == Role::Admin || record.role == Role::Admin)
        {
            return Err(StoreError::Conflict {
                message: "a platform admin cannot become a tenant's user, nor the reverse: create a new user".into(),
                field: Some("role"),
            });
        }
        let demoted = changes.role.is_some_and(|role| role != Role::Owner);
        let disabled = changes.status == Some(dash_core::access::UserStatus::Disabled);
        if demoted || disabled {
            keep_an_owner(&mut tx, &record).await?;
        }
        if let Some(name) = &changes.name {
            record.name.clone_from(name);
        }
        if let Some(role) = changes.role {
            record.role = role;
        }
        if let Some(status) = changes.status {
            record.status = status;
        }
        record.updated_at = now();
        sql("UPDATE users SET name = $1, role = $2, status = $3, updated_at = $4 WHERE id = $5")
            .bind(&record.name)
            .bind(record.role.as_str())
            .bind(record.status.as_str())
            .bind(record.updated_at)
            .bind(record.id)
            .execute(&mut tx)
            .await?;
        if disabled {
            revoke_user_sessions(&mut tx, record.id, "user disabled").await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn set_password(
        &self,
        scope: TenantScope,
        user: &UserRef,
        password_hash: &str,
    ) -> StoreResult<User> {
        let mut tx = self.write().await?;
        let mut record = find_user(&mut tx, scope, user).await?;
        record.updated_at = now();
        sql("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(record.updated_at)
            .bind(record.id)
            .execute(&mut tx)
            .await?;
        revoke_user_sessions(&mut tx, record.id, "password changed").await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_user(&self, scope: TenantScope, user: &UserRef) -> StoreResult<User> {
        let mut tx = self.write().await?;
        let record = find_user(&mut tx, scope, user).await?;
        keep_an_owner(&mut tx, &record).await?;
        sql("DELETE FROM users WHERE id = $1")
            .bind(record.id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn start_session(
        &self,
        user: Uuid,
        session: Uuid,
        refresh_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let at = now();
        let mut tx = self.write().await?;
        sql("INSERT INTO auth_sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(session)
            .bind(user)
            .bind(at)
            .bind(expires_at)
            .execute(&mut tx)
            .await?;
        sql("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
            .bind(refresh_hash)
            .bind(session)
            .bind(at)
            .execute(&mut tx)
            .await?;
        sql("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(at)
            .bind(user)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Refreshed> {
        let at = now();
        let mut tx = self.write().await?;
        let Some(row) = sql(
            "SELECT r.session_id, r.used_at, s.revoked_at, s.expires_at, s.user_id \
             FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id \
             WHERE r.token_hash = $1",
        )
        .bind(old_hash)
        .locking("FOR UPDATE OF r, s")
        .fetch_optional(&mut tx)
        .await?
        else {
            return Ok(Refreshed::Invalid);
        };
        let session: Uuid = row.try_get("session_id")?;
        let used: Option<DateTime<Utc>> = row.try_get("used_at")?;
        let revoked: Option<DateTime<Utc>> = row.try_get("revoked_at")?;
        let session_expiry: DateTime<Utc> = row.try_get("expires_at")?;
        if revoked.is_some() || session_expiry <= at {
            return Ok(Refreshed::Invalid);
        }
        if used.is_some() {
            sql("UPDATE auth_sessions SET revoked_at = $1, revoked_why = $2 WHERE id = $3")
                .bind(at)
                .bind("refresh token reused")
                .bind(session)
                .execute(&mut tx)
                .await?;
            tx.commit().await?;
            return Ok(Refreshed::Reused { session });
        }
        let user = find_user(
            &mut tx,
            TenantScope::All,
            &UserRef::Id(row.try_get("user_id")?),
        )
        .await?;
        if user.status != dash_core::access::UserStatus::Active {
            return Ok(Refreshed::Invalid);
        }
        sql("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2")
            .bind(at)
            .bind(old_hash)
            .execute(&mut tx)
            .await?;
        sql("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
            .bind(new_hash)
            .bind(session)
            .bind(at)
            .execute(&mut tx)
            .await?;
        sql("UPDATE auth_sessions SET expires_at = $1 WHERE id = $2")
            .bind(expires_at)
            .bind(session)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Refreshed::Rotated { session, user })
    }

    async fn session_of_refresh(&self, hash: &str) -> StoreResult<Option<Uuid>> {
        Ok(
            sql("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional_scalar(&self.pool)
                .await?,
        )
    }

    async fn revoke_session(&self, session: Uuid, why: &str) -> StoreResult<bool> {
        let changed = sql(
            "UPDATE auth_sessions SET revoked_at = $1, revoked_why = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(why)
        .bind(session)
        .write(&self.pool)
        .await?;
        Ok(changed > 0)
    }

    async fn session_user(&self, session: Uuid) -> StoreResult<Option<User>> {
        let row = sql(concat!(
            select_user!(),
            "JOIN auth_sessions s ON s.user_id = u.id \
             WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
             AND u.status = 'active'"
        ))
        .bind(session)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn create_api_key(
        &self,
        tenant: &TenantRef,
        req: &CreateApiKey,
        prefix: &str,
        secret_hash: &str,
    ) -> StoreResult<ApiKey> {
        let mut tx = self.write().await?;
        let owner = super::tenants::find_tenant(&mut tx, tenant).await?;
        let key = ApiKey {
            id: Uuid::now_v7(),
            tenant_id: owner.id,
            tenant: owner.slug,
            name: req.name.clone(),
            prefix: prefix.to_owned(),
            scopes: req.scopes.clone(),
            created_at: now(),
            expires_at: req.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        sql(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, scopes, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(key.id)
        .bind(key.tenant_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(secret_hash)
        .bind(Json(&key.scopes))
        .bind(key.created_at)
        .bind(key.expires_at)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn list_api_keys(&self, scope: TenantScope) -> StoreResult<Vec<ApiKey>> {
        let rows = sql(concat!(
            select_key!(),
            "WHERE ($1 IS NULL OR k.tenant_id = $1) ORDER BY t.slug, k.created_at"
        ))
        .bind(scope.tenant())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_api_key(&self, scope: TenantScope, id: Uuid) -> StoreResult<ApiKey> {
        let mut tx = self.write().await?;
        sql(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND ($3 IS NULL OR tenant_id = $3)",
        )
        .bind(now())
        .bind(id)
        .bind(scope.tenant())
        .execute(&mut tx)
        .await?;
        let key = sql(concat!(
            select_key!(),
            "WHERE k.id = $1 AND ($2 IS NULL OR k.tenant_id = $2)"
        ))
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(&mut tx)
        .await?
        .as_ref()
        .map(key_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound {
            what: format!("API key {id}"),
        })?;
        tx.commit().await?;
        Ok(key)
    }

    async fn api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<(ApiKey, String)>> {
        let row = sql(concat!(select_key!(), "WHERE k.prefix = $1"))
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some((key_from_row(&row)?, row.try_get("secret_hash")?))),
            None => Ok(None),
        }
    }

    async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        sql("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .write(&self.pool)
            .await?;
        Ok(())
    }
}
