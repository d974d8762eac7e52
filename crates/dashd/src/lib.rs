//! The DashOffice daemon as a library. `main.rs` parses flags, sets up logging and calls
//! [`run`]; tests call [`start`] to get a real daemon in-process (port 0, temporary data
//! directory) and drive it over HTTP or with `dashctl`.
//!
//! Start-up order: data directory → admin socket (refuses if another dashd is live) →
//! storage (migrations) → public listener → serve → `READY=1`. Shutdown runs backwards:
//! stop accepting, drain in-flight requests within `server.shutdown_timeout_s`, close
//! the pool, remove the socket.

pub mod adapter;
pub mod admin;
pub mod auth;
pub mod backup;
pub mod clock;
pub mod config;
pub mod error;
pub mod flow_runner;
pub mod gateway;
pub mod pipeline;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dash_core::config::Config;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::access::{AdminAccess, PeerInfo};
use crate::state::AppState;

/// A daemon running in this process.
#[derive(Debug)]
pub struct Daemon {
    /// The public listener's bound address.
    pub http_addr: SocketAddr,
    /// The admin socket's path.
    pub admin_socket: PathBuf,
    state: AppState,
    shutdown: CancellationToken,
    servers: JoinSet<std::io::Result<()>>,
    /// PostgreSQL only, held while running: a second dashd on the same data directory is
    /// refused. With SQLite the store itself holds the lock, on the database file.
    _data_lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Binds every listener, opens storage and starts serving. Returns once the daemon
/// accepts requests.
pub async fn start(config: Config) -> anyhow::Result<Daemon> {
    start_with_clock(config, Arc::new(clock::SystemClock)).await
}

/// [`start`] with the pipeline reading time from `clock` (tests hold time still or move
/// it on; see [`pipeline::Pipeline::clock_moved`]).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn clock::Clock>,
) -> anyhow::Result<Daemon> {
    let started = Instant::now();
    let mut config = config;
    config.data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("data_dir {}", config.data_dir.display()))?;
    let plan = preflight(&config)?;
    create_private_dir(&config.data_dir)?;
    let data_lock = match config.backend() {
        Ok(dash_core::config::Backend::Postgres) => Some(lock_data_dir(&config.data_dir)?),
        _ => None,
    };

    let admin_socket = plan.admin_socket.clone();
    let admin_listener =
        admin::socket::bind(&admin_socket, plan.access.group.as_ref().map(|g| g.gid))?;
    if let Some(group) = &plan.access.group {
        warn_if_group_cannot_reach(&admin_socket, &group.name);
    }
    // From here on the socket file is ours: remove it on any early return.
    let socket_guard = SocketFile(Some(admin_socket.clone()));

    // Bind before touching the database, so a taken port costs nothing.
    let http_listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set server.listen, DASHD_SERVER_LISTEN or --listen)",
                config.server.listen
            )
        })?;
    let http_addr = http_listener.local_addr()?;
    let store = store::open(&config, None).await.with_context(|| {
        format!(
            "cannot open the database {}",
            dash_core::config::redact_url(&config.database_url())
        )
    })?;
    let access = plan.access;

    let store: Arc<dyn store::Store> = Arc::from(store);
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let pipeline = pipeline::Pipeline::start_with_clock(
        store.clone(),
        config.clone(),
        clock,
        shutdown.child_token(),
    )
    .await
    .context("cannot start the message pipeline")?;
    let (auth, token_key) = auth::Auth::load(&config.api, &config.data_dir)
        .context("cannot load the key that signs API tokens")?;
    if token_key.generated
        && let Some(path) = &token_key.path
    {
        tracing::info!(path = %path.display(), "generated the key that signs API tokens");
    }
    let state = AppState {
        store,
        auth: Arc::new(auth),
        pipeline: Arc::new(pipeline),
        config,
        started,
        started_at: chrono::Utc::now(),
        http_addr,
        admin_socket: admin_socket.clone(),
    };
    let mut servers = JoinSet::new();
    tokio::spawn(trim_event_log(
        state.store.clone(),
        state.config.api.events_retained,
        shutdown.child_token(),
    ));

    // Each listener has its own limits: a flood on the public port never takes the
    // admin socket's connections, and descriptors stay in reserve for it and the database.
    let mut admin_limits = server::EdgeLimits::admin();
    admin_limits.max_connections = server::connection_limit(admin_limits.max_connections, 64);
    let mut public_limits = server::EdgeLimits::from_server_config(&state.config.server);
    public_limits.max_connections = server::connection_limit(
        public_limits.max_connections,
        server::FD_RESERVE + admin_limits.max_connections,
    );
    servers.spawn(server::serve(
        server::UnixEdge {
            listener: admin_listener,
            peer: PeerInfo::of,
        },
        admin::router(state.clone(), access),
        admin_limits,
        shutdown.clone(),
    ));
    servers.spawn(server::serve(
        http_listener,
        gateway::router(state.clone()),
        public_limits,
        shutdown.clone(),
    ));

    // Serving: the socket is now removed by `Daemon::shutdown`.
    socket_guard.keep();
    tracing::info!(
        version = dash_core::VERSION,
        listen = %http_addr,
        admin_socket = %admin_socket.display(),
        database = state.store.backend().as_str(),
        data_dir = %state.config.data_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "dashd ready"
    );
    Ok(Daemon {
        http_addr,
        admin_socket,
        state,
        shutdown,
        servers,
        _data_lock: data_lock,
    })
}

