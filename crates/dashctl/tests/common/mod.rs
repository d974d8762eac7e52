//! What the end-to-end tests share: a real dashd in-process (port 0, temporary data
//! directory) and a way to run the real `dashctl` binary against it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use dash_core::BotRef;
use dash_core::config::Config;
use serde_json::Value;

/// A running dashd and the directory it works in (its data in `dashd-data/`).
pub struct Env {
    pub daemon: Option<dashd::Daemon>,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Env {
        Env::with(|_| {}).await
    }

    /// Starts with the configuration adjusted by `adjust`.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        adjust(&mut config);
        let daemon = dashd::start(config).await.unwrap();
        Env {
            daemon: Some(daemon),
            dir,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("dashd-data/dashd.sock")
    }

    /// Runs dashctl against this daemon (explicit socket, stdin not a terminal).
    pub async fn ctl(&self, args: &[&str]) -> Run {
        run_ctl(self.dir.path(), Some(&self.socket()), args).await
    }

    pub fn daemon(&self) -> &dashd::Daemon {
        self.daemon.as_ref().unwrap()
    }

    /// A tenant `acme` and a sandbox bot `acme/ventas` running `flow` (if any).
    pub async fn bot_with(&self, flow: Option<&str>) {
        self.ctl(&["tenant", "create", "acme"]).await.ok();
        self.ctl(&[
            "bot",
            "create",
            "acme/ventas",
            "--chain",
            "sandbox",
            "--timezone",
            "America/Argentina/Buenos_Aires",
        ])
        .await
        .ok();
        if let Some(flow) = flow {
            let file = self.dir.path().join("flow.toml");
            std::fs::write(&file, flow).unwrap();
            self.ctl(&[
                "flow",
                "import",
                "acme/ventas",
                file.to_str().unwrap(),
                "--activate",
            ])
            .await
            .ok();
        }
    }

    pub async fn bot_id(&self) -> uuid::Uuid {
        let bot = self
            .daemon()
            .store()
            .bot(&BotRef::Path {
                tenant: "acme".into(),
                bot: "ventas".into(),
            })
            .await
            .unwrap();
        bot.id
    }

    /// What the sandbox has been sent for `acme/ventas`, oldest first.
    pub async fn sandbox(&self) -> Vec<String> {
        let sent = self
            .daemon()
            .store()
            .sandbox_sent(self.bot_id().await)
            .await
            .unwrap();
        sent.into_iter().map(|s| s.body.text).collect()
    }

    /// Stops dashd (a clean shutdown) and leaves it down until [`Env::start_again`].
    /// Returns the HTTP address it listened on.
    pub async fn stop_daemon(&mut self) -> std::net::SocketAddr {
        let daemon = self.daemon.take().expect("dashd is running");
        let addr = daemon.http_addr;
        daemon.shutdown().await.unwrap();
        addr
    }

    /// Starts dashd again on the same data directory and HTTP address.
    pub async fn start_again(&mut self, addr: std::net::SocketAddr) {
        let mut config = config_in(self.dir.path());
        config.server.listen = addr;
        self.daemon = Some(dashd::start(config).await.unwrap());
    }

    pub async fn stop(mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown().await.unwrap();
        }
    }
}

pub fn config_in(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.join("dashd-data"),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// A finished dashctl run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "stdout is not JSON ({err}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.stderr
        );
        self
    }
}

/// Runs dashctl in `cwd`, with `DASHCTL_SOCKET` set to `socket` or unset.
pub async fn run_ctl(cwd: &Path, socket: Option<&Path>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dashctl"));
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("DASHCTL_SOCKET")
        .stdin(std::process::Stdio::null());
    if let Some(socket) = socket {
        command.env("DASHCTL_SOCKET", socket);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().await.unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// Polls until `check` holds (the pipeline is asynchronous), failing after `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
