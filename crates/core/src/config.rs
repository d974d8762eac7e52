//! The configuration schema of `dashd`: one typed struct with every key, its default and
//! its rules. Loading it (defaults → file → `DASHD_*` environment → flags) is I/O and
//! lives in `dashd`; `config.example.toml` at the repository root documents every key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

/// Keys that hold secrets. Each can also be given as `<key>_file`, naming a file whose
/// contents (without the trailing newline) are the value; `Debug` and `check-config`
/// never show them in clear.
pub const SECRET_KEYS: &[&str] = &["database.url", "api.jwt_secret"];

/// Everything `dashd` can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded database, the admin socket and other state live.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub pipeline: PipelineConfig,
    pub dispatcher: DispatcherConfig,
    pub sandbox: SandboxConfig,
    pub secrets: SecretsConfig,
    pub providers: ProvidersConfig,
    pub api: ApiConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./dashd-data"),
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            pipeline: PipelineConfig::default(),
            dispatcher: DispatcherConfig::default(),
            sandbox: SandboxConfig::default(),
            secrets: SecretsConfig::default(),
            providers: ProvidersConfig::default(),
            api: ApiConfig::default(),
        }
    }
}

/// The inbound pipeline: conversation workers and flow effects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Conversations handled at once (one contact's messages are always handled in
    /// order, different contacts in parallel); one tenant's at most half of them.
    pub workers: u32,
    /// Let flow `http` actions reach loopback and private networks (off: only public
    /// addresses, so a flow cannot probe the server's own network).
    pub allow_private_http: bool,
    /// Attempts at handling one inbound message (or firing one timer, or applying one
    /// HTTP result) before it is marked `failed` and skipped; the conversation goes on.
    pub max_attempts: u32,
    /// Delay before the second attempt; it doubles per attempt (with jitter).
    pub retry_base_ms: u64,
    /// Work in the pipeline, all bots together: inbound messages accepted but not
    /// handled yet plus their replies not sent yet; past it, intake answers 503 with
    /// `Retry-After` (providers and bridges retry).
    pub max_backlog: u32,
    /// The same bound per bot, so one flooded bot cannot take the whole backlog.
    pub max_backlog_per_bot: u32,
    /// Memory for compiled flows kept between messages (least recently used dropped
    /// first), in MiB.
    pub flow_cache_mb: u32,
    /// Messages one inbound message (or timer) may cause a flow to send.
    pub max_messages_per_event: u32,
    /// HTTP requests one inbound message may cause a flow to make.
    pub max_http_per_event: u32,
    /// Flow steps one inbound message may run before the flow waits for the customer.
    pub max_steps_per_event: u32,
    /// Where flow steps run: `process` (supervised worker processes with a memory limit,
    /// killed at the deadline) or `thread` (inside dashd: the deadline only stops
    /// waiting, and memory is not bounded).
    pub flow_isolation: FlowIsolation,
    /// Flow worker processes; 0 means one per CPU (at least 2). One tenant uses at most
    /// half of them at once.
    pub flow_workers: u32,
    /// Address-space limit of each flow worker, in MiB.
    pub flow_memory_mb: u64,
    /// Wall-clock limit of one flow step (one message, timer or HTTP result), in ms.
    pub flow_step_timeout_ms: u64,
    /// The dashd executable flow workers start from; unset means the running dashd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_worker_exe: Option<PathBuf>,
}

/// Where flow steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowIsolation {
    /// Supervised worker processes (memory limit, killed at the deadline).
    #[default]
    Process,
    /// Threads inside dashd (the deadline only stops waiting; memory unbounded).
    Thread,
}

impl PipelineConfig {
    /// The fan-out caps the flow engine enforces, at import and at run time.
    pub fn flow_limits(&self) -> crate::flow::Limits {
        crate::flow::Limits {
            max_messages: self.max_messages_per_event,
            max_http: self.max_http_per_event,
            max_steps: self.max_steps_per_event,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            workers: 32,
            allow_private_http: false,
            max_attempts: 3,
            retry_base_ms: 1000,
            max_backlog: 2000,
            max_backlog_per_bot: 500,
            flow_cache_mb: 64,
            max_messages_per_event: 20,
            max_http_per_event: 5,
            max_steps_per_event: 256,
            flow_isolation: FlowIsolation::Process,
            flow_workers: 0,
            flow_memory_mb: 256,
            flow_step_timeout_ms: 2000,
            flow_worker_exe: None,
        }
    }
}

