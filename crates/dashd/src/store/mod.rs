//! Storage: one implementation, [`SqlStore`], over either backend (SQLite for the
//! embedded default, PostgreSQL for production), chosen once at start-up from the
//! database URL's scheme. Its SQL is written once (see [`sql`]); the interface is split
//! by aggregate into one trait per file ([`tenants`], [`flows`], [`inbound`],
//! [`conversations`], [`outbox`], [`timers`], [`contacts`], [`providers`], [`sessions`],
//! [`sandbox`], [`users`], [`commerce`], [`events`]), gathered by [`Store`]. Each backend has its own migrations under
//! `migrations/<backend>/`; both pass the same conformance suite (`tests/store.rs`).

pub mod commerce;
pub mod contacts;
pub mod conversations;
pub mod events;
pub mod flows;
pub mod inbound;
pub mod outbox;
mod postgres;
pub mod providers;
pub mod sandbox;
pub mod sessions;
mod sql;
mod sqlite;
mod sqlite_file;
pub mod tenants;
pub mod timers;
pub mod users;

use async_trait::async_trait;
use dash_core::config::{Backend, Config};
use uuid::Uuid;

pub use flows::{NewFlowVersion, StoredFlowVersion};

/// Everything that can go wrong in storage, in terms the API can map to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist (`what` names it as the user would: `tenant acme`).
    #[error("{what} not found")]
    NotFound { what: String },
    /// A uniqueness or dependency rule refused the change.
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<&'static str>,
    },
    /// The database schema does not match this binary.
    #[error("{0}")]
    Schema(String),
    /// Shown once, without sqlx's internals (not chained as a source on purpose: the
    /// message already says it all).
    #[error("{}", describe_sqlx(.0))]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The store refuses work it cannot do safely (its database file was replaced or
    /// deleted under it); the message says what happened.
    #[error("{0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Database(err)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(err)
    }
}

impl StoreError {
    /// True when the database cannot serve the request for now (unreachable, out of
    /// disk or resources, shutting down, its file gone) rather than the request wrong:
    /// the API answers 503 and the client retries later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(err) => sqlx_unavailable(err),
            StoreError::Unavailable(_) => true,
            _ => false,
        }
    }
}

/// Whether a driver error means "the database cannot work now" (see
/// [`StoreError::is_unavailable`]).
pub(crate) fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => database_unavailable(db.as_ref()),
        _ => false,
    }
}

/// Classifies an error the database server or library reported by its code.
fn database_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLite reports extended result codes; the low byte is the primary code.
        code.parse::<i32>()
            .is_ok_and(|code| SQLITE_UNAVAILABLE.contains(&(code & 0xff)))
    } else {
        // PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient resources
        // (53100 disk full, 53200 out of memory, 53300 too many connections), and the
        // 57P0x operator interventions (shutdown, crash, cannot connect now).
        code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0")
    }
}

/// Primary SQLite result codes that say the database cannot work now, rather than
/// that the statement is wrong: BUSY (5, locked past the busy timeout), READONLY (8,
/// including a database file moved or deleted under the connection), IOERR (10),
/// FULL (13, disk or quota full) and CANTOPEN (14).
const SQLITE_UNAVAILABLE: [i32; 5] = [5, 8, 10, 13, 14];

/// How the store's database is doing, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Reads and writes work.
    Ok,
    /// The database cannot do its work; the reason is for an operator.
    Degraded { reason: String },
}

impl StoreHealth {
    /// The reason when degraded.
    pub fn reason(&self) -> Option<&str> {
        match self {
            StoreHealth::Ok => None,
            StoreHealth::Degraded { reason } => Some(reason),
        }
    }
}

/// The outcome of the latest write, shared by a store's handles: set when a write fails
/// because the database cannot work (disk full, I/O error), cleared by the next write
/// that succeeds.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    failure: std::sync::Mutex<Option<WriteFailure>>,
}

#[derive(Debug, Clone)]
struct WriteFailure {
    reason: String,
    since: chrono::DateTime<chrono::Utc>,
}

impl WriteHealth {
    /// Records a failed write if `err` says the database cannot work; other errors (a
    /// constraint, a bad statement) say nothing about the database's health.
    pub(crate) fn failed(&self, err: &sqlx::Error) {
        if sqlx_unavailable(err) {
            let reason = match err {
                sqlx::Error::Database(db) => db.message().to_owned(),
                other => describe_sqlx(other),
            };
            self.failed_because(reason);
        }
    }

