//! `dashctl status`.

use dash_core::api::DaemonStatus;

use crate::client::Client;
use crate::error::CliResult;
use crate::output::{Output, details, time, uptime};

pub async fn run(client: &Client, out: Output) -> CliResult {
    let status: DaemonStatus = client.get("/v1/status").await?;
    out.print(&status, || {
        details(&[
            (
                "dashd",
                format!("{} (admin API v{})", status.version, status.api_version),
            ),
            ("pid", status.pid.to_string()),
            (
                "up",
                format!(
                    "{} (since {})",
                    uptime(status.uptime_s),
                    time(&status.started_at)
                ),
            ),
            ("listen", status.listen.clone()),
            ("admin socket", status.admin_socket.clone()),
            ("data dir", status.data_dir.clone()),
            (
                "database",
                format!(
                    "{} {} (schema v{})",
                    status.database.backend,
                    status.database.location,
                    status.database.schema_version
                ),
            ),
            ("tenants", status.tenants.to_string()),
            ("bots", status.bots.to_string()),
            (
                "webhook events ignored",
                status.webhook_events_ignored.to_string(),
            ),
        ])
    })
}