/// The outbox dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Messages per minute per bot, unless the bot's settings say
    /// `rate_limit_per_minute`.
    pub bot_rate_per_minute: u32,
    /// Messages per minute per tenant, all its bots together; 0 means no tenant limit.
    pub tenant_rate_per_minute: u32,
    /// Sends in flight at once.
    pub concurrency: u32,
    /// Sends in flight at once through one provider for one bot (a share of
    /// `concurrency`, so one bot's burst or one slow provider cannot take every slot).
    pub provider_concurrency: u32,
    /// Attempts before a message is `dead`.
    pub max_attempts: u32,
    /// First retry delay; it doubles per attempt (with jitter) up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How long a claimed entry belongs to the dispatcher that claimed it. An entry still
    /// `processing` after its lease (its dashd died, or could not record the outcome) is
    /// taken back and sent again. Longer than any provider call may take.
    pub lease_ms: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            bot_rate_per_minute: 60,
            tenant_rate_per_minute: 0,
            concurrency: 32,
            provider_concurrency: 16,
            max_attempts: 8,
            retry_base_ms: 1000,
            retry_max_ms: 300_000,
            lease_ms: 120_000,
        }
    }
}

/// The sandbox provider (local inbox for trying bots).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Pretend network latency per send, in milliseconds (for trying timeouts and load).
    pub send_delay_ms: u64,
}

/// Encryption of provider secrets at rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// File holding the 32-byte master key (64 hex digits, or base64), e.g. a systemd
    /// credential. Unset: `<data_dir>/master.key`, generated at first start.
    pub master_key_file: Option<PathBuf>,
}

/// Provider webhooks and health probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// Largest webhook body accepted, in bytes (larger: 413).
    pub webhook_max_body_bytes: u64,
    /// Seconds between health probes of every configured provider (0: never).
    pub probe_interval_s: u64,
    /// The public root URL providers reach this dashd at (e.g. https://bots.example.com),
    /// used to print the webhook URLs to configure. Unset: the listen address.
    pub public_url: Option<String>,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        Self {
            webhook_max_body_bytes: 1 << 20,
            probe_interval_s: 60,
            public_url: None,
        }
    }
}

/// The REST API: logins, tokens, limits and browser access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The HS256 key that signs access tokens, at least 32 bytes. A secret (accepts
    /// `jwt_secret_file`). Unset: `<data_dir>/jwt.key`, generated at first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_s: u64,
    /// Lifetime of a login session's refresh token, in seconds (each refresh renews it).
    pub refresh_token_ttl_s: u64,
    /// Whether `POST /api/auth/register` creates a tenant and its owner for anyone.
    pub self_signup: bool,
    /// Requests per minute per tenant, unless the tenant sets its own (429 beyond).
    pub rate_per_minute: u32,
    /// Failed logins allowed per account and per client address in `login_window_s`.
    pub login_attempts: u32,
    pub login_window_s: u64,
    /// Browser origins allowed to call the API (CORS), e.g. `https://panel.example.com`.
    /// Empty: none.
    pub cors_origins: Vec<String>,
    /// Set when dashd is reached through HTTPS (a TLS proxy): answers carry
    /// `Strict-Transport-Security`.
    pub behind_tls: bool,
    /// Client addresses of reverse proxies whose `X-Forwarded-For` is believed (for the
    /// login limit per address). Empty: the connection's own address counts.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Events kept per tenant for `GET /api/v1/events` to replay after `Last-Event-ID`.
    pub events_retained: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl_s: 24 * 3600,
            refresh_token_ttl_s: 30 * 24 * 3600,
            self_signup: false,
            rate_per_minute: 100,
            login_attempts: 5,
            login_window_s: 300,
            cors_origins: Vec::new(),
            behind_tls: false,
            trusted_proxies: Vec::new(),
            events_retained: 10_000,
        }
    }
}