    /// Records a failed write with its reason. The first failure of a run gives the time.
    pub(crate) fn failed_because(&self, reason: String) {
        let mut failure = self.lock();
        match failure.as_mut() {
            Some(failure) => failure.reason = reason,
            None => {
                tracing::warn!(reason = %reason, "database writes failing");
                *failure = Some(WriteFailure {
                    reason,
                    since: chrono::Utc::now(),
                });
            }
        }
    }

    /// Records a write that went through.
    pub(crate) fn succeeded(&self) {
        if self.lock().take().is_some() {
            tracing::info!("database writes work again");
        }
    }

    /// Why writes are failing, if the latest one did.
    pub(crate) fn failing(&self) -> Option<String> {
        self.lock().as_ref().map(|failure| {
            format!(
                "database writes failing: {} (since {})",
                failure.reason,
                failure.since.format("%Y-%m-%d %H:%M:%S UTC")
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<WriteFailure>> {
        // A panic while holding this lock cannot leave the Option half-written.
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn describe_sqlx(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => format!("database error: {}", db.message()),
        sqlx::Error::PoolTimedOut => {
            "timed out waiting for a database connection (is the server up and reachable?)".into()
        }
        sqlx::Error::Io(io) => format!("cannot reach the database: {io}"),
        other => format!("database error: {other}"),
    }
}

/// Result alias for storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Whose records a call may read or change: one tenant's, or every tenant's (the
/// operator on the admin socket, platform admins). Every store call made for a REST API
/// caller takes one and filters by it in SQL, so a handler cannot forget it; another
/// tenant's record is then simply not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantScope {
    All,
    Tenant(Uuid),
}

impl TenantScope {
    /// The tenant to filter by (bound as `$n IS NULL OR tenant_id = $n`); `None` for all.
    pub fn tenant(self) -> Option<Uuid> {
        match self {
            TenantScope::All => None,
            TenantScope::Tenant(id) => Some(id),
        }
    }
}

/// A tenant named by slug or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRef {
    Id(Uuid),
    Slug(String),
}

impl TenantRef {
    /// A UUID is an id; anything else is a slug.
    pub fn parse(value: &str) -> Self {
        match Uuid::parse_str(value) {
            Ok(id) => TenantRef::Id(id),
            Err(_) => TenantRef::Slug(value.to_owned()),
        }
    }

    fn not_found(&self) -> StoreError {
        StoreError::NotFound {
            what: format!("tenant {self}"),
        }
    }
}

impl std::fmt::Display for TenantRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantRef::Id(id) => write!(f, "{id}"),
            TenantRef::Slug(slug) => write!(f, "{slug}"),
        }
    }
}

/// Everything `dashd` keeps, and the database's own controls. Callers hold an
/// `Arc<dyn Store>`; the aggregate traits' methods are callable on it directly.
#[async_trait]
pub trait Store:
    tenants::TenantStore
    + flows::FlowStore
    + inbound::InboundStore
    + conversations::ConversationStore
    + outbox::OutboxStore
    + timers::TimerStore
    + contacts::ContactStore
    + providers::ProviderStore
    + sessions::SessionStore
    + sandbox::SandboxStore
    + users::AccessStore
    + commerce::CommerceStore
    + events::EventStore
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Where the data lives, with any password removed.
    fn location(&self) -> String;
    /// A cheap round trip proving the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// The latest applied migration.
    async fn schema_version(&self) -> StoreResult<i64>;
    /// How the schema compares with this binary's migrations, and the migrations
    /// `dashd migrate` would apply, as (version, description).
    async fn migration_plan(&self) -> StoreResult<(SchemaState, Vec<(i64, String)>)>;
    /// Closes the pool, waiting for connections to be returned.
    async fn close(&self);
    /// Whether the database can do its work now: it answers, and writes go through
    /// (after a failed write, a backend probes with a tiny write of its own).
    async fn health(&self) -> StoreHealth;
    /// Cancelled when the store hits a fault it cannot recover from (its database file
    /// replaced or deleted): the daemon should stop. Never cancelled on PostgreSQL.
    fn fatal(&self) -> tokio_util::sync::CancellationToken;
}

