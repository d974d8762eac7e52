//! The public HTTP listener: `GET /health`, the provider webhooks ([`webhooks`]) and the
//! REST API ([`api`]).

pub mod api;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::error::{method_not_allowed, not_found};
use crate::state::AppState;
use crate::store::StoreHealth;

/// Body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `degraded` when a dependency does not answer (then HTTP 503).
    pub status: String,
    pub version: String,
    pub uptime_s: u64,
    /// Resident memory of the dashd process.
    pub memory_mb: f64,
    /// `ok` or `error`.
    pub database: String,
    /// `ok`, `error`, or `disabled` when no Redis is configured.
    pub redis: String,
    /// Why the status is `degraded`, for an operator; absent when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The public router.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/health", get(health))
        .merge(webhooks::routes())
        .merge(api::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    api::edge_layers(router, &state).layer(crate::telemetry::http_trace_layer())
}

async fn health(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    // A database that hangs must not hang the health check with it.
    let database = tokio::time::timeout(HEALTH_TIMEOUT, state.store.health())
        .await
        .unwrap_or_else(|_| StoreHealth::Degraded {
            reason: format!(
                "the database did not answer within {} s",
                HEALTH_TIMEOUT.as_secs()
            ),
        });
    let reason = database.reason().map(str::to_owned);
    let (status, word, database) = match reason {
        None => (StatusCode::OK, "ok", "ok"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "degraded", "error"),
    };
    let health = Health {
        status: word.to_owned(),
        version: dash_core::VERSION.to_owned(),
        uptime_s: state.uptime_s(),
        memory_mb: resident_memory_mb().unwrap_or(0.0),
        database: database.to_owned(),
        redis: "disabled".to_owned(),
        reason,
    };
    (status, axum::Json(health))
}

/// How long `/health` waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Resident set size from `/proc/self/status` (Linux), rounded to 0.1 MB.
fn resident_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn resident_memory_is_read() {
        let mb = super::resident_memory_mb().unwrap();
        assert!(mb > 0.1 && mb < 4096.0, "{mb}");
    }
}