impl Daemon {
    /// The daemon's storage (tests inspect what it recorded).
    pub fn store(&self) -> Arc<dyn store::Store> {
        self.state.store.clone()
    }

    /// The daemon's message pipeline.
    pub fn pipeline(&self) -> Arc<pipeline::Pipeline> {
        self.state.pipeline.clone()
    }

    /// A token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, drains in-flight requests within the configured bound, closes
    /// storage and removes the admin socket.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let bound = Duration::from_secs(self.state.config.server.shutdown_timeout_s);
        // One bound for the whole drain: requests, conversation steps and sends.
        let deadline = tokio::time::Instant::now() + bound;
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(result) = self.servers.join_next().await {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => tracing::error!(error = %err, "listener failed"),
                    Err(err) => tracing::error!(error = %err, "listener task failed"),
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout_s = bound.as_secs(),
                "in-flight requests did not finish in time; closing them"
            );
            self.servers.shutdown().await;
        }
        // Work not finished stays in the database and is picked up at the next start.
        self.state
            .pipeline
            .join(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        self.state.store.close().await;
        remove_socket(&self.admin_socket);
        tracing::info!("dashd stopped");
        Ok(())
    }

    /// Waits until the token is cancelled, or a listener stops on its own (an error:
    /// returned after the rest of the daemon has been shut down).
    async fn wait(&mut self) -> Option<anyhow::Error> {
        let fatal = self.state.store.fatal();
        tokio::select! {
            // Listeners only finish after cancellation in a normal stop; checking the token
            // first keeps a normal stop from looking like a failure.
            biased;
            () = self.shutdown.cancelled() => None,
            // The database file replaced or deleted: stop, rather than serve 503s forever.
            // The store has logged why; the reason is repeated in the exit error.
            () = fatal.cancelled() => {
                let health = self.state.store.health().await;
                Some(anyhow::anyhow!(
                    "the database failed for good: {}",
                    health.reason().unwrap_or("see the log")
                ))
            }
            Some(result) = self.servers.join_next() => {
                let err = match result {
                    Ok(Ok(())) => anyhow::anyhow!("a listener stopped unexpectedly"),
                    Ok(Err(err)) => anyhow::Error::new(err).context("a listener failed"),
                    Err(err) => anyhow::Error::new(err).context("a listener task failed"),
                };
                tracing::error!(error = format!("{err:#}"), "shutting down");
                Some(err)
            }
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled (SIGTERM/SIGINT in `main`), telling
/// systemd when it is ready and when it stops.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut daemon = start(config).await?;
    let token = daemon.shutdown_token();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        token.cancel();
    });
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    spawn_watchdog(daemon.shutdown_token());
    let failure = daemon.wait().await;
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    daemon.shutdown().await?;
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Pings systemd's watchdog (`WatchdogSec=` in the unit) at half its timeout, as long as
/// the runtime is alive: each ping waits for a probe task spawned on the runtime's queues,
/// so a runtime whose worker threads are all stuck misses its pings and systemd restarts
/// dashd. A no-op when the watchdog is off.
fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (timeout / 2).max(Duration::from_millis(10));
    tracing::info!(
        timeout_ms = timeout.as_millis() as u64,
        "systemd watchdog on"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match tokio::time::timeout(every / 2, tokio::spawn(async {})).await {
                Ok(Ok(())) => notify_systemd(&[sd_notify::NotifyState::Watchdog]),
                _ => tracing::error!(
                    "the runtime did not run a probe task in time: watchdog ping skipped"
                ),
            }
        }
    });
}