/// The store: the same statements over either backend's pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: sql::Pool,
    location: String,
    /// Contacts as last read, on SQLite only (see [`contacts::ContactCache`]).
    contacts: std::sync::Arc<contacts::ContactCache>,
}

impl SqlStore {
    /// Opens (creating if missing) the SQLite database `options` name, holding an
    /// exclusive lock on its file for as long as the store lives; `location` is what
    /// status output shows. Call [`SqlStore::prepare`] next.
    pub async fn open_sqlite(
        options: sqlx::sqlite::SqliteConnectOptions,
        location: String,
        max_connections: u32,
        synchronous: dash_core::config::SqliteSynchronous,
    ) -> StoreResult<Self> {
        let db = sqlite::SqliteDb::open(options, max_connections, synchronous).await?;
        Ok(Self {
            pool: sql::Pool::Sqlite(db),
            location,
            contacts: std::sync::Arc::new(contacts::ContactCache::new(true)),
        })
    }

    /// Connects to the PostgreSQL database at `url`. Call [`SqlStore::prepare`] next.
    pub async fn open_postgres(url: &str, max_connections: u32) -> StoreResult<Self> {
        let pool = postgres::open(url, max_connections).await?;
        Ok(Self {
            pool: sql::Pool::Postgres(pool),
            location: dash_core::config::redact_url(url),
            contacts: std::sync::Arc::new(contacts::ContactCache::new(false)),
        })
    }

    /// Applies or checks migrations according to `policy`.
    pub async fn prepare(&self, policy: MigrationPolicy) -> StoreResult<()> {
        match &self.pool {
            sql::Pool::Sqlite(db) => db.prepare(policy).await,
            sql::Pool::Postgres(pool) => postgres::prepare(pool, policy).await,
        }
    }

    /// Begins a write transaction.
    async fn write(&self) -> StoreResult<sql::Tx> {
        self.pool.write().await
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.pool.backend()
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn ping(&self) -> StoreResult<()> {
        sql::sql("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        match &self.pool {
            sql::Pool::Sqlite(db) => db.schema_version().await,
            sql::Pool::Postgres(pool) => postgres::schema_version(pool).await,
        }
    }

    async fn migration_plan(&self) -> StoreResult<(SchemaState, Vec<(i64, String)>)> {
        Ok(match &self.pool {
            sql::Pool::Sqlite(db) => plan(sqlite::migrations(), &db.applied().await?),
            sql::Pool::Postgres(pool) => {
                plan(postgres::migrations(), &postgres::applied(pool).await?)
            }
        })
    }

    async fn close(&self) {
        match &self.pool {
            sql::Pool::Sqlite(db) => db.close().await,
            sql::Pool::Postgres(pool) => pool.close().await,
        }
    }

    async fn health(&self) -> StoreHealth {
        match &self.pool {
            sql::Pool::Sqlite(db) => db.health().await,
            sql::Pool::Postgres(pool) => postgres::health(pool).await,
        }
    }

    fn fatal(&self) -> tokio_util::sync::CancellationToken {
        match &self.pool {
            sql::Pool::Sqlite(db) => db.fatal(),
            sql::Pool::Postgres(_) => tokio_util::sync::CancellationToken::new(),
        }
    }
}

/// Whether migrations are applied when the store opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPolicy {
    /// Apply pending migrations (the embedded SQLite default, and `dashd migrate`).
    Apply,
    /// Refuse to open a database whose schema is not exactly what this binary expects
    /// (PostgreSQL at start-up: migrations are an explicit operator step).
    Require,
    /// Neither check nor change the schema (`dashd migrate --dry-run` reports it).
    Inspect,
}

/// The schema state and the migrations not applied yet, as (version, description).
fn plan(
    all: Vec<(i64, String, Vec<u8>)>,
    applied: &[MigrationRecord],
) -> (SchemaState, Vec<(i64, String)>) {
    let embedded: Vec<(i64, Vec<u8>)> = all.iter().map(|(v, _, c)| (*v, c.clone())).collect();
    let state = compare_schema(&embedded, applied);
    let pending = all
        .into_iter()
        .filter(|(v, _, _)| !applied.iter().any(|(a, _, _)| a == v))
        .map(|(v, description, _)| (v, description))
        .collect();
    (state, pending)
}

