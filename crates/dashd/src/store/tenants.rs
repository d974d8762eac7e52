//! Tenants and their bots: the records every other aggregate hangs from. Requests
//! reaching the store are already validated (see `dash_core::api`); the store enforces
//! uniqueness and references.

use async_trait::async_trait;
use dash_core::api::{CreateBot, CreateTenant, UpdateBot, UpdateTenant};
use dash_core::{Bot, BotRef, Tenant};
use sqlx::types::Json;
use uuid::Uuid;

use super::flows::version_of;
use super::sql::{Exec, Row, sql};
use super::{SqlStore, StoreError, StoreResult, TenantRef, TenantScope, now, parse_status};

/// Records of tenants and bots.
#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn create_tenant(&self, req: &CreateTenant) -> StoreResult<Tenant>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    async fn tenant(&self, tenant: &TenantRef) -> StoreResult<Tenant>;
    async fn update_tenant(
        &self,
        tenant: &TenantRef,
        changes: &UpdateTenant,
    ) -> StoreResult<Tenant>;
    /// Deletes a tenant. With bots left, refuses unless `force`, which deletes them too;
    /// returns the tenant and how many bots went with it.
    async fn delete_tenant(&self, tenant: &TenantRef, force: bool) -> StoreResult<(Tenant, u64)>;

    async fn create_bot(&self, tenant: &TenantRef, req: &CreateBot) -> StoreResult<Bot>;
    /// All bots, or one tenant's, ordered by tenant slug then name.
    async fn list_bots(&self, tenant: Option<&TenantRef>) -> StoreResult<Vec<Bot>>;
    async fn bot(&self, bot: &BotRef) -> StoreResult<Bot>;
    async fn update_bot(&self, bot: &BotRef, changes: &UpdateBot) -> StoreResult<Bot>;
    async fn delete_bot(&self, bot: &BotRef) -> StoreResult<Bot>;
    /// Number of tenants and bots.
    async fn counts(&self) -> StoreResult<(u64, u64)>;

    /// A bot within `scope`: by id, or by name within the scope's tenant. Another
    /// tenant's bot is not found.
    async fn scoped_bot(&self, scope: TenantScope, bot: &str) -> StoreResult<Bot>;
    /// Bots within `scope` in creation order, after the bot `after`, at most `limit`.
    async fn bots_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Bot>>;
}

/// The columns of a bot with its tenant's slug; every bot query starts with this.
macro_rules! select_bot {
    () => {
        "SELECT b.id, b.tenant_id, t.slug AS tenant, b.name, b.phone, b.timezone, b.status, \
         b.settings, b.active_flow_version, b.created_at, b.updated_at \
         FROM bots b JOIN tenants t ON t.id = b.tenant_id "
    };
}

