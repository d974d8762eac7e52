//! Tracing, set up once: human-readable text on a terminal, JSON lines otherwise (under
//! systemd or in containers), unless `log.format` says which.

use std::io::IsTerminal;

use anyhow::Context;
use dash_core::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Checks a `log.level` filter without installing it.
pub fn parse_filter(level: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::builder().parse(level).with_context(|| {
        format!(
            "log.level: {level:?} is not a valid filter (e.g. info, debug, dashd=debug,sqlx=warn)"
        )
    })
}

/// Installs the global subscriber. Logs go to stderr; stdout stays for command output.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = parse_filter(&config.level)?;
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    result.map_err(|err| anyhow::anyhow!("cannot install the logger: {err}"))
}