/// What `dashd migrate` would do to the configured database (`dashd migrate --dry-run`).
#[derive(Debug)]
pub struct MigrationPlan {
    /// The database, with any password removed.
    pub location: String,
    /// `None`: the SQLite file does not exist yet.
    pub state: Option<SchemaState>,
    /// The migrations to apply, as (version, description).
    pub pending: Vec<(i64, String)>,
}

/// Finds what `dashd migrate` (or, on SQLite, the next start) would apply, changing
/// nothing. The SQLite file is read without the daemon's lock, so this also answers
/// beside a running dashd.
pub async fn migration_plan(config: &Config) -> StoreResult<MigrationPlan> {
    let backend = config
        .backend()
        .map_err(|err| StoreError::Schema(err.to_string()))?;
    let location = dash_core::config::redact_url(&config.database_url());
    if backend == Backend::Sqlite {
        let path = sqlite_path(config)?;
        if !path.exists() {
            let all = sqlite::migrations();
            return Ok(MigrationPlan {
                location: path.display().to_string(),
                state: None,
                pending: all.into_iter().map(|(v, d, _)| (v, d)).collect(),
            });
        }
        let (state, pending) = plan(sqlite::migrations(), &sqlite::applied_in_file(&path)?);
        return Ok(MigrationPlan {
            location,
            state: Some(state),
            pending,
        });
    }
    let store = open(config, Some(MigrationPolicy::Inspect)).await?;
    let found = store.migration_plan().await;
    store.close().await;
    let (state, pending) = found?;
    Ok(MigrationPlan {
        location,
        state: Some(state),
        pending,
    })
}

/// The SQLite database file the configuration names.
pub fn sqlite_path(config: &Config) -> StoreResult<std::path::PathBuf> {
    match &config.database.url {
        None => Ok(config.data_dir.join("dashd.db")),
        Some(url) => {
            let options: sqlx::sqlite::SqliteConnectOptions = url.expose().parse()?;
            Ok(options.get_filename().to_owned())
        }
    }
}

/// The latest migration this binary carries (the same numbering on both backends).
pub fn latest_migration() -> i64 {
    sqlite::migrations()
        .iter()
        .map(|(v, _, _)| *v)
        .max()
        .unwrap_or(0)
}

/// Opens the backend the configuration selects.
pub async fn open(config: &Config, policy: Option<MigrationPolicy>) -> StoreResult<Box<dyn Store>> {
    let url = config.database_url();
    let max = config.database.max_connections;
    let backend = config
        .backend()
        .map_err(|err| StoreError::Schema(err.to_string()))?;
    let (store, default_policy) = match backend {
        Backend::Sqlite => {
            // The default file is opened by path, so any character in data_dir is fine.
            let options = match &config.database.url {
                Some(url) => url.expose().parse()?,
                None => sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(config.data_dir.join("dashd.db")),
            };
            let location = dash_core::config::redact_url(&url);
            let store =
                SqlStore::open_sqlite(options, location, max, config.database.sqlite_synchronous)
                    .await?;
            (store, MigrationPolicy::Apply)
        }
        Backend::Postgres => (
            SqlStore::open_postgres(&url, max).await?,
            MigrationPolicy::Require,
        ),
    };
    store.prepare(policy.unwrap_or(default_policy)).await?;
    Ok(Box::new(store))
}

/// How the database's schema compares with the migrations compiled into this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    UpToDate {
        version: i64,
    },
    /// Migrations this binary has are not applied (an empty database included).
    Behind {
        current: i64,
        expected: i64,
    },
    /// The database has migrations this binary does not know: a newer dashd wrote it.
    Ahead {
        current: i64,
        expected: i64,
    },
    /// An applied migration differs from the binary's copy, or failed half-way.
    Damaged {
        version: i64,
        reason: &'static str,
    },
}

/// One migration, as (version, checksum, succeeded).
pub type MigrationRecord = (i64, Vec<u8>, bool);

/// Compares embedded migrations with applied ones. Pure, so it is tested on its own.
pub fn compare_schema(embedded: &[(i64, Vec<u8>)], applied: &[MigrationRecord]) -> SchemaState {
    let expected = embedded.iter().map(|(v, _)| *v).max().unwrap_or(0);
    let current = applied.iter().map(|(v, _, _)| *v).max().unwrap_or(0);
    for (version, checksum, success) in applied {
        if !success {
            return SchemaState::Damaged {
                version: *version,
                reason: "a migration failed half-way",
            };
        }
        match embedded.iter().find(|(v, _)| v == version) {
            None => return SchemaState::Ahead { current, expected },
            Some((_, known)) if known != checksum => {
                return SchemaState::Damaged {
                    version: *version,
                    reason: "the applied migration differs from this binary's copy",
                };
            }
            Some(_) => {}
        }
    }
    if embedded
        .iter()
        .any(|(v, _)| !applied.iter().any(|(a, _, _)| a == v))
    {
        SchemaState::Behind { current, expected }
    } else {
        SchemaState::UpToDate { version: current }
    }
}