fn tenant_from_row(row: &Row) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        status: parse_status(&row.try_get::<String>("status")?)?,
        api_rate_per_minute: row
            .try_get::<Option<i64>>("api_rate_per_minute")?
            .and_then(|rate| u32::try_from(rate).ok()),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn bot_from_row(row: &Row) -> StoreResult<Bot> {
    Ok(Bot {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        timezone: row.try_get("timezone")?,
        status: parse_status(&row.try_get::<String>("status")?)?,
        settings: row.try_get::<Json<serde_json::Value>>("settings")?.0,
        flow_version: version_of(row.try_get("active_flow_version")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A tenant by id or slug; in a transaction, its row is locked until the end.
pub(crate) async fn find_tenant<'c>(
    exec: impl Into<Exec<'c>>,
    tenant: &TenantRef,
) -> StoreResult<Tenant> {
    let query = match tenant {
        TenantRef::Id(id) => sql("SELECT * FROM tenants WHERE id = $1").bind(*id),
        TenantRef::Slug(slug) => sql("SELECT * FROM tenants WHERE slug = $1").bind(slug),
    };
    query
        .locking("FOR UPDATE")
        .fetch_optional(exec)
        .await?
        .as_ref()
        .map(tenant_from_row)
        .transpose()?
        .ok_or_else(|| tenant.not_found())
}

/// A bot by id or path; in a transaction, its row is locked until the end.
pub(crate) async fn find_bot<'c>(exec: impl Into<Exec<'c>>, bot: &BotRef) -> StoreResult<Bot> {
    let query = match bot {
        BotRef::Id(id) => sql(concat!(select_bot!(), "WHERE b.id = $1")).bind(*id),
        BotRef::Path { tenant, bot } => {
            sql(concat!(select_bot!(), "WHERE t.slug = $1 AND b.name = $2"))
                .bind(tenant)
                .bind(bot)
        }
    };
    query
        .locking("FOR UPDATE OF b")
        .fetch_optional(exec)
        .await?
        .as_ref()
        .map(bot_from_row)
        .transpose()?
        .ok_or_else(|| bot_not_found(bot))
}

#[async_trait]
impl TenantStore for SqlStore {
    async fn create_tenant(&self, req: &CreateTenant) -> StoreResult<Tenant> {
        let tenant = new_tenant(req);
        let mut tx = self.write().await?;
        sql(
            "INSERT INTO tenants (id, slug, name, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.id)
        .bind(&tenant.slug)
        .bind(&tenant.name)
        .bind(tenant.status.as_str())
        .bind(tenant.created_at)
        .bind(tenant.updated_at)
        .execute(&mut tx)
        .await
        .map_err(|err| conflict(err, &tenant.slug, None))?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let rows = sql("SELECT * FROM tenants ORDER BY slug")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn tenant(&self, tenant: &TenantRef) -> StoreResult<Tenant> {
        find_tenant(&self.pool, tenant).await
    }

    async fn update_tenant(
        &self,
        tenant: &TenantRef,
        changes: &UpdateTenant,
    ) -> StoreResult<Tenant> {
        let mut tx = self.write().await?;
        let mut record = find_tenant(&mut tx, tenant).await?;
        apply_tenant_update(&mut record, changes);
        sql(
            "UPDATE tenants SET name = $1, status = $2, api_rate_per_minute = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(&record.name)
        .bind(record.status.as_str())
        .bind(record.api_rate_per_minute.map(i64::from))
        .bind(record.updated_at)
        .bind(record.id)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_tenant(&self, tenant: &TenantRef, force: bool) -> StoreResult<(Tenant, u64)> {
        let mut tx = self.write().await?;
        let record = find_tenant(&mut tx, tenant).await?;
        let bots: i64 = sql("SELECT count(*) FROM bots WHERE tenant_id = $1")
            .bind(record.id)
            .fetch_scalar(&mut tx)
            .await?;
        let bots = u64::try_from(bots).unwrap_or(0);
        if bots > 0 && !force {
            return Err(has_bots(&record.slug, bots));
        }
        // Bots go with the tenant through ON DELETE CASCADE.
        sql("DELETE FROM tenants WHERE id = $1")
            .bind(record.id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok((record, bots))
    }

    async fn create_bot(&self, tenant: &TenantRef, req: &CreateBot) -> StoreResult<Bot> {
        let mut tx = self.write().await?;
        let owner = find_tenant(&mut tx, tenant).await?;
        let bot = new_bot(&owner, req);
        sql("INSERT INTO bots (id, tenant_id, name, phone, timezone, status, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(bot.id)
        .bind(owner.id)
        .bind(&bot.name)
        .bind(&bot.phone)
        .bind(&bot.timezone)
        .bind(bot.status.as_str())
        .bind(Json(&bot.settings))
        .bind(bot.created_at)
        .bind(bot.updated_at)
        .execute(&mut tx)
        .await
        .map_err(|err| conflict(err, &owner.slug, Some((&bot.name, bot.phone.as_deref()))))?;
        tx.commit().await?;
        Ok(bot)
    }

    async fn list_bots(&self, tenant: Option<&TenantRef>) -> StoreResult<Vec<Bot>> {
        let rows = match tenant {
            Some(tenant) => {
                let owner = find_tenant(&self.pool, tenant).await?;
                sql(concat!(
                    select_bot!(),
                    "WHERE b.tenant_id = $1 ORDER BY b.name"
                ))
                .bind(owner.id)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sql(concat!(select_bot!(), "ORDER BY t.slug, b.name"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(bot_from_row).collect()
    }

    async fn bot(&self, bot: &BotRef) -> StoreResult<Bot> {
        find_bot(&self.pool, bot).await
    }

    async fn update_bot(&self, bot: &BotRef, changes: &UpdateBot) -> StoreResult<Bot> {
        let mut tx = self.write().await?;
        let mut record = find_bot(&mut tx, bot).await?;
        apply_bot_update(&mut record, changes);
        sql(
            "UPDATE bots SET name = $1, phone = $2, timezone = $3, status = $4, settings = $5, \
             updated_at = $6 WHERE id = $7",
        )
        .bind(&record.name)
        .bind(&record.phone)
        .bind(&record.timezone)
        .bind(record.status.as_str())
        .bind(Json(&record.settings))
        .bind(record.updated_at)
        .bind(record.id)
        .execute(&mut tx)
        .await
        .map_err(|err| {
            conflict(
                err,
                &record.tenant,
                Some((&record.name, record.phone.as_deref())),
            )
        })?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_bot(&self, bot: &BotRef) -> StoreResult<Bot> {
        let mut tx = self.write().await?;
        let record = find_bot(&mut tx, bot).await?;
        sql("DELETE FROM bots WHERE id = $1")
            .bind(record.id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn counts(&self) -> StoreResult<(u64, u64)> {
        let row = sql(
            "SELECT (SELECT count(*) FROM tenants) AS tenants, (SELECT count(*) FROM bots) AS bots",
        )
        .fetch_one(&self.pool)
        .await?;
        let count = |name: &str| -> StoreResult<u64> {
            Ok(u64::try_from(row.try_get::<i64>(name)?).unwrap_or(0))
        };
        Ok((count("tenants")?, count("bots")?))
    }

    async fn scoped_bot(&self, scope: TenantScope, bot: &str) -> StoreResult<Bot> {
        let query = match (Uuid::parse_str(bot), scope) {
            (Ok(id), _) => sql(concat!(
                select_bot!(),
                "WHERE b.id = $1 AND ($2 IS NULL OR b.tenant_id = $2)"
            ))
            .bind(id)
            .bind(scope.tenant()),
            (Err(_), TenantScope::Tenant(tenant)) => sql(concat!(
                select_bot!(),
                "WHERE b.name = $1 AND b.tenant_id = $2"
            ))
            .bind(bot)
            .bind(tenant),
            (Err(_), TenantScope::All) => {
                return Err(StoreError::NotFound {
                    what: format!("bot {bot} (platform admins name bots by id)"),
                });
            }
        };
        query
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(bot_from_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("bot {bot}"),
            })
    }

    async fn bots_page(
        &self,
        scope: TenantScope,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Bot>> {
        let rows = sql(concat!(
            select_bot!(),
            "WHERE ($1 IS NULL OR b.tenant_id = $1) AND ($2 IS NULL OR b.id > $2) \
             ORDER BY b.id LIMIT $3"
        ))
        .bind(scope.tenant())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(bot_from_row).collect()
    }
}

/// Maps a unique-constraint violation to a conflict naming the field, by constraint name.
fn conflict(err: sqlx::Error, tenant_slug: &str, bot: Option<(&str, Option<&str>)>) -> StoreError {
    let Some(db) = err.as_database_error() else {
        return StoreError::Database(err);
    };
    if !db.is_unique_violation() {
        return StoreError::Database(err);
    }
    // PostgreSQL reports the constraint name; SQLite only the columns in the message.
    let what = db.constraint().unwrap_or_else(|| db.message()).to_owned();
    match bot {
        Some((_, Some(phone))) if what.contains("phone") => StoreError::Conflict {
            message: format!("phone {phone} is already used by another bot"),
            field: Some("phone"),
        },
        Some((name, _)) => StoreError::Conflict {
            message: format!("bot {tenant_slug}/{name} already exists"),
            field: Some("name"),
        },
        None => StoreError::Conflict {
            message: format!("tenant {tenant_slug} already exists"),
            field: Some("slug"),
        },
    }
}

pub(crate) fn bot_not_found(bot: &BotRef) -> StoreError {
    StoreError::NotFound {
        what: format!("bot {bot}"),
    }
}

fn has_bots(slug: &str, count: u64) -> StoreError {
    StoreError::Conflict {
        message: format!(
            "tenant {slug} still has {count} bot{}: delete them first, or force the deletion (dashctl tenant delete {slug} --force)",
            if count == 1 { "" } else { "s" }
        ),
        field: None,
    }
}

/// Builds a new tenant record from a validated request.
fn new_tenant(req: &CreateTenant) -> Tenant {
    let now = now();
    Tenant {
        id: Uuid::now_v7(),
        slug: req.slug.clone(),
        name: req.name.clone().unwrap_or_else(|| req.slug.clone()),
        status: dash_core::TenantStatus::Active,
        api_rate_per_minute: None,
        created_at: now,
        updated_at: now,
    }
}

/// Applies a validated update to a tenant record.
fn apply_tenant_update(tenant: &mut Tenant, changes: &UpdateTenant) {
    if let Some(name) = &changes.name {
        tenant.name.clone_from(name);
    }
    if let Some(status) = changes.status {
        tenant.status = status;
    }
    if let Some(rate) = changes.api_rate_per_minute {
        tenant.api_rate_per_minute = (rate > 0).then_some(rate);
    }
    tenant.updated_at = now();
}

/// Builds a new bot record from a validated request.
fn new_bot(tenant: &Tenant, req: &CreateBot) -> Bot {
    let now = now();
    Bot {
        id: Uuid::now_v7(),
        tenant_id: tenant.id,
        tenant: tenant.slug.clone(),
        name: req.name.clone(),
        phone: req.phone.clone(),
        timezone: req.timezone.clone().unwrap_or_else(|| "UTC".to_owned()),
        status: dash_core::BotStatus::Active,
        settings: req
            .settings
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        flow_version: None,
        created_at: now,
        updated_at: now,
    }
}

/// Applies a validated update to a bot record.
fn apply_bot_update(bot: &mut Bot, changes: &UpdateBot) {
    if let Some(name) = &changes.name {
        bot.name.clone_from(name);
    }
    if let Some(phone) = &changes.phone {
        bot.phone.clone_from(phone);
    }
    if let Some(timezone) = &changes.timezone {
        bot.timezone.clone_from(timezone);
    }
    if let Some(status) = changes.status {
        bot.status = status;
    }
    if let Some(settings) = &changes.settings {
        bot.settings = settings.clone();
    }
    if let (Some(chain), Some(settings)) = (&changes.chain, bot.settings.as_object_mut()) {
        settings.insert("chain".into(), serde_json::json!(chain));
    }
    bot.updated_at = now();
}