/// The public HTTP listener: REST API, provider webhooks and `/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// How long shutdown waits for in-flight requests before closing them.
    pub shutdown_timeout_s: u64,
    /// Connections served at once on the public listener (lowered at start to fit
    /// RLIMIT_NOFILE minus a reserve for the admin socket and the database).
    pub max_connections: u32,
    /// Time to send a request's line and headers; also ends idle keep-alive connections.
    pub header_timeout_ms: u64,
    /// Time to send a request's body (408 beyond).
    pub body_timeout_ms: u64,
    /// A connection moving no bytes either way for this long is closed.
    pub idle_timeout_ms: u64,
    /// Largest request body on the public listener (413 beyond).
    pub max_body_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3009)),
            shutdown_timeout_s: 10,
            max_connections: 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_body_bytes: 1 << 20,
        }
    }
}

/// The admin API that `dashctl` talks to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket path; unset means `<data_dir>/dashd.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// A Unix group whose members may use the admin socket besides root and the user
    /// `dashd` runs as. Unset: nobody else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Where records live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`; unset means
    /// `sqlite://<data_dir>/dashd.db`. A secret (accepts `url_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Upper bound of the connection pool (SQLite: the reads; writes have one more
    /// connection of their own).
    pub max_connections: u32,
    /// SQLite only: when a commit reaches the disk (SQLite's `synchronous` in WAL mode).
    pub sqlite_synchronous: SqliteSynchronous,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            sqlite_synchronous: SqliteSynchronous::Normal,
        }
    }
}

