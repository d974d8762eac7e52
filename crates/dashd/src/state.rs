//! The one state struct every handler receives: cheap handles, cloned per request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use dash_core::config::Config;

use crate::pipeline::Pipeline;
use crate::store::Store;

/// Shared handles of a running daemon.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Credentials of the REST API: token keys, hashing, login and request limits.
    pub auth: Arc<crate::auth::Auth>,
    pub pipeline: Arc<Pipeline>,
    pub config: Arc<Config>,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    /// The public listener's bound address (differs from the config with port 0).
    pub http_addr: SocketAddr,
    pub admin_socket: PathBuf,
}

impl AppState {
    /// Seconds since start-up.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
