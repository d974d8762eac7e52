//! The embedded backend: one SQLite file in WAL mode. Writes run in `BEGIN IMMEDIATE`
//! transactions so that a read-then-write never fails half-way on a lock upgrade.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dash_core::api::{CreateBot, CreateTenant, UpdateBot, UpdateTenant};
use dash_core::config::Backend;
use dash_core::{Bot, BotRef, Tenant};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{Row, SqliteConnection};
use uuid::fmt::Hyphenated;

use super::sqlite_file::{self, DatabaseFile};
use super::{
    MigrationPolicy, MigrationRecord, NewFlowVersion, SchemaState, Store, StoreHealth, StoreResult,
    StoredFlowVersion, TenantRef, WriteHealth, active_version_conflict, apply_bot_update,
    apply_tenant_update, bot_not_found, compare_schema, conflict, flow_version_not_found,
    format_name, has_bots, new_bot, new_tenant, now, parse_format, parse_status, schema_error,
    version_of,
};

super::pipeline::pipeline_store!(SqliteStore, |id: uuid::Uuid| id.hyphenated(), row_uuid);
super::providers::provider_store!(SqliteStore, |id: uuid::Uuid| id.hyphenated(), row_uuid);
super::sessions::session_store!(SqliteStore, |id: uuid::Uuid| id.hyphenated(), row_uuid);

impl super::pipeline::Backend for SqliteStore {
    type Db = sqlx::Sqlite;
}

fn row_uuid(row: &SqliteRow, column: &str) -> StoreResult<uuid::Uuid> {
    Ok(row.try_get::<Hyphenated, _>(column)?.into_uuid())
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The columns of a bot with its tenant's slug; every bot query starts with this.
macro_rules! select_bot {
    () => {
        "SELECT b.id, b.tenant_id, t.slug AS tenant, b.name, b.phone, b.timezone, b.status, \
         b.settings, b.active_flow_version, b.created_at, b.updated_at \
         FROM bots b JOIN tenants t ON t.id = b.tenant_id "
    };
}

/// A SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    location: String,
    /// SQLite allows one writer at a time. Queuing writers here, in order, replaces
    /// SQLite's busy handler (which sleeps and retries) with an immediate hand-over.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The locked database file; `None` for an in-memory database.
    file: Option<Arc<DatabaseFile>>,
    health: Arc<WriteHealth>,
}

/// A write transaction holding the writer's turn until it commits or drops.
///
/// It runs `BEGIN IMMEDIATE`, `COMMIT` and `ROLLBACK` itself rather than through
/// `sqlx::Transaction`, whose drop only queues a rollback for the connection's next use
/// and whose failed commit leaves the transaction open: after a disk-full or I/O error
/// SQLite may already have rolled back, the queued `ROLLBACK` then fails, and sqlx keeps
/// counting the connection as inside a transaction, so every later `BEGIN` on it failed
/// until a restart. Here a write that does not commit is rolled back before the writer's
/// turn passes on, and a connection that cannot roll back is closed.
pub(crate) struct WriteTx {
    /// `Some` until `drop`; `commit` marks the transaction finished instead of taking it.
    conn: Option<PoolConnection<sqlx::Sqlite>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    health: Arc<WriteHealth>,
    /// True once `COMMIT` succeeded; otherwise `drop` rolls back.
    finished: bool,
}

impl WriteTx {
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        match sqlx::query("COMMIT").execute(&mut *self).await {
            Ok(_) => {
                self.finished = true;
                self.health.succeeded();
                Ok(())
            }
            Err(err) => {
                // Dropping `self` rolls back, whatever state SQLite left the connection in.
                self.health.failed(&err);
                Err(err)
            }
        }
    }

    fn conn(&self) -> &PoolConnection<sqlx::Sqlite> {
        // Invariant: `conn` is only taken in `drop`, so it is there for any `&self`.
        #[allow(clippy::expect_used)]
        self.conn
            .as_ref()
            .expect("a write transaction keeps its connection until dropped")
    }

    fn conn_mut(&mut self) -> &mut PoolConnection<sqlx::Sqlite> {
        // Invariant: as in `conn`.
        #[allow(clippy::expect_used)]
        self.conn
            .as_mut()
            .expect("a write transaction keeps its connection until dropped")
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn()
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn_mut()
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (Some(conn), Ok(runtime)) = (self.conn.take(), tokio::runtime::Handle::try_current())
        else {
            // Without a runtime the pool cannot take the connection back either; dropping
            // it closes the connection, and closing rolls back.
            return;
        };
        let turn = self.turn.take();
        let health = self.health.clone();
        runtime.spawn(async move {
            roll_back(conn, &health).await;
            // Only now may the next writer begin.
            drop(turn);
        });
    }
}