/// SQLite's `synchronous` setting, in WAL mode (the only mode dashd uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSynchronous {
    /// A commit is in the write-ahead log before it returns; the log is synced to disk
    /// at checkpoints. Committed data survives a crash or `kill -9` of dashd; a power
    /// loss or operating-system crash may lose the last commits (never the file).
    Normal,
    /// The log is synced at every commit: committed data also survives a power loss. One
    /// sync per commit, which group commit shares among the messages committed together.
    Full,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `dashd=debug,sqlx=warn`...
    pub level: String,
    /// `auto` (text on a terminal, JSON otherwise), `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// Which storage backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl Config {
    /// The admin socket path, defaulted from the data directory.
    pub fn admin_socket(&self) -> PathBuf {
        self.admin
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("dashd.sock"))
    }

    /// The database URL, defaulted to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("dashd.db").display()),
        }
    }

    /// The backend the database URL selects.
    pub fn backend(&self) -> Result<Backend, ConfigError> {
        backend_of(&self.database_url())
    }

    /// Checks the rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.backend()?;
        if self.database.max_connections == 0 {
            return Err(ConfigError {
                key: "database.max_connections".into(),
                message: "must be at least 1".into(),
            });
        }
        if !(1..=3600).contains(&self.server.shutdown_timeout_s) {
            return Err(ConfigError {
                key: "server.shutdown_timeout_s".into(),
                message: "must be between 1 and 3600 seconds".into(),
            });
        }
        for (key, value) in [
            (
                "server.max_connections",
                u64::from(self.server.max_connections),
            ),
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    key: key.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        if self.providers.webhook_max_body_bytes < 1024 {
            return Err(ConfigError {
                key: "providers.webhook_max_body_bytes".into(),
                message: "must be at least 1024".into(),
            });
        }
        if let Some(url) = &self.providers.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError {
                key: "providers.public_url".into(),
                message: format!("must start with https:// (or http://), not {url:?}"),
            });
        }
        if let Some(secret) = &self.api.jwt_secret
            && secret.expose().len() < 32
        {
            return Err(ConfigError {
                key: "api.jwt_secret".into(),
                message: "must be at least 32 bytes (e.g. openssl rand -hex 32)".into(),
            });
        }
        for (key, value) in [
            ("api.access_token_ttl_s", self.api.access_token_ttl_s),
            ("api.refresh_token_ttl_s", self.api.refresh_token_ttl_s),
            ("api.rate_per_minute", u64::from(self.api.rate_per_minute)),
            ("api.login_attempts", u64::from(self.api.login_attempts)),
            ("api.login_window_s", self.api.login_window_s),
            ("api.events_retained", u64::from(self.api.events_retained)),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    key: key.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        if let Some(origin) = self.api.cors_origins.iter().find(|origin| {
            !(origin.starts_with("https://") || origin.starts_with("http://"))
                || origin.ends_with('/')
        }) {
            return Err(ConfigError {
                key: "api.cors_origins".into(),
                message: format!(
                    "an origin is a scheme and host with no path, like https://panel.example.com, not {origin:?}"
                ),
            });
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError {
                key: "server.max_body_bytes".into(),
                message: "must be at least 1024".into(),
            });
        }
        if !(1..=1024).contains(&self.pipeline.workers) {
            return Err(ConfigError {
                key: "pipeline.workers".into(),
                message: "must be between 1 and 1024".into(),
            });
        }
        if !(1..=1024).contains(&self.dispatcher.concurrency) {
            return Err(ConfigError {
                key: "dispatcher.concurrency".into(),
                message: "must be between 1 and 1024".into(),
            });
        }
        if !(1..=1024).contains(&self.dispatcher.provider_concurrency) {
            return Err(ConfigError {
                key: "dispatcher.provider_concurrency".into(),
                message: "must be between 1 and 1024".into(),
            });
        }
        if self.dispatcher.max_attempts == 0 {
            return Err(ConfigError {
                key: "dispatcher.max_attempts".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.dispatcher.retry_base_ms == 0
            || self.dispatcher.retry_base_ms > self.dispatcher.retry_max_ms
        {
            return Err(ConfigError {
                key: "dispatcher.retry_base_ms".into(),
                message: "must be at least 1 and at most retry_max_ms".into(),
            });
        }
        if !(1..=100).contains(&self.pipeline.max_attempts) {
            return Err(ConfigError {
                key: "pipeline.max_attempts".into(),
                message: "must be between 1 and 100".into(),
            });
        }
        if !(1..=3_600_000).contains(&self.pipeline.retry_base_ms) {
            return Err(ConfigError {
                key: "pipeline.retry_base_ms".into(),
                message: "must be between 1 and 3600000".into(),
            });
        }
        if self.pipeline.max_backlog == 0 {
            return Err(ConfigError {
                key: "pipeline.max_backlog".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.pipeline.max_backlog_per_bot == 0 {
            return Err(ConfigError {
                key: "pipeline.max_backlog_per_bot".into(),
                message: "must be at least 1".into(),
            });
        }
        for (key, value, max) in [
            (
                "pipeline.max_messages_per_event",
                self.pipeline.max_messages_per_event,
                1000,
            ),
            (
                "pipeline.max_http_per_event",
                self.pipeline.max_http_per_event,
                100,
            ),
            (
                "pipeline.max_steps_per_event",
                self.pipeline.max_steps_per_event,
                10_000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(ConfigError {
                    key: key.into(),
                    message: format!("must be between 1 and {max}"),
                });
            }
        }
        if !(64..=65_536).contains(&self.pipeline.flow_memory_mb) {
            return Err(ConfigError {
                key: "pipeline.flow_memory_mb".into(),
                message: "must be between 64 and 65536".into(),
            });
        }
        if !(10..=600_000).contains(&self.pipeline.flow_step_timeout_ms) {
            return Err(ConfigError {
                key: "pipeline.flow_step_timeout_ms".into(),
                message: "must be between 10 and 600000".into(),
            });
        }
        if self.pipeline.flow_workers > 256 {
            return Err(ConfigError {
                key: "pipeline.flow_workers".into(),
                message: "must be at most 256 (0 means one per CPU)".into(),
            });
        }
        if self.dispatcher.lease_ms < 1000 {
            return Err(ConfigError {
                key: "dispatcher.lease_ms".into(),
                message: "must be at least 1000 (longer than any provider call)".into(),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError {
                key: "data_dir".into(),
                message: "must not be empty".into(),
            });
        }
        if let Some(group) = &self.admin.group
            && group.trim().is_empty()
        {
            return Err(ConfigError {
                key: "admin.group".into(),
                message: "must name a group; remove the key to allow no group".into(),
            });
        }
        Ok(())
    }
}

/// Picks the backend from a URL's scheme.
pub fn backend_of(url: &str) -> Result<Backend, ConfigError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        // Only the scheme is shown: the rest of a mistyped URL may hold a password.
        let scheme = url.split(':').next().unwrap_or_default();
        Err(ConfigError {
            key: "database.url".into(),
            message: format!(
                "unsupported URL (scheme {scheme:?}): use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB"
            ),
        })
    }
}

/// Returns `url` with its password (and any query string naming one) replaced by `***`.
/// Errs on the side of hiding: everything before the last `@` is treated as user
/// information, so a password containing `/`, `?` or `#` is hidden too.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (userinfo, tail) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let tail = match tail.split_once('?') {
        Some((before, query)) if query.to_ascii_lowercase().contains("password") => {
            format!("{before}?***")
        }
        _ => tail.to_owned(),
    };
    match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{tail}"),
            None => format!("{scheme}://{info}@{tail}"),
        },
        None => format!("{scheme}://{tail}"),
    }
}