/// Turns a schema mismatch into the message an operator needs.
fn schema_error(state: &SchemaState) -> Option<StoreError> {
    let message = match state {
        SchemaState::UpToDate { .. } => return None,
        SchemaState::Behind { current, expected } => format!(
            "the database schema is at version {current} and this dashd needs version {expected}: run `dashd migrate` (same --config) and start again"
        ),
        SchemaState::Ahead { current, expected } => format!(
            "the database schema is at version {current}, newer than this dashd understands (version {expected}): upgrade dashd"
        ),
        SchemaState::Damaged { version, reason } => format!(
            "migration {version} is damaged ({reason}): restore the database from a backup or repair the migration history"
        ),
    };
    Some(StoreError::Schema(message))
}

/// The current time, truncated to microseconds so that every backend stores and returns
/// exactly the same value (PostgreSQL keeps microseconds).
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    let now = chrono::Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}

pub(crate) fn parse_status<T: std::str::FromStr>(value: &str) -> StoreResult<T> {
    value
        .parse()
        .map_err(|_| StoreError::Schema(format!("unknown status {value:?} in the database")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(v: &[i64]) -> Vec<(i64, Vec<u8>)> {
        v.iter().map(|v| (*v, vec![*v as u8])).collect()
    }

    #[test]
    fn schema_comparison_covers_every_case() {
        let embedded = emb(&[1, 2]);
        assert_eq!(
            compare_schema(&embedded, &[(1, vec![1], true), (2, vec![2], true)]),
            SchemaState::UpToDate { version: 2 }
        );
        assert_eq!(
            compare_schema(&embedded, &[]),
            SchemaState::Behind {
                current: 0,
                expected: 2
            }
        );
        assert_eq!(
            compare_schema(&embedded, &[(1, vec![1], true)]),
            SchemaState::Behind {
                current: 1,
                expected: 2
            }
        );
        assert_eq!(
            compare_schema(
                &embedded,
                &[(1, vec![1], true), (2, vec![2], true), (3, vec![3], true)]
            ),
            SchemaState::Ahead {
                current: 3,
                expected: 2
            }
        );
        assert!(matches!(
            compare_schema(&embedded, &[(1, vec![9], true)]),
            SchemaState::Damaged { version: 1, .. }
        ));
        assert!(matches!(
            compare_schema(&embedded, &[(1, vec![1], false)]),
            SchemaState::Damaged { version: 1, .. }
        ));
        let msg = schema_error(&SchemaState::Behind {
            current: 0,
            expected: 2,
        })
        .unwrap()
        .to_string();
        assert!(msg.contains("dashd migrate"), "{msg}");
    }

    #[test]
    fn write_health_remembers_the_first_failure_until_a_success() {
        let health = WriteHealth::default();
        assert_eq!(health.failing(), None);
        // A wrong request says nothing about the database.
        health.failed(&sqlx::Error::RowNotFound);
        assert_eq!(health.failing(), None);
        health.failed(&sqlx::Error::PoolTimedOut);
        let first = health.failing().unwrap();
        assert!(
            first.starts_with("database writes failing: timed out"),
            "{first}"
        );
        health.failed_because("database or disk is full".into());
        let second = health.failing().unwrap();
        assert!(second.contains("database or disk is full"), "{second}");
        // The time is that of the first failure of the run.
        assert_eq!(
            first.rsplit_once("(since").unwrap().1,
            second.rsplit_once("(since").unwrap().1
        );
        health.succeeded();
        assert_eq!(health.failing(), None);
    }

    #[test]
    fn tenant_refs_tell_ids_from_slugs() {
        let id = Uuid::new_v4();
        assert_eq!(TenantRef::parse(&id.to_string()), TenantRef::Id(id));
        assert_eq!(TenantRef::parse("acme"), TenantRef::Slug("acme".into()));
    }
}
