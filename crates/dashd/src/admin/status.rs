//! `GET /v1/status`: version, uptime, storage and record counts.

use axum::extract::State;
use dash_core::api::{ADMIN_API_VERSION, DaemonStatus, DatabaseStatus};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn show(State(state): State<AppState>) -> Result<axum::Json<DaemonStatus>, ApiError> {
    let (tenants, bots) = state.store.counts().await?;
    let schema_version = state.store.schema_version().await?;
    Ok(axum::Json(DaemonStatus {
        version: dash_core::VERSION.to_owned(),
        api_version: ADMIN_API_VERSION,
        pid: std::process::id(),
        started_at: state.started_at,
        uptime_s: state.uptime_s(),
        data_dir: state.config.data_dir.display().to_string(),
        admin_socket: state.admin_socket.display().to_string(),
        listen: state.http_addr.to_string(),
        database: DatabaseStatus {
            backend: state.store.backend().as_str().to_owned(),
            location: state.store.location(),
            schema_version,
        },
        tenants,
        bots,
        webhook_events_ignored: state.pipeline.ignored_events(),
    }))
}
