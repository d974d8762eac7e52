//! Crash recovery with the real `dashd` binary, counting the provider's send calls (the
//! sandbox counts every call, duplicates included): `kill -9` with outbox entries pending
//! and in flight loses nothing and sends again at most what was in flight at the kill;
//! SIGTERM under load sends nothing twice; a flow timer due while dashd was down fires
//! after the restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, env: &[(&str, &str)]) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dashd"));
    command
        .current_dir(dir)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
    for (name, _) in std::env::vars() {
        if name.starts_with("DASHD_") || name == "NOTIFY_SOCKET" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dashd.log"))
        .unwrap();
    let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    // A socket file left by a killed dashd exists before the new one listens: wait
    // until something answers on it.
    while std::os::unix::net::UnixStream::connect(socket(dir)).is_err() {
        assert!(
            Instant::now() < deadline,
            "dashd did not start: {}",
            std::fs::read_to_string(dir.join("dashd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("dashd-data/dashd.sock")
}

fn kill_9(mut running: Running) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    running.0.wait().unwrap();
}

struct Admin {
    client: reqwest::Client,
}

impl Admin {
    fn new(dir: &Path) -> Admin {
        Admin {
            client: reqwest::Client::builder()
                .unix_socket(socket(dir))
                .build()
                .unwrap(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("http://dashd{path}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    async fn states(&self) -> Vec<String> {
        let queue = self.call("GET", "/v1/queue?limit=1000", None).await;
        queue
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["state"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn sqlite(dir: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.join("dashd-data/dashd.db").display()
    ))
    .await
    .unwrap()
}

/// Send calls the sandbox received: (distinct messages, calls in all).
async fn send_calls(pool: &sqlx::SqlitePool) -> (i64, i64) {
    sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(calls), 0) FROM sandbox_messages")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Slow sends, so that some are in flight when dashd is stopped.
const SLOW_SENDS: [(&str, &str); 3] = [
    ("DASHD_SANDBOX_SEND_DELAY_MS", "400"),
    ("DASHD_DISPATCHER_CONCURRENCY", "4"),
    ("DASHD_DISPATCHER_BOT_RATE_PER_MINUTE", "0"),
];

/// Starts dashd, queues 40 messages to 8 contacts, and returns once some are sent while
/// others are in flight and others pending.
async fn dashd_mid_send(dir: &Path) -> (Running, Vec<String>) {
    let first = start(dir, &SLOW_SENDS);
    let admin = Admin::new(dir);
    admin
        .call("POST", "/v1/tenants", Some(json!({"slug": "acme"})))
        .await;
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots",
            Some(json!({"name": "ventas"})),
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..40 {
        // Several contacts, so several sends run at once.
        let to = format!("+54911000000{:02}", i % 8);
        let record = admin
            .call(
                "POST",
                "/v1/tenants/acme/bots/ventas/messages",
                Some(json!({"to": to, "text": format!("m{i}")})),
            )
            .await;
        ids.push(record["id"].as_str().unwrap().to_owned());
    }
    // Wait until some are sent while others are still pending or being sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states = admin.states().await;
        let sent = states.iter().filter(|s| *s == "sent").count();
        if sent >= 4 && states.iter().any(|s| s == "processing") {
            assert!(states.iter().any(|s| s == "pending"), "{states:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (first, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_resends_at_most_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let env = SLOW_SENDS;
    let (first, mut ids) = dashd_mid_send(dir.path()).await;
    kill_9(first);

    let pool = sqlite(dir.path()).await;
    let in_flight: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE state = 'processing'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(in_flight > 0, "nothing was in flight at the kill");
    pool.close().await;

    let _second = start(dir.path(), &env);
    let admin = Admin::new(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while admin.states().await.iter().any(|s| s != "sent") {
        assert!(Instant::now() < deadline, "{:?}", admin.states().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = sqlite(dir.path()).await;
    let delivered: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_key FROM sandbox_messages ORDER BY idempotency_key")
            .fetch_all(&pool)
            .await
            .unwrap();
    ids.sort();
    assert_eq!(delivered, ids, "every message delivered");
    // A real provider takes no idempotency key: what was in flight at the kill may have
    // reached it and is sent again; nothing else is.
    let (messages, calls) = send_calls(&pool).await;
    eprintln!(
        "kill -9: {in_flight} in flight at the kill, {} sent twice, {messages} delivered",
        calls - messages
    );
    assert_eq!(messages, 40);
    assert!(
        calls - messages <= in_flight,
        "{} sent twice, but only {in_flight} were in flight",
        calls - messages
    );
    let recovered: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM message_events WHERE detail = 'recovered after a restart'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(recovered > 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_sends_in_flight_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, mut ids) = dashd_mid_send(dir.path()).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = first.0.wait().unwrap();
    assert!(status.success(), "dashd exited with {status}");
    let pool = sqlite(dir.path()).await;
    let in_flight: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE state = 'processing'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        in_flight, 0,
        "a send in flight was abandoned by a graceful stop"
    );
    pool.close().await;

    let _second = start(dir.path(), &SLOW_SENDS);
    let admin = Admin::new(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while admin.states().await.iter().any(|s| s != "sent") {
        assert!(Instant::now() < deadline, "{:?}", admin.states().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = sqlite(dir.path()).await;
    let mut delivered: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_key FROM sandbox_messages")
            .fetch_all(&pool)
            .await
            .unwrap();
    delivered.sort();
    ids.sort();
    assert_eq!(delivered, ids, "every message delivered");
    let (messages, calls) = send_calls(&pool).await;
    assert_eq!(calls, messages, "a graceful stop sent something twice");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_due_during_downtime_fires_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &[]);
    let admin = Admin::new(dir.path());
    admin
        .call("POST", "/v1/tenants", Some(json!({"slug": "acme"})))
        .await;
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots",
            Some(json!({"name": "ventas"})),
        )
        .await;
    let flow = r#"
[[flows]]
id = "ask"
triggers = [{ keywords = ["hola"] }]
idle = { after = "10m", reminder = "¿Seguís ahí?" }
steps = [
  { id = "q", kind = "question", text = "¿Tu nombre?", var = "name" },
  { id = "bye", kind = "end", text = "Gracias {{ vars.name }}" },
]
"#;
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots/ventas/flows",
            Some(json!({"source": flow, "activate": true})),
        )
        .await;
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots/ventas/sandbox/messages",
            Some(json!({"from": "+5491100000001", "text": "hola"})),
        )
        .await;
    let pool = sqlite(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let timers: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM flow_timers WHERE kind = 'IdleReminder'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if timers == 1 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first); // stops dashd (SIGKILL)
    // Ten minutes pass while dashd is down.
    sqlx::query("UPDATE flow_timers SET due_ms = due_ms - 600000")
        .execute(&pool)
        .await
        .unwrap();
    let reminders = || async {
        let texts: Vec<String> =
            sqlx::query_scalar("SELECT json_extract(body, '$.text') FROM sandbox_messages")
                .fetch_all(&pool)
                .await
                .unwrap();
        texts.iter().filter(|t| *t == "¿Seguís ahí?").count()
    };
    assert_eq!(reminders().await, 0);
    let _second = start(dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reminders().await == 0 {
        assert!(Instant::now() < deadline, "the reminder never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The conversation goes on where it was.
    let admin = Admin::new(dir.path());
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots/ventas/sandbox/messages",
            Some(json!({"from": "+5491100000001", "text": "Ana"})),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last: Option<String> = sqlx::query_scalar("SELECT json_extract(body, '$.text') FROM sandbox_messages ORDER BY created_at DESC LIMIT 1")
            .fetch_optional(&pool)
            .await
            .unwrap();
        if last.as_deref() == Some("Gracias Ana") {
            break;
        }
        assert!(Instant::now() < deadline, "{last:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
}

/// A message that brought dashd down while it was being handled is counted at each
/// start, and given up (marked failed, the conversation going on) after
/// `pipeline.max_attempts` starts: no crash loop. The crashes are stood for by setting
/// the stored count to what two earlier crashes would have left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_crashing_dashd_is_given_up_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &[]);
    let admin = Admin::new(dir.path());
    admin
        .call("POST", "/v1/tenants", Some(json!({"slug": "acme"})))
        .await;
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots",
            Some(json!({"name": "ventas"})),
        )
        .await;
    let accepted = admin
        .call(
            "POST",
            "/v1/tenants/acme/bots/ventas/sandbox/messages",
            Some(json!({"from": "+5491100000001", "text": "deadly"})),
        )
        .await;
    let id = accepted["message_id"].as_str().unwrap().to_owned();
    kill_9(first);
    let pool = sqlite(dir.path()).await;
    // Two starts already died on it, and it is still `received` (as a crash while it
    // was being handled would have left it).
    sqlx::query("UPDATE messages SET attempts = 2, state = 'received' WHERE id = ?")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    let _second = start(dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (state, error): (String, Option<String>) =
            sqlx::query_as("SELECT state, last_error FROM messages WHERE id = ?")
                .bind(&id)
                .fetch_one(&pool)
                .await
                .unwrap();
        if state == "failed" {
            let error = error.unwrap_or_default();
            assert!(error.contains("did not finish"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "still {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
}

/// A flow that answers every message with its text.
const ECHO: &str = r#"
default_flow = "echo"
[[flows]]
id = "echo"
steps = [{ id = "say", kind = "end", text = "{{ input }}" }]
"#;

/// Tenant `acme` with the bot `ventas`, answering through the echo flow.
async fn echo_bot(admin: &Admin) {
    admin
        .call("POST", "/v1/tenants", Some(json!({"slug": "acme"})))
        .await;
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots",
            Some(json!({"name": "ventas"})),
        )
        .await;
    admin
        .call(
            "POST",
            "/v1/tenants/acme/bots/ventas/flows",
            Some(json!({"source": ECHO, "activate": true})),
        )
        .await;
}

/// Messages acknowledged by dashd (202), with when.
type Acknowledged = std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>>;

/// `count` senders posting to the echo bot through the sandbox, each from its own
/// contact, `pause` apart, until `stop` is cancelled or dashd is gone. A 503 (busy) is
/// not an acknowledgement; a sender goes on after it.
fn spawn_senders(
    dir: &Path,
    count: usize,
    pause: Duration,
    stop: &tokio_util::sync::CancellationToken,
) -> (Acknowledged, Vec<tokio::task::JoinHandle<()>>) {
    let acknowledged = Acknowledged::default();
    let senders = (0..count)
        .map(|sender| {
            let client = Admin::new(dir).client;
            let acknowledged = std::sync::Arc::clone(&acknowledged);
            let stop = stop.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.is_cancelled() {
                        return;
                    }
                    let text = format!("s{sender}-{i}");
                    let answer = client
                        .post("http://dashd/v1/tenants/acme/bots/ventas/sandbox/messages")
                        .json(&json!({"from": format!("+549110000{sender:03}"), "text": text, "message_id": text}))
                        .send()
                        .await;
                    match answer {
                        Ok(answer) if answer.status().as_u16() == 202 => {
                            acknowledged.lock().unwrap().push((text, Instant::now()));
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    (acknowledged, senders)
}

/// `kill -9` while inbound messages are being group-committed under load: every message
/// whose delivery was acknowledged (202) is answered after the restart, exactly once;
/// nothing acknowledged is lost in a commit the kill cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_group_commits_loses_no_acknowledged_message() {
    const SENDERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let unlimited = [("DASHD_DISPATCHER_BOT_RATE_PER_MINUTE", "0")];
    let first = start(dir.path(), &unlimited);
    echo_bot(&Admin::new(dir.path())).await;
    // Senders deliver as fast as dashd acknowledges until dashd is gone; what was
    // acknowledged is kept.
    let (acknowledged, senders) = spawn_senders(
        dir.path(),
        SENDERS,
        Duration::ZERO,
        &tokio_util::sync::CancellationToken::new(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill_9(first);
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged: Vec<String> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .map(|(text, _)| text.clone())
        .collect();
    assert!(
        acknowledged.len() >= 50,
        "only {} messages acknowledged before the kill",
        acknowledged.len()
    );

    let _second = start(dir.path(), &unlimited);
    let pool = sqlite(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let replies: Vec<(String, i64)> = sqlx::query_as(
            "SELECT json_extract(body, '$.text'), COUNT(*) FROM sandbox_messages GROUP BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let replies: std::collections::HashMap<String, i64> = replies.into_iter().collect();
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|text| !replies.contains_key(*text))
            .collect();
        if missing.is_empty() {
            let twice: Vec<(&String, &i64)> = replies.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "answered more than once: {twice:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages never answered, e.g. {:?}",
            missing.len(),
            acknowledged.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The REST API's idempotent send: the same request under one `Idempotency-Key` queues
/// one message, also when dashd is killed with -9 between the two calls; a different
/// request under the key is refused.
#[tokio::test]
async fn an_idempotent_send_survives_kill_9_between_its_two_calls() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &[]);
    let admin = Admin::new(dir.path());
    admin
        .call("POST", "/v1/tenants", Some(json!({"slug": "acme"})))
        .await;
    let bot = admin
        .call(
            "POST",
            "/v1/tenants/acme/bots",
            Some(json!({"name": "shop"})),
        )
        .await;
    let bot_id = bot["id"].as_str().unwrap().to_owned();
    let key = admin
        .call(
            "POST",
            "/v1/keys",
            Some(json!({"tenant": "acme", "name": "erp", "scopes": ["messages:send"]})),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = |body: Value| {
        let key = key.clone();
        let bot_id = bot_id.clone();
        let dir = dir.path().to_owned();
        async move {
            let admin = Admin::new(&dir);
            let status = admin.call("GET", "/v1/status", None).await;
            let listen = status["listen"].as_str().unwrap().to_owned();
            reqwest::Client::new()
                .post(format!("http://{listen}/api/v1/bots/{bot_id}/messages"))
                .bearer_auth(&key)
                .header("idempotency-key", "order-1001-confirmation")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let body = json!({"to": "+5491100000001", "text": "Your order 1001 is confirmed"});
    let created = send(body.clone()).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    kill_9(first);

    let _second = start(dir.path(), &[]);
    let again = send(body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], created["id"]);
    let other = send(json!({"to": "+5491100000001", "text": "something else"})).await;
    assert_eq!(other.status(), 409);
    let queued = admin
        .call("GET", &format!("/v1/queue?bot={bot_id}&limit=100"), None)
        .await;
    assert_eq!(queued.as_array().unwrap().len(), 1, "{queued}");
}

/// `dashd backup` while messages pour in and replies queue behind slow sends, then
/// `dashd restore` into a new data directory (with the master key copied separately, as
/// the operator's guide says): every message acknowledged before the backup began is in
/// the restored database, and the restored daemon sends the replies the backup caught
/// still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_message_and_resumes_the_outbox() {
    const SENDERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let slow = [
        ("DASHD_SANDBOX_SEND_DELAY_MS", "300"),
        ("DASHD_DISPATCHER_CONCURRENCY", "2"),
        ("DASHD_DISPATCHER_BOT_RATE_PER_MINUTE", "0"),
    ];
    let first = start(dir.path(), &slow);
    echo_bot(&Admin::new(dir.path())).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let (acknowledged, senders) =
        spawn_senders(dir.path(), SENDERS, Duration::from_millis(5), &stop);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let archive = dir.path().join("backup.tar.gz");
    let began = Instant::now();
    let backup = tokio::process::Command::new(env!("CARGO_BIN_EXE_dashd"))
        .current_dir(dir.path())
        .args(["backup", "--out"])
        .arg(&archive)
        .env_remove("DASHD_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    // An archive inside the data directory would be archived and restored as data: refused.
    let inside = Command::new(env!("CARGO_BIN_EXE_dashd"))
        .current_dir(dir.path())
        .args(["backup", "--out", "dashd-data/backup.tar.gz"])
        .env_remove("DASHD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(inside.status.code(), Some(1));
    assert!(!dir.path().join("dashd-data/backup.tar.gz").exists());
    // A restore over a running daemon's data is refused, and changes nothing.
    let refused = Command::new(env!("CARGO_BIN_EXE_dashd"))
        .current_dir(dir.path())
        .args(["restore", "--force"])
        .arg(&archive)
        .env_remove("DASHD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("a dashd is running"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !std::fs::read_dir(dir.path().join("dashd-data"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("before-restore"))
    );
    // The load goes on a little after the backup, then the first daemon goes away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for sender in senders {
        sender.await.unwrap();
    }
    kill_9(first);
    let before: Vec<String> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < began)
        .map(|(text, _)| text.clone())
        .collect();
    assert!(
        before.len() >= 20,
        "only {} messages acknowledged before the backup",
        before.len()
    );

    let restored = tempfile::tempdir().unwrap();
    let restore = Command::new(env!("CARGO_BIN_EXE_dashd"))
        .current_dir(restored.path())
        .arg("restore")
        .arg(&archive)
        .env_remove("DASHD_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&restore.stderr);
    assert!(restore.status.success(), "{stderr}");
    assert!(stderr.contains("no master key"), "{stderr}");
    assert!(!restored.path().join("dashd-data/master.key").exists());
    std::fs::copy(
        dir.path().join("dashd-data/master.key"),
        restored.path().join("dashd-data/master.key"),
    )
    .unwrap();

    let pool = sqlite(restored.path()).await;
    let inbound: std::collections::HashSet<String> = sqlx::query_scalar(
        "SELECT json_extract(body, '$.text') FROM messages WHERE direction = 'in'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let lost: Vec<&String> = before.iter().filter(|t| !inbound.contains(*t)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages missing from the backup, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let queued: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE direction = 'out' AND state IN ('pending', 'processing')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        queued > 0,
        "the backup caught no reply still queued: the test proves nothing"
    );
    pool.close().await;

    let _second = start(
        restored.path(),
        &[("DASHD_DISPATCHER_BOT_RATE_PER_MINUTE", "0")],
    );
    let pool = sqlite(restored.path()).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let sent: std::collections::HashSet<String> = sqlx::query_scalar(
            "SELECT json_extract(body, '$.text') FROM messages WHERE direction = 'out' AND state = 'sent'",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        let unanswered: Vec<&String> = before.iter().filter(|t| !sent.contains(*t)).collect();
        if unanswered.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} restored messages never answered, e.g. {:?}",
            unanswered.len(),
            &unanswered[..unanswered.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
