//! The `dashd` binary as an operator runs it: `check-config`, `--version`, start-up with
//! no configuration, systemd readiness, SIGTERM, `kill -9` and restart, `migrate`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dashd(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dashd"));
    command
        .current_dir(dir)
        .env_remove("DASHD_CONFIG")
        .env("NO_COLOR", "1");
    for (name, _) in std::env::vars() {
        if name.starts_with("DASHD_") || name == "NOTIFY_SOCKET" {
            command.env_remove(name);
        }
    }
    command
}

fn output(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn version_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = output(dashd(dir.path()).arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("dashd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_example_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.toml");
    let (code, stdout, stderr) = output(
        dashd(dir.path())
            .args(["check-config", "--config"])
            .arg(&example),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:3009\""), "{stdout}");
    assert!(stdout.contains("dashd.sock"), "{stdout}");

    let secret = write(
        dir.path(),
        "db-url",
        "postgres://dashd:hunter2@db.internal/dashd\n",
    );
    let config = write(
        dir.path(),
        "dashd.toml",
        &format!("[database]\nurl_file = \"{}\"\n", secret.display()),
    );
    let (code, stdout, stderr) = output(
        dashd(dir.path())
            .arg("check-config")
            .env("DASHD_CONFIG", &config),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("postgres://dashd:***@db.internal/dashd"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
}

#[test]
fn check_config_names_unknown_keys_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:3009\"\nport = 80\n",
            "server.port",
        ),
        ("[sever]\nlisten = \"127.0.0.1:3009\"\n", "sever"),
        ("[server]\nlisten = \"not an address\"\n", "server.listen"),
        (
            "[server]\nshutdown_timeout_s = \"ten\"\n",
            "server.shutdown_timeout_s",
        ),
        (
            "[server]\nshutdown_timeout_s = 0\n",
            "server.shutdown_timeout_s",
        ),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        (
            "[database]\nurl = \"mysql://root@localhost/x\"\n",
            "database.url",
        ),
        (
            "[database]\nmax_connections = -1\n",
            "database.max_connections",
        ),
    ];
    for (text, key) in cases {
        let config = write(dir.path(), "bad.toml", text);
        let (code, stdout, stderr) =
            output(dashd(dir.path()).args(["check-config", "-c"]).arg(&config));
        assert_eq!(code, 2, "{text}: {stdout}");
        assert!(
            stderr.contains(&format!("invalid configuration: {key}: ")),
            "{text}: {stderr}"
        );
    }
    let (code, _, stderr) = output(
        dashd(dir.path())
            .arg("check-config")
            .env("DASHD_SERVER_LISTN", "x"),
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("server.listn") && stderr.contains("DASHD_SERVER_LISTN"),
        "{stderr}"
    );
    let (code, _, stderr) =
        output(dashd(dir.path()).args(["check-config", "--config", "/nonexistent.toml"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");

    // What start-up would refuse, check-config refuses too.
    let config = write(
        dir.path(),
        "group.toml",
        "[admin]\ngroup = \"no-such-group-here\"\n",
    );
    let (code, _, stderr) = output(dashd(dir.path()).args(["check-config", "-c"]).arg(&config));
    assert_eq!(code, 2);
    assert!(stderr.contains("admin.group: no group named"), "{stderr}");
    let long = format!("/tmp/{}/dashd.sock", "x".repeat(120));
    let (code, _, stderr) = output(dashd(dir.path()).args(["check-config", "--socket", &long]));
    assert_eq!(code, 2);
    assert!(stderr.contains("at most 107"), "{stderr}");
}

/// A dashd child process that is killed if the test fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "dashd did not exit in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One datagram from systemd's notify socket (retrying when a signal interrupts the wait).
fn receive(socket: &UnixDatagram) -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

fn start_with_notify(dir: &Path) -> (Running, UnixDatagram) {
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let child = dashd(dir)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("dashd.log")).unwrap())
        .spawn()
        .unwrap();
    let running = Running(child);
    let message = receive(&notify).expect("dashd never sent READY=1");
    assert!(message.contains("READY=1"), "{message}");
    (running, notify)
}

