//! The production backend: PostgreSQL through a connection pool. Migrations are an explicit
//! operator step (`dashd migrate`); start-up refuses a schema that does not match. The
//! statements are shared with SQLite (see [`super::sql`]); this module connects, checks
//! or applies migrations and probes health. Writes lock the rows they read (`FOR UPDATE`,
//! through [`super::sql::Sql::locking`]) so concurrent updates never lose each other.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{
    MigrationPolicy, MigrationRecord, SchemaState, StoreError, StoreHealth, StoreResult,
    compare_schema, schema_error,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Connects to `url` (`postgres://...`).
pub(crate) async fn open(url: &str, max_connections: u32) -> StoreResult<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await?)
}

/// Applies or checks migrations according to `policy`.
pub(crate) async fn prepare(pool: &PgPool, policy: MigrationPolicy) -> StoreResult<()> {
    // Compare first, so a newer or damaged schema gets its own message.
    let state = compare_schema(&embedded(), &applied(pool).await?);
    match (&state, policy) {
        // The migrator holds an advisory lock, so two `dashd migrate` never race.
        (_, MigrationPolicy::Inspect) => Ok(()),
        (SchemaState::Behind { .. }, MigrationPolicy::Apply) => Ok(MIGRATOR.run(pool).await?),
        _ => schema_error(&state).map_or(Ok(()), Err),
    }
}

/// The latest applied migration.
pub(crate) async fn schema_version(pool: &PgPool) -> StoreResult<i64> {
    Ok(applied(pool)
        .await?
        .iter()
        .map(|(v, _, _)| *v)
        .max()
        .unwrap_or(0))
}

pub(crate) async fn applied(pool: &PgPool) -> StoreResult<Vec<MigrationRecord>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = sqlx::query("SELECT version, checksum, success FROM _sqlx_migrations")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect()
}

/// A ping, then a write of no consequence: a transaction that takes a transaction id and
/// commits, which writes a commit record to the WAL, so a server that cannot write (full
/// disk, read-only) shows as degraded, with its reason.
pub(crate) async fn health(pool: &PgPool) -> StoreHealth {
    if let Err(err) = sqlx::query("SELECT 1").execute(pool).await {
        return StoreHealth::Degraded {
            reason: format!(
                "the database is not answering: {}",
                StoreError::Database(err)
            ),
        };
    }
    let probe = async {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<(), sqlx::Error>(())
    };
    match probe.await {
        Ok(()) => StoreHealth::Ok,
        Err(err) => StoreHealth::Degraded {
            reason: format!("database writes failing: {}", StoreError::Database(err)),
        },
    }
}

fn embedded() -> Vec<(i64, Vec<u8>)> {
    MIGRATOR
        .iter()
        .map(|m| (m.version, m.checksum.to_vec()))
        .collect()
}

/// This binary's migrations, as (version, description, checksum).
pub(crate) fn migrations() -> Vec<(i64, String, Vec<u8>)> {
    MIGRATOR
        .iter()
        .map(|m| (m.version, m.description.to_string(), m.checksum.to_vec()))
        .collect()
}
