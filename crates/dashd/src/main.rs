//! `dashd`: parses flags, loads the configuration, sets up logging and runs the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dashd::config::{Flag, Loaded};
use dashd::store::{self, MigrationPolicy};
use tokio_util::sync::CancellationToken;

/// DashOffice daemon: runs WhatsApp bots for many tenants.
///
/// With no configuration at all it keeps its data in ./dashd-data/ (SQLite database and
/// admin socket) and listens on 127.0.0.1:3009. Configuration layers, each overriding the
/// one before: built-in defaults, the TOML file (--config or DASHD_CONFIG), DASHD_*
/// environment variables (e.g. DASHD_SERVER_LISTEN), then these flags.
#[derive(Debug, Parser)]
#[command(name = "dashd", version, about, long_about)]
struct Cli {
    /// TOML configuration file.
    #[arg(short, long, global = true, env = "DASHD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Directory for the embedded database and the admin socket [default: ./dashd-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Address of the public HTTP listener [default: 127.0.0.1:3009].
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    listen: Option<String>,

    /// Admin socket path [default: DATA_DIR/dashd.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Log filter, e.g. info, debug, dashd=debug,sqlx=warn [default: info].
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    /// Log format [default: auto: text on a terminal, JSON otherwise].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default when no command is given).
    Run,
    /// Validate the configuration and print it with every default filled in and secrets
    /// redacted; exits non-zero when it is invalid.
    CheckConfig,
    /// Apply pending database migrations (needed before starting on PostgreSQL; the
    /// embedded SQLite database is migrated at start-up).
    Migrate {
        /// Only print the schema version and the migrations that would be applied.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a consistent backup while dashd runs: the SQLite database (through SQLite's
    /// backup API) and the data directory's other files, in one .tar.gz, mode 0600. The
    /// master key is left out on purpose: back it up separately. On PostgreSQL, prints
    /// the pg_dump command for the database.
    Backup {
        /// The archive to write (e.g. /var/backups/dashd-2026-01-31.tar.gz).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a backup into the configured data directory. Refuses while dashd runs;
    /// an existing database is replaced only with --force (and kept, renamed).
    Restore {
        /// The archive written by `dashd backup`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace an existing database (it is kept beside, as dashd.db.before-restore-TIME).
        #[arg(long)]
        force: bool,
    },
    /// Write man pages (dashd.1 and one per command) into a directory (packaging).
    #[command(hide = true)]
    Man {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
    /// Internal: serve flow engine steps on stdin/stdout for a running dashd.
    #[command(hide = true)]
    FlowWorker {
        /// Address-space limit in MiB (0: unlimited).
        #[arg(long, default_value_t = 256)]
        memory_mb: u64,
        /// Budget for compiled flows in MiB.
        #[arg(long, default_value_t = 64)]
        cache_mb: u64,
    },
}

fn main() -> ExitCode {
    // Files dashd creates (database, WAL, lock, socket) are its own; the socket's mode is
    // set explicitly afterwards. Set before any thread starts.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    if let Some(Command::FlowWorker {
        memory_mb,
        cache_mb,
    }) = cli.command
    {
        // Started by dashd with a cleared environment; needs no configuration.
        return dashd::flow_runner::serve(dashd::flow_runner::WorkerLimits {
            memory_mb,
            cache_mb,
        });
    }
    if let Some(Command::Man { dir }) = &cli.command {
        // Needs no configuration either: the pages come from the flags' definitions.
        return write_man_pages(dir);
    }
    let loaded = match dashd::config::load(cli.config.as_deref(), std::env::vars(), &flags(&cli)) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("dashd: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            if let Err(err) = dashd::preflight(&loaded.config) {
                eprintln!("dashd: invalid configuration: {err:#}");
                return ExitCode::from(2);
            }
            check_config(&loaded)
        }
        Command::Run => with_runtime(&loaded, |config| async move {
            let shutdown = CancellationToken::new();
            dashd::cancel_on_signals(shutdown.clone())?;
            dashd::run(config, shutdown).await
        }),
        Command::Migrate { dry_run: true } => {
            with_runtime(
                &loaded,
                |config| async move { migrate_dry_run(&config).await },
            )
        }
        Command::Backup { out } => backup(&loaded, &out),
        Command::Restore { file, force } => restore(&loaded, &file, force),
        Command::Migrate { dry_run: false } => with_runtime(&loaded, |config| async move {
            if config.backend()? == dash_core::config::Backend::Sqlite {
                dashd::create_private_dir(&config.data_dir)?;
            }
            let store = store::open(&config, Some(MigrationPolicy::Apply))
                .await
                .map_err(|err| anyhow::anyhow!("{err}"))?;
            let version = store.schema_version().await?;
            store.close().await;
            #[allow(clippy::print_stdout)] // command output
            {
                println!("{}: schema at version {version}", store.location());
            }
            Ok(())
        }),
        // Handled before loading the configuration.
        Command::FlowWorker { .. } | Command::Man { .. } => ExitCode::FAILURE,
    }
}