/// Ends a write that did not commit: notes a failure of the database itself, then rolls
/// back, and closes the connection if even that fails.
async fn roll_back(mut conn: PoolConnection<sqlx::Sqlite>, health: &WriteHealth) {
    // A failed statement returned its error to the caller; the connection still knows
    // it. A missing row or a constraint is not a failure of the database.
    if let Ok(mut handle) = conn.lock_handle().await
        && let Some(err) = handle.last_error()
    {
        health.failed(&sqlx::Error::Database(Box::new(err)));
    }
    // Fails when SQLite already rolled back on its own (it may, on a full disk or an I/O
    // error) and when the connection is broken; either way a fresh connection is safe.
    if let Err(err) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
        tracing::debug!(error = %err, "rollback failed; closing the connection");
        if let Err(err) = conn.close().await {
            tracing::debug!(error = %err, "closing a connection after a failed rollback");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database `options` name, holding an exclusive
    /// lock on its file for as long as the store lives; `location` is what status
    /// output shows.
    pub async fn open(
        options: SqliteConnectOptions,
        location: String,
        max_connections: u32,
        synchronous: dash_core::config::SqliteSynchronous,
    ) -> StoreResult<Self> {
        // Lock before SQLite touches the file: a second daemon must not even migrate it.
        let file = match sqlite_file::on_disk(&options) {
            Some(path) => Some(Arc::new(DatabaseFile::lock(path)?)),
            None => None,
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL is durable across process crashes; only a power loss can drop
            // the last transactions, never corrupt the file. FULL survives that too.
            .synchronous(match synchronous {
                dash_core::config::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
                dash_core::config::SqliteSynchronous::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        if let Some(file) = &file {
            DatabaseFile::watch(file);
        }
        Ok(Self {
            pool,
            location,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            file,
            health: Arc::new(WriteHealth::default()),
        })
    }

    /// Applies or checks migrations according to `policy`.
    pub async fn prepare(&self, policy: MigrationPolicy) -> StoreResult<()> {
        // Compare first, so a newer or damaged schema gets its own message.
        let state = compare_schema(&embedded(), &self.applied().await?);
        match (&state, policy) {
            (SchemaState::Behind { .. }, MigrationPolicy::Apply) => {
                Ok(MIGRATOR.run(&self.pool).await?)
            }
            _ => schema_error(&state).map_or(Ok(()), Err),
        }
    }

    async fn applied(&self) -> StoreResult<Vec<MigrationRecord>> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    async fn write(&self) -> StoreResult<WriteTx> {
        self.check_file()?;
        let turn = self.writer.clone().lock_owned().await;
        let conn = self.pool.acquire().await.inspect_err(|err| {
            self.health.failed(err);
        })?;
        let mut tx = WriteTx {
            conn: Some(conn),
            turn: Some(turn),
            health: self.health.clone(),
            finished: false,
        };
        if let Err(err) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx).await {
            self.health.failed(&err);
            return Err(err.into());
        }
        Ok(tx)
    }

    /// Refuses to go on once the database file was replaced or deleted.
    fn check_file(&self) -> StoreResult<()> {
        self.file.as_ref().map_or(Ok(()), |file| file.check())
    }

    /// A write of no consequence, telling whether writes go through: it rewrites the
    /// schema's `user_version` with its own value, which appends a page to the WAL like
    /// any real write (so a full disk fails it) and touches no table.
    async fn probe_write(&self) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        // A PRAGMA takes no bound parameters; the value is an integer read just above.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {version}"
        )))
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }
}

fn embedded() -> Vec<(i64, Vec<u8>)> {
    MIGRATOR
        .iter()
        .map(|m| (m.version, m.checksum.to_vec()))
        .collect()
}

