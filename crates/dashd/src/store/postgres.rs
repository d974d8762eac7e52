//! The production backend: PostgreSQL through a connection pool. Migrations are an explicit
//! operator step (`dashd migrate`); start-up refuses a schema that does not match. Writes
//! lock the rows they read (`FOR UPDATE`) so concurrent updates never lose each other.

use async_trait::async_trait;
use dash_core::api::{CreateBot, CreateTenant, UpdateBot, UpdateTenant};
use dash_core::config::{Backend, redact_url};
use dash_core::{Bot, BotRef, Tenant};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use super::{
    MigrationPolicy, MigrationRecord, NewFlowVersion, SchemaState, Store, StoreResult,
    StoredFlowVersion, TenantRef, active_version_conflict, apply_bot_update, apply_tenant_update,
    bot_not_found, compare_schema, conflict, flow_version_not_found, format_name, has_bots,
    new_bot, new_tenant, now, parse_format, parse_status, schema_error, version_of,
};

super::pipeline::pipeline_store!(PostgresStore, |id: uuid::Uuid| id, row_uuid);
super::providers::provider_store!(PostgresStore, |id: uuid::Uuid| id, row_uuid);
super::sessions::session_store!(PostgresStore, |id: uuid::Uuid| id, row_uuid);

impl super::pipeline::Backend for PostgresStore {
    type Db = sqlx::Postgres;
}

fn row_uuid(row: &PgRow, column: &str) -> StoreResult<uuid::Uuid> {
    Ok(row.try_get::<uuid::Uuid, _>(column)?)
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The columns of a bot with its tenant's slug; every bot query starts with this.
macro_rules! select_bot {
    () => {
        "SELECT b.id, b.tenant_id, t.slug AS tenant, b.name, b.phone, b.timezone, b.status, \
         b.settings, b.active_flow_version, b.created_at, b.updated_at \
         FROM bots b JOIN tenants t ON t.id = b.tenant_id "
    };
}

/// Whether a lookup locks the row for the rest of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    No,
    ForUpdate,
}

/// A PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    location: String,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://...`).
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self {
            pool,
            location: redact_url(url),
        })
    }

    async fn write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Applies or checks migrations according to `policy`.
    pub async fn prepare(&self, policy: MigrationPolicy) -> StoreResult<()> {
        // Compare first, so a newer or damaged schema gets its own message.
        let state = compare_schema(&embedded(), &self.applied().await?);
        match (&state, policy) {
            // The migrator holds an advisory lock, so two `dashd migrate` never race.
            (SchemaState::Behind { .. }, MigrationPolicy::Apply) => {
                Ok(MIGRATOR.run(&self.pool).await?)
            }
            _ => schema_error(&state).map_or(Ok(()), Err),
        }
    }

    async fn applied(&self) -> StoreResult<Vec<MigrationRecord>> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }
}

fn embedded() -> Vec<(i64, Vec<u8>)> {
    MIGRATOR
        .iter()
        .map(|m| (m.version, m.checksum.to_vec()))
        .collect()
}