/// `dashd migrate --dry-run`: what `dashd migrate` (or, on SQLite, the next start) would
/// apply. Changes nothing.
async fn migrate_dry_run(config: &dash_core::config::Config) -> anyhow::Result<()> {
    use dashd::store::SchemaState;
    let plan = store::migration_plan(config)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let location = &plan.location;
    #[allow(clippy::print_stdout)] // command output
    match plan.state {
        None => println!(
            "{location}: no database yet; migrations 1 to {} would create it",
            store::latest_migration()
        ),
        Some(SchemaState::UpToDate { version }) => {
            println!("{location}: schema at version {version}, up to date: nothing to apply");
        }
        Some(SchemaState::Behind { current, expected }) => {
            println!(
                "{location}: schema at version {current}; `dashd migrate` would bring it to {expected} by applying:"
            );
            for (version, description) in &plan.pending {
                println!("  {version:04} {description}");
            }
        }
        Some(SchemaState::Ahead { current, expected }) => anyhow::bail!(
            "{location}: schema at version {current}, newer than this dashd understands ({expected}): upgrade dashd"
        ),
        Some(SchemaState::Damaged { version, reason }) => anyhow::bail!(
            "{location}: migration {version} is damaged ({reason}): restore the database from a backup"
        ),
    }
    Ok(())
}

/// `dashd man DIR`.
fn write_man_pages(dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    let written =
        std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(Cli::command(), dir));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dashd: cannot write man pages to {}: {err}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// `dashd backup --out FILE`.
fn backup(loaded: &Loaded, out: &std::path::Path) -> ExitCode {
    match dashd::backup::backup(&loaded.config, out) {
        Ok(report) => {
            #[allow(clippy::print_stdout)] // command output
            {
                let m = &report.manifest;
                println!(
                    "wrote {} ({} bytes): {}{} and {} other file(s) of {}",
                    out.display(),
                    report.bytes,
                    m.backend,
                    m.schema_version
                        .map(|v| format!(" database at schema version {v}"))
                        .unwrap_or_default(),
                    m.files.len(),
                    loaded.config.data_dir.display()
                );
                println!(
                    "not included, on purpose: the master key ({}); back it up separately",
                    dashd::backup::master_key_path(&loaded.config).display()
                );
                if let Some(command) = report.pg_dump {
                    println!(
                        "the database is on PostgreSQL: dump it with (the password from PGPASSWORD or ~/.pgpass):"
                    );
                    println!("  {command}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("dashd: backup failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `dashd restore FILE`.
fn restore(loaded: &Loaded, file: &std::path::Path, force: bool) -> ExitCode {
    match dashd::backup::restore(&loaded.config, file, force) {
        Ok(report) => {
            #[allow(clippy::print_stdout)] // command output
            {
                let m = &report.manifest;
                println!(
                    "restored the {} backup of {} (dashd {}) into {}",
                    m.backend,
                    m.created_at.to_rfc3339(),
                    m.dashd_version,
                    loaded.config.data_dir.display()
                );
                for aside in &report.moved_aside {
                    println!("what was there is kept as {}", aside.display());
                }
                if m.backend == "postgres" {
                    println!(
                        "the database is on PostgreSQL: restore its dump with pg_restore --clean --dbname=URL FILE.pgdump, then run dashd migrate"
                    );
                }
            }
            if !report.master_key_present {
                eprintln!(
                    "dashd: warning: no master key at {}: put the key backed up with this data there (or point secrets.master_key_file at it) before starting dashd",
                    dashd::backup::master_key_path(&loaded.config).display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("dashd: restore failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn flags(cli: &Cli) -> Vec<Flag> {
    let mut flags = Vec::new();
    let mut push = |key, flag, value: Option<String>| {
        if let Some(value) = value {
            flags.push(Flag { key, flag, value });
        }
    };
    push(
        "data_dir",
        "--data-dir",
        cli.data_dir.as_ref().map(|p| p.display().to_string()),
    );
    push("server.listen", "--listen", cli.listen.clone());
    push(
        "admin.socket",
        "--socket",
        cli.socket.as_ref().map(|p| p.display().to_string()),
    );
    push("log.level", "--log-level", cli.log_level.clone());
    push(
        "log.format",
        "--log-format",
        cli.log_format.map(|f| {
            match f {
                LogFormatArg::Auto => "auto",
                LogFormatArg::Text => "text",
                LogFormatArg::Json => "json",
            }
            .to_owned()
        }),
    );
    flags
}

#[allow(clippy::print_stdout)] // command output
fn check_config(loaded: &Loaded) -> ExitCode {
    println!("# configuration is valid");
    for layer in &loaded.layers {
        println!("# from: {layer}");
    }
    println!("# effective values (secrets redacted):\n");
    print!("{}", dashd::config::render_effective(&loaded.config));
    ExitCode::SUCCESS
}

fn with_runtime<F, Fut>(loaded: &Loaded, body: F) -> ExitCode
where
    F: FnOnce(dash_core::config::Config) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if let Err(err) = dashd::telemetry::init(&loaded.config.log) {
        eprintln!("dashd: {err:#}");
        return ExitCode::FAILURE;
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dashd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body(loaded.config.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Logged (JSON under systemd) and printed plainly for whoever started it.
            tracing::error!(error = format!("{err:#}"), "dashd failed");
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!("dashd: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