#[test]
fn zero_config_start_notifies_systemd_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, notify) = start_with_notify(dir.path());
    let socket = dir.path().join("dashd-data/dashd.sock");
    assert!(socket.exists());
    assert!(dir.path().join("dashd-data/dashd.db").exists());
    let mode_of = |path: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode_of(&socket), 0o600);
    // Nothing dashd keeps is readable by other users.
    assert_eq!(mode_of(&dir.path().join("dashd-data")), 0o700);
    for file in ["dashd.db", "dashd.db-wal"] {
        assert_eq!(
            mode_of(&dir.path().join("dashd-data").join(file)),
            0o600,
            "{file}"
        );
    }

    signal(&running.0, nix::sys::signal::Signal::SIGTERM);
    let status = wait_exit(&mut running.0, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(receive(&notify).unwrap().contains("STOPPING=1"));
    assert!(!socket.exists(), "the admin socket was left behind");
    let log = std::fs::read_to_string(dir.path().join("dashd.log")).unwrap();
    assert!(log.contains("dashd stopped"), "{log}");
    assert!(
        !log.contains(r#""level":"ERROR""#),
        "a clean stop logged an error: {log}"
    );
}

#[test]
fn the_systemd_watchdog_is_pinged_while_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut running = Running(
        dashd(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "200000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(receive(&notify).unwrap().contains("READY=1"));
    // Pings every 100 ms: a handful arrive within a second, and nothing else in between.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        let message = receive(&notify).expect("no watchdog ping");
        assert_eq!(message.trim_end(), "WATCHDOG=1");
        pings += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    signal(&running.0, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut running.0, Duration::from_secs(15)).success());
    // After the pings, STOPPING=1 (a ping may slip in first), then nothing more.
    loop {
        let message = receive(&notify).unwrap();
        if message.contains("STOPPING=1") {
            break;
        }
        assert_eq!(message.trim_end(), "WATCHDOG=1");
    }

    // A watchdog meant for another process (WATCHDOG_PID) is not this one's to ping.
    let mut other = Running(
        dashd(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "200000")
            .env("WATCHDOG_PID", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(receive(&notify).unwrap().contains("READY=1"));
    notify
        .set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    assert!(
        receive(&notify).is_err(),
        "pinged a watchdog that is not its own"
    );
    signal(&other.0, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut other.0, Duration::from_secs(15)).success());
}

#[test]
fn migrate_dry_run_creates_nothing_and_reads_a_running_daemons_database() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(dashd(dir.path()).args(["migrate", "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("no database yet"), "{stdout}");
    assert!(!dir.path().join("dashd-data").exists());

    // Beside a running daemon (which holds the database's lock): answered, not refused.
    let (mut running, _notify) = start_with_notify(dir.path());
    let (code, stdout, stderr) = output(dashd(dir.path()).args(["migrate", "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("up to date: nothing to apply"), "{stdout}");
    signal(&running.0, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut running.0, Duration::from_secs(15)).success());
}

#[test]
fn a_stale_socket_after_kill_9_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, _notify) = start_with_notify(dir.path());
    signal(&running.0, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut running.0, Duration::from_secs(5));
    assert!(dir.path().join("dashd-data/dashd.sock").exists());
    let (mut again, _notify) = start_with_notify(dir.path());
    signal(&again.0, nix::sys::signal::Signal::SIGINT);
    assert!(wait_exit(&mut again.0, Duration::from_secs(15)).success());
}

#[test]
fn migrate_creates_a_private_data_dir_and_keeps_secrets_out_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(dashd(dir.path()).arg("migrate"));
    assert_eq!(code, 0, "{stderr}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("dashd-data"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("dashd-data/dashd.db"))
                .unwrap()
                .permissions()
        ) & 0o777,
        0o600
    );
    let (code, _, stderr) = output(
        dashd(dir.path())
            .arg("check-config")
            .env("DASHD_DATABASE_URL", "postgres:/u:s3cret@h/db"),
    );
    assert_eq!(code, 2);
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn a_newer_database_schema_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(output(dashd(dir.path()).arg("migrate")).0, 0);
    let db = dir.path().join("dashd-data/dashd.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations VALUES (9999, 'future', datetime('now'), 1, x'00', 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let (code, _, stderr) =
        output(dashd(dir.path()).args(["--listen", "127.0.0.1:0", "--log-level", "error"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("newer than this dashd understands"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) =
        output(dashd(dir.path()).args(["--listen", &addr, "--log-level", "error"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    // Failing start-up does not leave its socket behind.
    assert!(!dir.path().join("dashd-data/dashd.sock").exists());
}

#[test]
#[cfg_attr(
    not(dashd_pg_tests),
    ignore = "set DASHD_TEST_DATABASE_URL to run the PostgreSQL suite"
)]
fn postgres_needs_migrate_before_start() {
    let admin_url = std::env::var("DASHD_TEST_DATABASE_URL").unwrap();
    let name = format!("dashd_test_{}", uuid::Uuid::new_v4().simple());
    let psql = |sql: &str| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&admin_url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        });
    };
    psql(&format!("CREATE DATABASE {name}"));
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    let url = format!("{base}/{name}");
    let dir = tempfile::tempdir().unwrap();

    let (code, _, stderr) = output(
        dashd(dir.path())
            .args(["--listen", "127.0.0.1:0", "--log-level", "error"])
            .env("DASHD_DATABASE_URL", &url),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("run `dashd migrate`"), "{stderr}");

    // The dry run lists every migration, changes nothing, and hides the password.
    let migrations =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/postgres"))
            .unwrap()
            .count();
    let dry_run = || {
        output(
            dashd(dir.path())
                .args(["migrate", "--dry-run"])
                .env("DASHD_DATABASE_URL", &url),
        )
    };
    let (code, stdout, stderr) = dry_run();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("would bring it to {migrations}")),
        "{stdout}"
    );
    assert!(stdout.contains("0001 tenants bots"), "{stdout}");
    assert_eq!(stdout.lines().count(), migrations + 1, "{stdout}");
    assert_eq!(dry_run().1, stdout, "the dry run changed the schema");

    let (code, stdout, stderr) = output(
        dashd(dir.path())
            .arg("migrate")
            .env("DASHD_DATABASE_URL", &url),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("schema at version {migrations}")),
        "{stdout}"
    );
    assert!(dry_run().1.contains("up to date: nothing to apply"));

    // A backup on PostgreSQL: the data directory's files, and the pg_dump command to run.
    let archive = dir.path().join("backup.tar.gz");
    let (code, stdout, stderr) = output(
        dashd(dir.path())
            .args(["backup", "--out"])
            .arg(&archive)
            .env("DASHD_DATABASE_URL", &url),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("pg_dump --format=custom"), "{stdout}");
    assert!(
        !stdout.contains("***"),
        "a masked password would be taken literally: {stdout}"
    );
    assert!(stdout.contains(&name), "{stdout}");
    assert!(archive.is_file());
    // Running it again is harmless.
    assert_eq!(
        output(
            dashd(dir.path())
                .arg("migrate")
                .env("DASHD_DATABASE_URL", &url)
        )
        .0,
        0
    );

    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut running = Running(
        dashd(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .env("DASHD_DATABASE_URL", &url)
            .env("NOTIFY_SOCKET", &notify_path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 64];
    notify
        .recv(&mut buf)
        .expect("dashd on PostgreSQL never became ready");
    signal(&running.0, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut running.0, Duration::from_secs(15)).success());
    psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
}

/// Starts dashd with debug logs into `dashd.log`; returns it and its public address.
fn start_debug(dir: &Path) -> (Running, String) {
    let (running, _notify) = {
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let child = dashd(dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ])
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dashd.log")).unwrap())
            .spawn()
            .unwrap();
        let running = Running(child);
        assert!(receive(&notify).unwrap().contains("READY=1"));
        (running, notify)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listen = rt.block_on(async {
        let status = admin(dir)
            .get("http://dashd/v1/status")
            .send()
            .await
            .unwrap();
        let status: serde_json::Value = status.json().await.unwrap();
        status["listen"].as_str().unwrap().to_owned()
    });
    (running, listen)
}

fn admin(dir: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .unix_socket(dir.join("dashd-data/dashd.sock"))
        .build()
        .unwrap()
}

#[test]
fn provider_secrets_never_reach_the_logs_or_the_database_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, listen) = start_debug(dir.path());
    let secrets = [
        "log-test-access-token-e1f2",
        "log-test-app-secret-77aa",
        "log-test-verify-token-0c0c",
        "log-test-twilio-token-5b5b",
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = admin(dir.path());
        let call = |method: &str, path: &str, body: serde_json::Value| {
            admin
                .request(method.parse().unwrap(), format!("http://dashd{path}"))
                .json(&body)
                .send()
        };
        call("POST", "/v1/tenants", serde_json::json!({"slug": "acme"})).await.unwrap();
        let bot: serde_json::Value = call(
            "POST",
            "/v1/tenants/acme/bots",
            serde_json::json!({"name": "sales", "settings": {"chain": ["meta", "twilio"]}}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let flow = "default_flow = \"echo\"\n[[flows]]\nid = \"echo\"\nsteps = [{ id = \"say\", kind = \"end\", text = \"{{ input }}\" }]\n";
        call(
            "POST",
            "/v1/tenants/acme/bots/sales/flows",
            serde_json::json!({"source": flow, "activate": true}),
        )
        .await
        .unwrap();
        // Providers that cannot be reached: every send and probe fails and is logged.
        let set = call(
            "PUT",
            "/v1/tenants/acme/bots/sales/providers/meta",
            serde_json::json!({"settings": {"base_url": "http://127.0.0.1:9", "phone_number_id": "123456"},
                               "secrets": {"access_token": secrets[0], "app_secret": secrets[1], "verify_token": secrets[2]}}),
        )
        .await
        .unwrap();
        assert!(set.status().is_success());
        let shown = set.text().await.unwrap();
        call(
            "PUT",
            "/v1/tenants/acme/bots/sales/providers/twilio",
            serde_json::json!({"settings": {"base_url": "http://127.0.0.1:9", "account_sid": "AC1", "from": "+14155238886", "public_url": "https://x.example/webhook"},
                               "secrets": {"auth_token": secrets[3]}}),
        )
        .await
        .unwrap();
        let probe = call("POST", "/v1/tenants/acme/bots/sales/providers/meta/test", serde_json::Value::Null)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // A signed inbound message (answered: the replies fail on both providers), a
        // badly signed one, and a challenge with the wrong token.
        let body = serde_json::to_vec(&serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1555", "phone_number_id": "123456"},
            "contacts": [{"wa_id": "15551230000"}],
            "messages": [{"from": "15551230000", "id": "wamid.LOG1", "timestamp": "1730231903", "type": "text", "text": {"body": "hello"}}]}}]}]}))
        .unwrap();
        let signature = format!(
            "sha256={}",
            dashd::adapter::signature::hex(&dashd::adapter::signature::hmac_sha256(secrets[1].as_bytes(), &body))
        );
        let http = reqwest::Client::new();
        let url = format!("http://{listen}/webhook/meta/{}", bot["id"].as_str().unwrap());
        let ok = http.post(&url).header("x-hub-signature-256", signature).body(body.clone()).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        let bad = http.post(&url).header("x-hub-signature-256", "sha256=00").body(body).send().await.unwrap();
        assert_eq!(bad.status(), 401);
        let challenge = http.get(format!("{url}?hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope")).send().await.unwrap();
        assert!(challenge.status().is_client_error());
        // Give the replies time to fail on both providers.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for secret in secrets {
            assert!(!shown.contains(secret) && !probe.contains(secret));
        }
    });
    signal(&running.0, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut running.0, Duration::from_secs(15)).success());
    let log = std::fs::read_to_string(dir.path().join("dashd.log")).unwrap();
    assert!(log.contains("DEBUG"), "debug logging is on");
    assert!(
        log.contains("send failed"),
        "the failing sends were logged: {log}"
    );
    let key = std::fs::read_to_string(dir.path().join("dashd-data/master.key")).unwrap();
    assert_eq!(log.matches("generated a master key").count(), 1, "{log}");
    let data = std::fs::read(dir.path().join("dashd-data/dashd.db")).unwrap();
    for secret in secrets.iter().chain([&key.trim()]) {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(
            !data.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the database"
        );
    }
}

#[test]
fn a_wrong_master_key_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, _) = start_debug(dir.path());
    signal(&running.0, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut running.0, Duration::from_secs(15)).success());
    let key = dir.path().join("dashd-data/master.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let (code, _, stderr) = output(dashd(dir.path()).args(["--listen", "127.0.0.1:0"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("master key does not match"), "{stderr}");
    std::fs::write(&key, "not a key").unwrap();
    let (code, _, stderr) = output(dashd(dir.path()).args(["--listen", "127.0.0.1:0"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("32 bytes"), "{stderr}");
}