/// A secret value. `Debug` and `Serialize` never show it: a URL keeps everything but its
/// password, anything else becomes `***`. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value in clear, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What may be shown of the value.
    pub fn redacted(&self) -> String {
        if self.0.contains("://") {
            redact_url(&self.0)
        } else {
            "***".to_owned()
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_synchronous_is_normal_unless_full_is_asked_for() {
        assert_eq!(
            Config::default().database.sqlite_synchronous,
            SqliteSynchronous::Normal
        );
        let full: Config = toml::from_str("[database]\nsqlite_synchronous = \"full\"\n").unwrap();
        assert_eq!(full.database.sqlite_synchronous, SqliteSynchronous::Full);
        let err = toml::from_str::<Config>("[database]\nsqlite_synchronous = \"off\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("normal") && err.contains("full"), "{err}");
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let config = Config::default();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:3009");
        assert_eq!(
            config.admin_socket(),
            PathBuf::from("./dashd-data/dashd.sock")
        );
        assert_eq!(config.database_url(), "sqlite://./dashd-data/dashd.db");
        assert_eq!(config.backend().unwrap(), Backend::Sqlite);
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err =
            toml::from_str::<Config>("[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(backend_of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            backend_of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            backend_of("sqlite:///var/lib/dashd/dashd.db").unwrap(),
            Backend::Sqlite
        );
        let err = backend_of("mysql://root:pw@h/db").unwrap_err();
        assert_eq!(err.key, "database.url");
        assert!(!err.message.contains("pw"), "{}", err.message);
    }

    #[test]
    fn secrets_never_show_passwords() {
        let url = Secret::new("postgres://dash:s3cr3t@db.example:5432/dashd");
        assert_eq!(url.redacted(), "postgres://dash:***@db.example:5432/dashd");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert_eq!(
            redact_url("postgres://h/db?user=a&password=s3cr3t"),
            "postgres://h/db?***"
        );
        assert_eq!(redact_url("postgres://dash@h/db"), "postgres://dash@h/db");
        for tricky in [
            "postgres://u:s3/cret@h/db",
            "postgres://u:s3?cret@h/db",
            "postgres://u:s3#cr@et@h/db",
        ] {
            let shown = redact_url(tricky);
            assert!(!shown.contains("s3"), "{tricky} -> {shown}");
            assert!(shown.ends_with("@h/db"), "{tricky} -> {shown}");
        }
        let typo = backend_of("postgres:/u:s3cret@h/db").unwrap_err();
        assert!(!typo.message.contains("s3cret"), "{}", typo.message);
        assert_eq!(Secret::new("token").redacted(), "***");
        let json = serde_json::to_string(&url).unwrap();
        assert!(!json.contains("s3cr3t"));
    }

    #[test]
    fn rules_name_the_key() {
        let mut config = Config::default();
        config.database.max_connections = 0;
        assert_eq!(
            config.validate().unwrap_err().key,
            "database.max_connections"
        );
        let mut config = Config::default();
        config.server.shutdown_timeout_s = 0;
        assert_eq!(
            config.validate().unwrap_err().key,
            "server.shutdown_timeout_s"
        );
    }
}