fn tenant_from_row(row: &PgRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        status: parse_status(row.try_get("status")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn bot_from_row(row: &PgRow) -> StoreResult<Bot> {
    Ok(Bot {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        timezone: row.try_get("timezone")?,
        status: parse_status(row.try_get("status")?)?,
        settings: row.try_get::<Json<serde_json::Value>, _>("settings")?.0,
        flow_version: version_of(
            row.try_get::<Option<i32>, _>("active_flow_version")?
                .map(i64::from),
        ),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

async fn find_tenant(
    conn: &mut PgConnection,
    tenant: &TenantRef,
    lock: Lock,
) -> StoreResult<Tenant> {
    let row = match (tenant, lock) {
        (TenantRef::Id(id), Lock::No) => {
            sqlx::query("SELECT * FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(conn)
                .await?
        }
        (TenantRef::Id(id), Lock::ForUpdate) => {
            sqlx::query("SELECT * FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(conn)
                .await?
        }
        (TenantRef::Slug(slug), Lock::No) => {
            sqlx::query("SELECT * FROM tenants WHERE slug = $1")
                .bind(slug)
                .fetch_optional(conn)
                .await?
        }
        (TenantRef::Slug(slug), Lock::ForUpdate) => {
            sqlx::query("SELECT * FROM tenants WHERE slug = $1 FOR UPDATE")
                .bind(slug)
                .fetch_optional(conn)
                .await?
        }
    };
    row.as_ref()
        .map(tenant_from_row)
        .transpose()?
        .ok_or_else(|| tenant.not_found())
}

async fn find_bot(conn: &mut PgConnection, bot: &BotRef, lock: Lock) -> StoreResult<Bot> {
    let row = match (bot, lock) {
        (BotRef::Id(id), Lock::No) => {
            sqlx::query(concat!(select_bot!(), "WHERE b.id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        }
        (BotRef::Id(id), Lock::ForUpdate) => {
            sqlx::query(concat!(select_bot!(), "WHERE b.id = $1 FOR UPDATE OF b"))
                .bind(id)
                .fetch_optional(conn)
                .await?
        }
        (BotRef::Path { tenant, bot }, Lock::No) => {
            sqlx::query(concat!(select_bot!(), "WHERE t.slug = $1 AND b.name = $2"))
                .bind(tenant)
                .bind(bot)
                .fetch_optional(conn)
                .await?
        }
        (BotRef::Path { tenant, bot }, Lock::ForUpdate) => {
            sqlx::query(concat!(
                select_bot!(),
                "WHERE t.slug = $1 AND b.name = $2 FOR UPDATE OF b"
            ))
            .bind(tenant)
            .bind(bot)
            .fetch_optional(conn)
            .await?
        }
    };
    row.as_ref()
        .map(bot_from_row)
        .transpose()?
        .ok_or_else(|| bot_not_found(bot))
}

async fn count_bots(conn: &mut PgConnection, tenant: &Tenant) -> StoreResult<u64> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM bots WHERE tenant_id = $1")
        .bind(tenant.id)
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

fn flow_version_from_row(row: &PgRow, active: Option<u32>) -> StoreResult<StoredFlowVersion> {
    let version = version_of(row.try_get::<i32, _>("version").ok().map(i64::from)).unwrap_or(0);
    Ok(StoredFlowVersion {
        version,
        active: active == Some(version),
        format: parse_format(row.try_get("format")?)?,
        source: row.try_get("source")?,
        document: row.try_get::<Json<serde_json::Value>, _>("document")?.0,
        created_at: row.try_get("created_at")?,
    })
}

async fn find_flow_version(
    conn: &mut PgConnection,
    bot: &Bot,
    version: Option<u32>,
) -> StoreResult<StoredFlowVersion> {
    let Some(wanted) = version.or(bot.flow_version) else {
        return Err(flow_version_not_found(bot, None));
    };
    let Ok(wanted_db) = i32::try_from(wanted) else {
        return Err(flow_version_not_found(bot, Some(wanted)));
    };
    let row = sqlx::query(
        "SELECT version, format, source, document, created_at FROM flow_versions WHERE bot_id = $1 AND version = $2",
    )
    .bind(bot.id)
    .bind(wanted_db)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => flow_version_from_row(&row, bot.flow_version),
        None => Err(flow_version_not_found(bot, Some(wanted))),
    }
}

async fn set_active_flow_version(
    conn: &mut PgConnection,
    bot: &Bot,
    version: u32,
) -> StoreResult<()> {
    sqlx::query("UPDATE bots SET active_flow_version = $1, updated_at = $2 WHERE id = $3")
        .bind(i32::try_from(version).unwrap_or(i32::MAX))
        .bind(now())
        .bind(bot.id)
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A ping, then a write of no consequence: a transaction that takes a transaction
    /// id and commits, which writes a commit record to the WAL, so a server that cannot
    /// write (full disk, read-only) shows as degraded, with its reason.
    async fn health(&self) -> super::StoreHealth {
        if let Err(err) = self.ping().await {
            return super::StoreHealth::Degraded {
                reason: format!("the database is not answering: {err}"),
            };
        }
        let probe = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<(), sqlx::Error>(())
        };
        match probe.await {
            Ok(()) => super::StoreHealth::Ok,
            Err(err) => super::StoreHealth::Degraded {
                reason: format!(
                    "database writes failing: {}",
                    super::StoreError::Database(err)
                ),
            },
        }
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        Ok(self
            .applied()
            .await?
            .iter()
            .map(|(v, _, _)| *v)
            .max()
            .unwrap_or(0))
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_tenant(&self, req: &CreateTenant) -> StoreResult<Tenant> {
        let tenant = new_tenant(req);
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.id)
        .bind(&tenant.slug)
        .bind(&tenant.name)
        .bind(tenant.status.as_str())
        .bind(tenant.created_at)
        .bind(tenant.updated_at)
        .execute(&self.pool)
        .await
        .map_err(|err| conflict(err, &tenant.slug, None))?;
        Ok(tenant)
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let rows = sqlx::query("SELECT * FROM tenants ORDER BY slug")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn tenant(&self, tenant: &TenantRef) -> StoreResult<Tenant> {
        let mut conn = self.pool.acquire().await?;
        find_tenant(&mut conn, tenant, Lock::No).await
    }

    async fn update_tenant(
        &self,
        tenant: &TenantRef,
        changes: &UpdateTenant,
    ) -> StoreResult<Tenant> {
        let mut tx = self.pool.begin().await?;
        let mut record = find_tenant(&mut tx, tenant, Lock::ForUpdate).await?;
        apply_tenant_update(&mut record, changes);
        sqlx::query("UPDATE tenants SET name = $1, status = $2, updated_at = $3 WHERE id = $4")
            .bind(&record.name)
            .bind(record.status.as_str())
            .bind(record.updated_at)
            .bind(record.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_tenant(&self, tenant: &TenantRef, force: bool) -> StoreResult<(Tenant, u64)> {
        let mut tx = self.pool.begin().await?;
        // The row lock also blocks new bots (their foreign key needs a share lock on it).
        let record = find_tenant(&mut tx, tenant, Lock::ForUpdate).await?;
        let bots = count_bots(&mut tx, &record).await?;
        if bots > 0 && !force {
            return Err(has_bots(&record.slug, bots));
        }
        sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(record.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((record, bots))
    }

    async fn create_bot(&self, tenant: &TenantRef, req: &CreateBot) -> StoreResult<Bot> {
        let mut conn = self.pool.acquire().await?;
        let owner = find_tenant(&mut conn, tenant, Lock::No).await?;
        let bot = new_bot(&owner, req);
        sqlx::query(
            "INSERT INTO bots (id, tenant_id, name, phone, timezone, status, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(bot.id)
        .bind(owner.id)
        .bind(&bot.name)
        .bind(&bot.phone)
        .bind(&bot.timezone)
        .bind(bot.status.as_str())
        .bind(Json(&bot.settings))
        .bind(bot.created_at)
        .bind(bot.updated_at)
        .execute(&mut *conn)
        .await
        .map_err(|err| match err.as_database_error() {
            // The tenant was deleted between the lookup and the insert.
            Some(db) if db.is_foreign_key_violation() => tenant.not_found(),
            _ => conflict(err, &owner.slug, Some((&bot.name, bot.phone.as_deref()))),
        })?;
        Ok(bot)
    }

    async fn list_bots(&self, tenant: Option<&TenantRef>) -> StoreResult<Vec<Bot>> {
        let mut conn = self.pool.acquire().await?;
        let rows = match tenant {
            Some(tenant) => {
                let owner = find_tenant(&mut conn, tenant, Lock::No).await?;
                sqlx::query(concat!(
                    select_bot!(),
                    "WHERE b.tenant_id = $1 ORDER BY b.name"
                ))
                .bind(owner.id)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query(concat!(select_bot!(), "ORDER BY t.slug, b.name"))
                    .fetch_all(&mut *conn)
                    .await?
            }
        };
        rows.iter().map(bot_from_row).collect()
    }

    async fn bot(&self, bot: &BotRef) -> StoreResult<Bot> {
        let mut conn = self.pool.acquire().await?;
        find_bot(&mut conn, bot, Lock::No).await
    }

    async fn update_bot(&self, bot: &BotRef, changes: &UpdateBot) -> StoreResult<Bot> {
        let mut tx = self.pool.begin().await?;
        let mut record = find_bot(&mut tx, bot, Lock::ForUpdate).await?;
        apply_bot_update(&mut record, changes);
        sqlx::query(
            "UPDATE bots SET name = $1, phone = $2, timezone = $3, status = $4, settings = $5, updated_at = $6 WHERE id = $7",
        )
        .bind(&record.name)
        .bind(&record.phone)
        .bind(&record.timezone)
        .bind(record.status.as_str())
        .bind(Json(&record.settings))
        .bind(record.updated_at)
        .bind(record.id)
        .execute(&mut *tx)
        .await
        .map_err(|err| {
            conflict(err, &record.tenant, Some((&record.name, record.phone.as_deref())))
        })?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_bot(&self, bot: &BotRef) -> StoreResult<Bot> {
        let mut tx = self.pool.begin().await?;
        let record = find_bot(&mut tx, bot, Lock::ForUpdate).await?;
        sqlx::query("DELETE FROM bots WHERE id = $1")
            .bind(record.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn counts(&self) -> StoreResult<(u64, u64)> {
        let (tenants, bots): (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM bots)")
                .fetch_one(&self.pool)
                .await?;
        Ok((
            u64::try_from(tenants).unwrap_or(0),
            u64::try_from(bots).unwrap_or(0),
        ))
    }

    async fn create_flow_version(
        &self,
        bot: &BotRef,
        new: &NewFlowVersion,
        activate: bool,
    ) -> StoreResult<StoredFlowVersion> {
        let mut tx = self.pool.begin().await?;
        // Locking the bot serialises imports; its counter hands out each number once.
        let record = find_bot(&mut tx, bot, Lock::ForUpdate).await?;
        let next: i32 = sqlx::query_scalar(
            "UPDATE bots SET last_flow_version = last_flow_version + 1 WHERE id = $1 RETURNING last_flow_version",
        )
        .bind(record.id)
        .fetch_one(&mut *tx)
        .await?;
        let version = version_of(Some(i64::from(next))).unwrap_or(0);
        let created_at = now();
        sqlx::query(
            "INSERT INTO flow_versions (id, bot_id, version, format, source, document, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(record.id)
        .bind(i32::try_from(version).unwrap_or(i32::MAX))
        .bind(format_name(new.format))
        .bind(&new.source)
        .bind(Json(&new.document))
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        if activate {
            set_active_flow_version(&mut tx, &record, version).await?;
        }
        tx.commit().await?;
        Ok(StoredFlowVersion {
            version,
            active: activate || record.flow_version == Some(version),
            format: new.format,
            source: new.source.clone(),
            document: new.document.clone(),
            created_at,
        })
    }

    async fn list_flow_versions(&self, bot: &BotRef) -> StoreResult<Vec<StoredFlowVersion>> {
        let mut conn = self.pool.acquire().await?;
        let record = find_bot(&mut conn, bot, Lock::No).await?;
        let rows = sqlx::query(
            "SELECT version, format, source, document, created_at FROM flow_versions WHERE bot_id = $1 ORDER BY version",
        )
        .bind(record.id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| flow_version_from_row(row, record.flow_version))
            .collect()
    }

    async fn flow_version(
        &self,
        bot: &BotRef,
        version: Option<u32>,
    ) -> StoreResult<StoredFlowVersion> {
        let mut conn = self.pool.acquire().await?;
        let record = find_bot(&mut conn, bot, Lock::No).await?;
        find_flow_version(&mut conn, &record, version).await
    }

    async fn activate_flow_version(
        &self,
        bot: &BotRef,
        version: u32,
    ) -> StoreResult<StoredFlowVersion> {
        let mut tx = self.pool.begin().await?;
        let record = find_bot(&mut tx, bot, Lock::ForUpdate).await?;
        let mut found = find_flow_version(&mut tx, &record, Some(version)).await?;
        set_active_flow_version(&mut tx, &record, version).await?;
        tx.commit().await?;
        found.active = true;
        Ok(found)
    }

    async fn delete_flow_version(
        &self,
        bot: &BotRef,
        version: u32,
    ) -> StoreResult<StoredFlowVersion> {
        let mut tx = self.pool.begin().await?;
        let record = find_bot(&mut tx, bot, Lock::ForUpdate).await?;
        if record.flow_version == Some(version) {
            return Err(active_version_conflict(&record, version));
        }
        let found = find_flow_version(&mut tx, &record, Some(version)).await?;
        sqlx::query("DELETE FROM flow_versions WHERE bot_id = $1 AND version = $2")
            .bind(record.id)
            .bind(i32::try_from(version).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(found)
    }
}