/// Sends a state to systemd when `NOTIFY_SOCKET` is set (a no-op otherwise).
fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(err) = sd_notify::notify(state)
    {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down (send it again to stop at once)"
        );
        token.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without waiting for in-flight requests");
        std::process::exit(130);
    });
    Ok(())
}

/// What start-up will use, checked without side effects (`dashd check-config` runs it).
#[derive(Debug)]
pub struct Preflight {
    pub access: AdminAccess,
    pub admin_socket: PathBuf,
}

/// Checks what types cannot: the admin group exists, the socket path fits in a Unix
/// socket address, the log filter parses.
pub fn preflight(config: &Config) -> anyhow::Result<Preflight> {
    config.validate()?;
    let access = AdminAccess::resolve(config.admin.group.as_deref())?;
    let admin_socket = std::path::absolute(config.admin_socket())?;
    // sockaddr_un holds 108 bytes, the final NUL included.
    if admin_socket.as_os_str().len() >= 108 {
        anyhow::bail!(
            "admin.socket: {} is {} bytes long; Unix sockets allow at most 107: choose a shorter path",
            admin_socket.display(),
            admin_socket.as_os_str().len()
        );
    }
    Ok(Preflight {
        access,
        admin_socket,
    })
}

/// Takes an exclusive lock on `<data_dir>/dashd.lock`, so two daemons on PostgreSQL never
/// share one data directory, whatever their sockets. (With SQLite the store locks the
/// database file itself, which no cleaner can delete from under it.)
fn lock_data_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dir.join("dashd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            anyhow::anyhow!(
                "another dashd is already running with data_dir {} (see `dashctl status`): stop it first, or give this one another data_dir",
                dir.display()
            )
        } else {
            anyhow::anyhow!("cannot lock {}: {errno}", path.display())
        }
    })
}

/// Creates the data directory readable by its owner only (it holds the database); warns
/// when an existing one is open to other users.
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                data_dir = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the data directory is open to other users; it holds the database: chmod 700 it"
            );
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create data_dir {}", path.display()))
}

/// With `admin.group`, the group also needs search permission on the socket's directory
/// (the data directory is 0700): say so rather than let dashctl fail mysteriously.
fn warn_if_group_cannot_reach(socket: &Path, group: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = socket.parent() else { return };
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o010 == 0
    {
        tracing::warn!(
            dir = %dir.display(),
            group,
            "members of admin.group cannot reach the admin socket: its directory is not group-searchable; put admin.socket in a directory such as /run/dashd (mode 0750, group {group})"
        );
    }
}

fn remove_socket(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "cannot remove the admin socket");
    }
}

/// Removes the admin socket when start-up fails after binding it.
struct SocketFile(Option<PathBuf>);

impl SocketFile {
    /// Start-up succeeded: leave the socket in place.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            remove_socket(path);
        }
    }
}

/// Keeps the REST API's event log to the newest `keep` events of each tenant, once a
/// minute, until shutdown.
async fn trim_event_log(store: Arc<dyn store::Store>, keep: u32, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.trim_events(keep).await {
            Ok(0) => {}
            Ok(trimmed) => tracing::debug!(trimmed, "event log trimmed"),
            Err(err) => tracing::warn!(error = %err, "cannot trim the event log"),
        }
    }
}