fn tenant_from_row(row: &SqliteRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: row.try_get::<Hyphenated, _>("id")?.into_uuid(),
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        status: parse_status(row.try_get("status")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn bot_from_row(row: &SqliteRow) -> StoreResult<Bot> {
    Ok(Bot {
        id: row.try_get::<Hyphenated, _>("id")?.into_uuid(),
        tenant_id: row.try_get::<Hyphenated, _>("tenant_id")?.into_uuid(),
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        timezone: row.try_get("timezone")?,
        status: parse_status(row.try_get("status")?)?,
        settings: row.try_get::<Json<serde_json::Value>, _>("settings")?.0,
        flow_version: version_of(row.try_get("active_flow_version")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

async fn find_tenant(conn: &mut SqliteConnection, tenant: &TenantRef) -> StoreResult<Tenant> {
    let row = match tenant {
        TenantRef::Id(id) => {
            sqlx::query("SELECT * FROM tenants WHERE id = ?")
                .bind(id.hyphenated())
                .fetch_optional(conn)
                .await?
        }
        TenantRef::Slug(slug) => {
            sqlx::query("SELECT * FROM tenants WHERE slug = ?")
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

async fn find_bot(conn: &mut SqliteConnection, bot: &BotRef) -> StoreResult<Bot> {
    let row = match bot {
        BotRef::Id(id) => {
            sqlx::query(concat!(select_bot!(), "WHERE b.id = ?"))
                .bind(id.hyphenated())
                .fetch_optional(conn)
                .await?
        }
        BotRef::Path { tenant, bot } => {
            sqlx::query(concat!(select_bot!(), "WHERE t.slug = ? AND b.name = ?"))
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

async fn count_bots(conn: &mut SqliteConnection, tenant: &Tenant) -> StoreResult<u64> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM bots WHERE tenant_id = ?")
        .bind(tenant.id.hyphenated())
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

fn flow_version_from_row(row: &SqliteRow, active: Option<u32>) -> StoreResult<StoredFlowVersion> {
    let version = version_of(row.try_get("version")?).unwrap_or(0);
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
    conn: &mut SqliteConnection,
    bot: &Bot,
    version: Option<u32>,
) -> StoreResult<StoredFlowVersion> {
    let Some(wanted) = version.or(bot.flow_version) else {
        return Err(flow_version_not_found(bot, None));
    };
    let row = sqlx::query(
        "SELECT version, format, source, document, created_at FROM flow_versions WHERE bot_id = ? AND version = ?",
    )
    .bind(bot.id.hyphenated())
    .bind(i64::from(wanted))
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => flow_version_from_row(&row, bot.flow_version),
        None => Err(flow_version_not_found(bot, Some(wanted))),
    }
}

async fn set_active_flow_version(
    conn: &mut SqliteConnection,
    bot: &Bot,
    version: u32,
) -> StoreResult<()> {
    sqlx::query("UPDATE bots SET active_flow_version = ?, updated_at = ? WHERE id = ?")
        .bind(i64::from(version))
        .bind(now())
        .bind(bot.id.hyphenated())
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
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
        // `close` returns once every connection is closed: only then may the lock go.
        self.pool.close().await;
        if let Some(file) = &self.file {
            file.release();
        }
    }

    async fn health(&self) -> StoreHealth {
        let degraded = |reason: String| StoreHealth::Degraded { reason };
        if let Err(err) = self.check_file() {
            return degraded(err.to_string());
        }
        if let Err(err) = self.ping().await {
            return degraded(format!("the database is not answering: {err}"));
        }
        // An idle daemon makes no writes: after a failure, probe so that health turns
        // back to ok once the disk has room again, without waiting for traffic.
        if self.health.failing().is_some()
            && let Err(err) = self.probe_write().await
            && !err.is_unavailable()
        {
            return degraded(format!("database writes failing: {err}"));
        }
        self.health.failing().map_or(StoreHealth::Ok, degraded)
    }

    fn fatal(&self) -> tokio_util::sync::CancellationToken {
        self.file
            .as_ref()
            .map_or_else(tokio_util::sync::CancellationToken::new, |file| {
                file.fatal()
            })
    }

    async fn create_tenant(&self, req: &CreateTenant) -> StoreResult<Tenant> {
        let tenant = new_tenant(req);
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.id.hyphenated())
        .bind(&tenant.slug)
        .bind(&tenant.name)
        .bind(tenant.status.as_str())
        .bind(tenant.created_at)
        .bind(tenant.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|err| conflict(err, &tenant.slug, None))?;
        tx.commit().await?;
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
        find_tenant(&mut conn, tenant).await
    }

    async fn update_tenant(
        &self,
        tenant: &TenantRef,
        changes: &UpdateTenant,
    ) -> StoreResult<Tenant> {
        let mut tx = self.write().await?;
        let mut record = find_tenant(&mut tx, tenant).await?;
        apply_tenant_update(&mut record, changes);
        sqlx::query("UPDATE tenants SET name = ?, status = ?, updated_at = ? WHERE id = ?")
            .bind(&record.name)
            .bind(record.status.as_str())
            .bind(record.updated_at)
            .bind(record.id.hyphenated())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_tenant(&self, tenant: &TenantRef, force: bool) -> StoreResult<(Tenant, u64)> {
        let mut tx = self.write().await?;
        let record = find_tenant(&mut tx, tenant).await?;
        let bots = count_bots(&mut tx, &record).await?;
        if bots > 0 && !force {
            return Err(has_bots(&record.slug, bots));
        }
        // Bots go with the tenant through ON DELETE CASCADE.
        sqlx::query("DELETE FROM tenants WHERE id = ?")
            .bind(record.id.hyphenated())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((record, bots))
    }

    async fn create_bot(&self, tenant: &TenantRef, req: &CreateBot) -> StoreResult<Bot> {
        let mut tx = self.write().await?;
        let owner = find_tenant(&mut tx, tenant).await?;
        let bot = new_bot(&owner, req);
        sqlx::query(
            "INSERT INTO bots (id, tenant_id, name, phone, timezone, status, settings, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(bot.id.hyphenated())
        .bind(owner.id.hyphenated())
        .bind(&bot.name)
        .bind(&bot.phone)
        .bind(&bot.timezone)
        .bind(bot.status.as_str())
        .bind(Json(&bot.settings))
        .bind(bot.created_at)
        .bind(bot.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|err| conflict(err, &owner.slug, Some((&bot.name, bot.phone.as_deref()))))?;
        tx.commit().await?;
        Ok(bot)
    }

    async fn list_bots(&self, tenant: Option<&TenantRef>) -> StoreResult<Vec<Bot>> {
        let mut conn = self.pool.acquire().await?;
        let rows = match tenant {
            Some(tenant) => {
                let owner = find_tenant(&mut conn, tenant).await?;
                sqlx::query(concat!(
                    select_bot!(),
                    "WHERE b.tenant_id = ? ORDER BY b.name"
                ))
                .bind(owner.id.hyphenated())
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
        find_bot(&mut conn, bot).await
    }

    async fn update_bot(&self, bot: &BotRef, changes: &UpdateBot) -> StoreResult<Bot> {
        let mut tx = self.write().await?;
        let mut record = find_bot(&mut tx, bot).await?;
        apply_bot_update(&mut record, changes);
        sqlx::query(
            "UPDATE bots SET name = ?, phone = ?, timezone = ?, status = ?, settings = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&record.name)
        .bind(&record.phone)
        .bind(&record.timezone)
        .bind(record.status.as_str())
        .bind(Json(&record.settings))
        .bind(record.updated_at)
        .bind(record.id.hyphenated())
        .execute(&mut *tx)
        .await
        .map_err(|err| {
            conflict(err, &record.tenant, Some((&record.name, record.phone.as_deref())))
        })?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_bot(&self, bot: &BotRef) -> StoreResult<Bot> {
        let mut tx = self.write().await?;
        let record = find_bot(&mut tx, bot).await?;
        sqlx::query("DELETE FROM bots WHERE id = ?")
            .bind(record.id.hyphenated())
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
        let mut tx = self.write().await?;
        let record = find_bot(&mut tx, bot).await?;
        let next: i64 = sqlx::query_scalar(
            "UPDATE bots SET last_flow_version = last_flow_version + 1 WHERE id = ? RETURNING last_flow_version",
        )
        .bind(record.id.hyphenated())
        .fetch_one(&mut *tx)
        .await?;
        let version = version_of(Some(next)).unwrap_or(0);
        let created_at = now();
        sqlx::query(
            "INSERT INTO flow_versions (id, bot_id, version, format, source, document, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(uuid::Uuid::now_v7().hyphenated())
        .bind(record.id.hyphenated())
        .bind(i64::from(version))
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
        let record = find_bot(&mut conn, bot).await?;
        let rows = sqlx::query(
            "SELECT version, format, source, document, created_at FROM flow_versions WHERE bot_id = ? ORDER BY version",
        )
        .bind(record.id.hyphenated())
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
        let record = find_bot(&mut conn, bot).await?;
        find_flow_version(&mut conn, &record, version).await
    }

    async fn activate_flow_version(
        &self,
        bot: &BotRef,
        version: u32,
    ) -> StoreResult<StoredFlowVersion> {
        let mut tx = self.write().await?;
        let record = find_bot(&mut tx, bot).await?;
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
        let mut tx = self.write().await?;
        let record = find_bot(&mut tx, bot).await?;
        if record.flow_version == Some(version) {
            return Err(active_version_conflict(&record, version));
        }
        let found = find_flow_version(&mut tx, &record, Some(version)).await?;
        sqlx::query("DELETE FROM flow_versions WHERE bot_id = ? AND version = ?")
            .bind(record.id.hyphenated())
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(found)
    }
}
