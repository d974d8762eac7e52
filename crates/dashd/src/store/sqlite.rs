//! The embedded backend: one SQLite file in WAL mode. Writes run in `BEGIN IMMEDIATE`
//! transactions on one queued writer, so that a read-then-write never fails half-way on
//! a lock upgrade. The statements themselves are shared with PostgreSQL (see
//! [`super::sql`]); this module opens the file, runs its migrations, and owns the write
//! transaction and the health of writes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use super::sqlite_file::{self, DatabaseFile};
use super::{
    MigrationPolicy, MigrationRecord, SchemaState, StoreError, StoreHealth, StoreResult,
    WriteHealth, compare_schema, schema_error,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// A SQLite database file.
#[derive(Debug, Clone)]
pub(crate) struct SqliteDb {
    /// Reads.
    pool: SqlitePool,
    /// The one connection writes run on. SQLite empties a connection's page cache
    /// whenever another connection wrote since its last transaction: writes that took
    /// turns on the read connections found a cold cache every time and read their
    /// index pages back from the file. The writer's own cache stays warm, and so do
    /// its prepared statements. (An in-memory database has one pool for both.)
    writes: SqlitePool,
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
pub(crate) struct SqliteTx {
    /// `Some` until `drop`; `commit` marks the transaction finished instead of taking it.
    conn: Option<PoolConnection<sqlx::Sqlite>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    health: Arc<WriteHealth>,
    /// True once `COMMIT` succeeded; otherwise `drop` rolls back.
    finished: bool,
}

impl SqliteTx {
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

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn()
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn_mut()
    }
}

impl Drop for SqliteTx {
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

impl SqliteDb {
    /// Opens (creating if missing) the database `options` name, holding an exclusive
    /// lock on its file for as long as the pool lives.
    pub async fn open(
        options: SqliteConnectOptions,
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
            .connect_with(options.clone())
            .await?;
        let writes = match &file {
            Some(_) => {
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await?
            }
            None => pool.clone(),
        };
        if let Some(file) = &file {
            DatabaseFile::watch(file);
        }
        Ok(Self {
            pool,
            writes,
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
            (_, MigrationPolicy::Inspect) => Ok(()),
            (SchemaState::Behind { .. }, MigrationPolicy::Apply) => {
                Ok(MIGRATOR.run(&self.pool).await?)
            }
            _ => schema_error(&state).map_or(Ok(()), Err),
        }
    }

    pub(crate) async fn applied(&self) -> StoreResult<Vec<MigrationRecord>> {
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

    pub(crate) async fn write(&self) -> StoreResult<SqliteTx> {
        self.check_file()?;
        let turn = self.writer.clone().lock_owned().await;
        let conn = self.writes.acquire().await.inspect_err(|err| {
            self.health.failed(err);
        })?;
        let mut tx = SqliteTx {
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

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) async fn schema_version(&self) -> StoreResult<i64> {
        Ok(self
            .applied()
            .await?
            .iter()
            .map(|(v, _, _)| *v)
            .max()
            .unwrap_or(0))
    }

    pub(crate) async fn close(&self) {
        // `close` returns once every connection is closed: only then may the lock go.
        self.writes.close().await;
        self.pool.close().await;
        if let Some(file) = &self.file {
            file.release();
        }
    }

    pub(crate) async fn health(&self) -> StoreHealth {
        let degraded = |reason: String| StoreHealth::Degraded { reason };
        if let Err(err) = self.check_file() {
            return degraded(err.to_string());
        }
        if let Err(err) = sqlx::query("SELECT 1").execute(&self.pool).await {
            return degraded(format!(
                "the database is not answering: {}",
                StoreError::Database(err)
            ));
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

    pub(crate) fn fatal(&self) -> tokio_util::sync::CancellationToken {
        self.file
            .as_ref()
            .map_or_else(tokio_util::sync::CancellationToken::new, |file| {
                file.fatal()
            })
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

/// The migrations applied to the database file at `path`, read through a read-only
/// connection of its own, without dashd's lock: a running daemon is not disturbed.
pub(crate) fn applied_in_file(path: &std::path::Path) -> StoreResult<Vec<MigrationRecord>> {
    let unreadable = |err: rusqlite::Error| {
        StoreError::Unavailable(format!("cannot read {}: {err}", path.display()))
    };
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(unreadable)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(unreadable)?;
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |row| row.get(0),
        )
        .map_err(unreadable)?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut statement = conn
        .prepare("SELECT version, checksum, success FROM _sqlx_migrations")
        .map_err(unreadable)?;
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .map_err(unreadable)?;
    rows.collect::<Result<_, _>>().map_err(unreadable)
}

/// This binary's migrations, as (version, description, checksum).
pub(crate) fn migrations() -> Vec<(i64, String, Vec<u8>)> {
    MIGRATOR
        .iter()
        .map(|m| (m.version, m.description.to_string(), m.checksum.to_vec()))
        .collect()
}
