//! `make bench`: drives a real dashd (the release binary, its admin socket on loopback,
//! the sandbox provider) as a user would, and reports start-up time, latency from an
//! inbound message to its reply being dispatched at a fixed offered load, throughput,
//! and resident memory with 10, 1,000 and 10,000 bots. Prints JSON and writes
//! docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark program

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

#[path = "support/cloud_api.rs"]
mod cloud_api;
#[path = "support/matrix.rs"]
mod matrix;

pub(crate) const ECHO: &str = r#"
default_flow = "echo"
[[flows]]
id = "echo"
steps = [{ id = "say", kind = "end", text = "{{ input }}" }]
"#;

pub(crate) struct Dashd {
    child: Child,
    dir: PathBuf,
}

impl Drop for Dashd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Dashd {
    /// Starts dashd and returns it with the time it took to report ready.
    fn start(dir: &Path, env: &[(&str, &str)]) -> (Dashd, Duration) {
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let started = Instant::now();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dashd"));
        command
            .current_dir(dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-level",
                "warn",
                "--log-format",
                "json",
            ])
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            // A partial run (BENCH_ONLY) shows dashd's warnings.
            .stderr(if std::env::var_os("BENCH_ONLY").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let child = command.spawn().unwrap();
        let mut buf = [0u8; 64];
        loop {
            match notify.recv(&mut buf) {
                Ok(_) => break,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => panic!("dashd never became ready: {err}"),
            }
        }
        (
            Dashd {
                child,
                dir: dir.to_owned(),
            },
            started.elapsed(),
        )
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The public listener's address, from the admin API's status.
    async fn http_addr(&self) -> String {
        let status = call(&self.client(), "GET", "/v1/status", Value::Null).await;
        status["listen"].as_str().unwrap().to_owned()
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .unix_socket(self.dir.join("dashd-data/dashd.sock"))
            .build()
            .unwrap()
    }
}

/// The phases of the load matrix, in order.
const MATRIX: [matrix::Load; 6] = [
    matrix::Load::Closed(1),
    matrix::Load::Closed(10),
    matrix::Load::Closed(50),
    matrix::Load::Open(100),
    matrix::Load::Open(1_000),
    matrix::Load::Open(5_000),
];

/// The load matrix on SQLite and, when a server answers, on PostgreSQL (a database of
/// its own, migrated with `dashd migrate`, dropped after), each phase `seconds` long,
/// against the echo ceiling measured first in the same run. Default backlog bounds and
/// rate limits, except the per-bot limit (off: one bot takes every message).
async fn load_matrix(seconds: u64) -> Value {
    let ceiling = cloud_api::ceiling(60_000).await;
    let env = [("DASHD_DISPATCHER_BOT_RATE_PER_MINUTE", "0")];
    let dir = tempfile::tempdir().unwrap();
    let (dashd, _) = Dashd::start(dir.path(), &env);
    let addr = dashd.http_addr().await;
    let sqlite = matrix::run(&dashd, &addr, &MATRIX, seconds, ceiling).await;
    drop(dashd);

    let admin_url = std::env::var("DASHD_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let postgres = match postgres_database(&admin_url).await {
        Some((url, name)) => {
            let dir = tempfile::tempdir().unwrap();
            let status = Command::new(env!("CARGO_BIN_EXE_dashd"))
                .arg("migrate")
                .current_dir(dir.path())
                .env("DASHD_DATABASE_URL", &url)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "dashd migrate failed");
            let mut env = env.to_vec();
            env.push(("DASHD_DATABASE_URL", &url));
            let (dashd, _) = Dashd::start(dir.path(), &env);
            let addr = dashd.http_addr().await;
            let phases = matrix::run(&dashd, &addr, &MATRIX, seconds, ceiling).await;
            drop(dashd);
            drop_database(&admin_url, &name).await;
            json!(phases)
        }
        None => {
            eprintln!(
                "PostgreSQL at {admin_url} is not reachable: its load matrix is not measured"
            );
            Value::Null
        }
    };
    json!({
        "phase_seconds": seconds,
        "ceiling_requests_per_s": round(ceiling),
        "sqlite": sqlite,
        "postgres": postgres,
    })
}

/// A fresh database on the PostgreSQL server at `admin_url`: (its URL, its name).
async fn postgres_database(admin_url: &str) -> Option<(String, String)> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url).await.ok()?;
    let name = format!("dashd_bench_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut admin)
    .await
    .ok()?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .ok()?;
    let (base, _) = admin_url.rsplit_once('/')?;
    Some((format!("{base}/{name}"), name))
}

async fn drop_database(admin_url: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}

pub(crate) async fn call(client: &reqwest::Client, method: &str, path: &str, body: Value) -> Value {
    let response = client
        .request(method.parse().unwrap(), format!("http://dashd{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {value}");
    value
}

/// Creates bots `b{from}`..`b{to}` with the echo flow, 16 requests at a time.
async fn create_bots(client: &reqwest::Client, from: usize, to: usize) {
    let slots = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in from..to {
        let client = client.clone();
        let slot = slots.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            call(
                &client,
                "POST",
                "/v1/tenants/bench/bots",
                json!({"name": format!("b{i}")}),
            )
            .await;
            call(
                &client,
                "POST",
                &format!("/v1/tenants/bench/bots/b{i}/flows"),
                json!({"source": ECHO, "activate": true}),
            )
            .await;
            drop(slot);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Reply arrival times, by contact, from one stream per bot.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Watches every sandbox reply through the admin API's feed.
async fn watch(client: &reqwest::Client, arrivals: Arrivals) {
    let mut response = client
        .get("http://dashd/v1/sandbox/stream")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    tokio::spawn(async move {
        let mut buffer = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let now = Instant::now();
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                if event["type"] == "reply" {
                    let contact = event["contact"].as_str().unwrap_or_default().to_owned();
                    arrivals.lock().unwrap().insert(contact, now);
                }
            }
        }
    });
}

/// Sends one message, waiting as told and sending again while intake answers 503.
async fn send(client: &reqwest::Client, bot: usize, contact: &str) {
    while try_send(client, bot, contact).await.is_some() {}
}

/// One attempt: `None` when accepted, the `Retry-After` wait when intake is busy.
async fn try_send(client: &reqwest::Client, bot: usize, contact: &str) -> Option<Duration> {
    let response = client
        .post(format!(
            "http://dashd/v1/tenants/bench/bots/b{bot}/sandbox/messages"
        ))
        .json(&json!({"from": contact, "text": "ping"}))
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        202 => None,
        503 => {
            let seconds: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            Some(Duration::from_secs(seconds))
        }
        status => panic!("sandbox message: {status}"),
    }
}

/// Unpaced load: 64 senders each sending as fast as intake takes it for `seconds`, to
/// `bots` bots; a 503 is counted and the sender moves on after `Retry-After`. Reports
/// what was refused, the latency of what was accepted, and what was lost.
async fn flood(dashd: &Dashd, bots: usize, seconds: u64) -> Value {
    let client = dashd.client();
    let arrivals: Arrivals = Arc::default();
    watch(&client, arrivals.clone()).await;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for sender in 0..64usize {
        let client = client.clone();
        let sent = sent.clone();
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < end {
                let contact = format!("+1777{sender:03}{n:06}");
                let at = Instant::now();
                match try_send(&client, (sender + n) % bots, &contact).await {
                    None => {
                        sent.lock().unwrap().insert(contact, at);
                    }
                    Some(_) => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                n += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let accepted = sent.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while arrivals.lock().unwrap().len() < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = sent.lock().unwrap();
    let arrivals = arrivals.lock().unwrap();
    let mut ms: Vec<f64> = sent
        .iter()
        .filter_map(|(contact, at)| {
            arrivals
                .get(contact)
                .map(|r| r.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "bots": bots,
        "seconds": seconds,
        "accepted": accepted,
        "refused_503": refused.load(std::sync::atomic::Ordering::Relaxed),
        "lost": accepted - ms.len(),
        "p50_ms": round(percentile(&ms, 0.50)),
        "p99_ms": round(percentile(&ms, 0.99)),
        "max_ms": round(ms[ms.len() - 1]),
    })
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn wait_for(arrivals: &Arrivals, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while arrivals.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} replies arrived",
            arrivals.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fixed offered load: `bots` bots each receiving one message per second for `seconds`.
async fn latency(dashd: &Dashd, bots: usize, seconds: usize) -> Value {
    let client = dashd.client();
    let arrivals: Arrivals = Arc::default();
    watch(&client, arrivals.clone()).await;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    let total = bots * seconds;
    let interval = Duration::from_secs(1).div_f64(bots as f64);
    let mut tasks = Vec::new();
    for n in 0..total {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + interval * n as u32)).await;
        let client = client.clone();
        let sent = sent.clone();
        let contact = format!("+1555{:07}", n);
        tasks.push(tokio::spawn(async move {
            sent.lock().unwrap().insert(contact.clone(), Instant::now());
            send(&client, n % bots, &contact).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    wait_for(&arrivals, total, Duration::from_secs(60)).await;
    let sent = sent.lock().unwrap();
    let arrivals = arrivals.lock().unwrap();
    let mut ms: Vec<f64> = sent
        .iter()
        .map(|(contact, at)| arrivals[contact].duration_since(*at).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "bots": bots,
        "offered_msgs_per_s": bots,
        "messages": total,
        "p50_ms": round(percentile(&ms, 0.50)),
        "p95_ms": round(percentile(&ms, 0.95)),
        "p99_ms": round(percentile(&ms, 0.99)),
        "max_ms": round(ms[ms.len() - 1]),
    })
}

/// As fast as possible: `total` messages spread over `bots` bots, 64 in flight.
async fn throughput(dashd: &Dashd, bots: usize, total: usize) -> Value {
    let client = dashd.client();
    let arrivals: Arrivals = Arc::default();
    watch(&client, arrivals.clone()).await;
    let slots = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..total {
        let slot = slots.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            send(&client, n % bots, &format!("+1666{:07}", n)).await;
            drop(slot);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let accepted = start.elapsed();
    wait_for(&arrivals, total, Duration::from_secs(300)).await;
    let elapsed = start.elapsed();
    json!({
        "bots": bots,
        "messages": total,
        "seconds": round(elapsed.as_secs_f64()),
        "replies_per_s": round(total as f64 / elapsed.as_secs_f64()),
        "inbound_accepted_per_s": round(total as f64 / accepted.as_secs_f64()),
    })
}

pub(crate) fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} × {cpu}")
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks for benchmark names; there are none to list.
    }
    let begun = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let unlimited = [("DASHD_DISPATCHER_BOT_RATE_PER_MINUTE", "0")];
    // `BENCH_ONLY=throughput` (or `flood`, 20 s) `cargo bench -p dashd --bench pipeline`:
    // that run alone, printed with dashd's warnings, not written to the docs (for trying
    // a change quickly).
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        let (dashd, _) = Dashd::start(dir.path(), &[]);
        let client = dashd.client();
        call(&client, "POST", "/v1/tenants", json!({"slug": "bench"})).await;
        create_bots(&client, 0, 100).await;
        drop(dashd);
        let raw = [
            ("DASHD_DISPATCHER_BOT_RATE_PER_MINUTE", "0"),
            ("DASHD_PIPELINE_MAX_BACKLOG", "1000000"),
            ("DASHD_PIPELINE_MAX_BACKLOG_PER_BOT", "1000000"),
        ];
        let result = if only == "matrix" {
            let seconds = std::env::var("BENCH_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(20);
            load_matrix(seconds).await
        } else if only == "real" {
            let (dashd, _) = Dashd::start(dir.path(), &raw);
            let addr = dashd.http_addr().await;
            cloud_api::run(&dashd, &addr, 100, 10, 3_000).await
        } else if only == "flood" {
            let (dashd, _) = Dashd::start(dir.path(), &unlimited);
            flood(&dashd, 100, 20).await
        } else {
            let (dashd, _) = Dashd::start(dir.path(), &raw);
            throughput(&dashd, 100, 5_000).await
        };
        println!("{result}");
        return;
    }

    // Start-up of an empty data directory (median of 3).
    let mut startups = Vec::new();
    for _ in 0..3 {
        let fresh = tempfile::tempdir().unwrap();
        let (dashd, ready) = Dashd::start(fresh.path(), &[]);
        startups.push(ready.as_secs_f64() * 1000.0);
        drop(dashd);
    }
    startups.sort_by(f64::total_cmp);

    let (dashd, _) = Dashd::start(dir.path(), &[]);
    let client = dashd.client();
    call(&client, "POST", "/v1/tenants", json!({"slug": "bench"})).await;
    create_bots(&client, 0, 10).await;
    let (rss_10_idle, _) = dashd.memory();

    // Fixed offered load with the default limits: 100 bots × 60 messages a minute.
    create_bots(&client, 10, 100).await;
    // 65 s: the per-bot window of 60 a minute fills and rolls over.
    let fixed = latency(&dashd, 100, 65).await;
    drop(dashd);

    // Throughput without the per-bot limit, and with the backlog bounds out of the way:
    // the ceiling the flood below is compared with.
    let raw = [
        ("DASHD_DISPATCHER_BOT_RATE_PER_MINUTE", "0"),
        ("DASHD_PIPELINE_MAX_BACKLOG", "1000000"),
        ("DASHD_PIPELINE_MAX_BACKLOG_PER_BOT", "1000000"),
    ];
    let (dashd, _) = Dashd::start(dir.path(), &raw);
    let burst = throughput(&dashd, 100, 10_000).await;
    let (_, hwm_100) = dashd.memory();
    drop(dashd);

    // Unpaced load for 60 s, default backlog bounds, per-bot limit off.
    let (dashd, _) = Dashd::start(dir.path(), &unlimited);
    let flooded = flood(&dashd, 100, 60).await;
    drop(dashd);

    // The real path: signed Cloud API webhooks in, replies to a loopback Graph server.
    let fresh = tempfile::tempdir().unwrap();
    let (dashd, _) = Dashd::start(fresh.path(), &raw);
    let addr = dashd.http_addr().await;
    let real = cloud_api::run(&dashd, &addr, 100, 20, 5_000).await;
    drop(dashd);

    // The load matrix: closed and open loops on SQLite and PostgreSQL, 20 s a phase.
    let matrix = load_matrix(20).await;

    // Memory with 10, 1,000 and 10,000 bots, each having handled a message.
    let mut memory = Vec::new();
    for (bots, from) in [(10usize, 0usize), (1_000, 100), (10_000, 1_000)] {
        let (dashd, ready) = Dashd::start(dir.path(), &unlimited);
        let client = dashd.client();
        if from < bots && bots > 100 {
            create_bots(&client, from, bots).await;
        }
        let before = dashd.memory();
        let round_trip = throughput(&dashd, bots, bots).await;
        let (rss, hwm) = dashd.memory();
        memory.push(json!({
            "bots": bots,
            "startup_ms": round(ready.as_secs_f64() * 1000.0),
            "rss_idle_mb": round(before.0),
            "rss_after_one_message_each_mb": round(rss),
            "peak_rss_mb": round(hwm),
            "peak_rss_per_bot_kb": round(hwm * 1024.0 / bots as f64),
            "round_trip_s": round_trip["seconds"],
        }));
        drop(dashd);
    }

    let report = json!({
        "machine": machine(),
        "dashd": env!("CARGO_PKG_VERSION"),
        "startup_ms_empty": round(startups[1]),
        "rss_10_bots_idle_mb": round(rss_10_idle),
        "latency_fixed_load": fixed,
        "throughput": burst,
        "peak_rss_during_throughput_mb": round(hwm_100),
        "flood": flooded,
        "cloud_api": real,
        "matrix": matrix,
        "memory": memory,
        "bench_seconds": round(begun.elapsed().as_secs_f64()),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    write_report(&report);
}

fn write_report(r: &Value) {
    let mut memory_rows = String::new();
    for m in r["memory"].as_array().unwrap() {
        memory_rows.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            m["bots"],
            m["startup_ms"],
            m["rss_idle_mb"],
            m["rss_after_one_message_each_mb"],
            m["peak_rss_mb"],
            m["peak_rss_per_bot_kb"]
        ));
    }
    let x = &r["matrix"];
    let mut matrix_rows = String::new();
    for backend in ["sqlite", "postgres"] {
        let Some(phases) = x[backend].as_array() else {
            matrix_rows.push_str(&format!(
                "| {backend} | not measured (server unreachable) ||||||||||||\n"
            ));
            continue;
        };
        for p in phases {
            let load = if p["loop"] == "closed" {
                format!("closed, {} users", p["users_or_rate"])
            } else {
                format!("open, {}/s", p["users_or_rate"])
            };
            matrix_rows.push_str(&format!(
                "| {backend} | {load} | {} | {} | {} | {} / {} / {} / {} | {} | {} | {} | {} | {} | {} |\n",
                p["msgs_per_s"],
                p["accepted"],
                p["refused_503"],
                p["p50_ms"],
                p["p95_ms"],
                p["p99_ms"],
                p["max_ms"],
                p["lost"],
                p["duplicated"],
                p["order_violations"],
                p["peak_rss_mb"],
                p["cpu_percent"],
                p["ratio_to_ceiling"],
            ));
        }
    }
    let l = &r["latency_fixed_load"];
    let t = &r["throughput"];
    let f = &r["flood"];
    let c = &r["cloud_api"];
    // The documented bound on an accepted message's wait: the default backlog (2000)
    // drained at the throughput measured in this same run.
    let bound_ms = 2000.0 / t["replies_per_s"].as_f64().unwrap_or(1.0) * 1000.0;
    let ratio = f["p99_ms"].as_f64().unwrap_or(0.0) / bound_ms;
    let text = format!(
        "# Performance\n\n\
         Figures from `make bench` (crates/dashd/benches/pipeline.rs): the release `dashd`\n\
         binary driven through its admin socket, on the embedded SQLite default, with the\n\
         sandbox provider. Each reply is an inbound message through the whole pipeline:\n\
         stored (deduplicated), handled by a conversation worker running the flow engine,\n\
         the reply committed to the outbox with the new state, dispatched through the\n\
         provider chain, and received by the client on the sandbox stream.\n\n\
         Machine: {machine}. This machine is shared and noisy: compare figures from the same\n\
         run, and treat absolute numbers as indicative.\n\n\
         ## Latency at a fixed offered load\n\n\
         {bots} bots, each sent one message a second ({offered} messages/s in all, the seeds'\n\
         target of 100 bots × 60 messages a minute), default rate limits, {n} messages:\n\n\
         | p50 | p95 | p99 | max |\n|---|---|---|---|\n| {p50} ms | {p95} ms | {p99} ms | {max} ms |\n\n\
         Target from the seeds: p95 under 50 ms.\n\n\
         ## Throughput\n\n\
         {tn} messages to {tb} bots, 64 in flight, per-bot limit off: {rps} replies/s\n\
         ({secs} s in all; inbound accepted at {ips}/s). Peak RSS meanwhile: {hwm} MB.\n\n\
         ## Unpaced load (back-pressure)\n\n\
         64 senders as fast as intake takes them, for {fs} s, to {fb} bots, default backlog\n\
         bounds (`pipeline.max_backlog` 2000, 500 per bot), per-bot limit off. Past the\n\
         bound intake answers 503 with `Retry-After`; senders wait as told.\n\n\
         | accepted | refused (503) | lost | p50 | p99 | max |\n|---|---|---|---|---|---|\n\
         | {fa} | {fr} | {fl} | {fp50} ms | {fp99} ms | {fmax} ms |\n\n\
         The bound on an accepted message's wait is the backlog drained at the measured\n\
         throughput: 2000 / {rps} per s = {bound} ms. p99 is {ratio} times that bound.\n\n\
         ## The real path: Cloud API webhooks to Graph\n\n\
         Signed Cloud API webhooks (`X-Hub-Signature-256`) posted to `/webhook/meta/{{bot}}`, one\n\
         bot on the chain `meta,twilio`, the echo flow; replies go to a loopback server\n\
         speaking the Graph API, which records when each arrives.\n\n\
         Fixed offered load, {co} webhooks/s over 1,000 contacts ({cn} messages), webhook sent\n\
         to reply at Graph:\n\n\
         | p50 | p95 | p99 | max |\n|---|---|---|---|\n| {cp50} ms | {cp95} ms | {cp99} ms | {cmax} ms |\n\n\
         Throughput, {cb} webhooks, 64 in flight: webhooks answered at {cacc}/s, replies at\n\
         Graph at {crps}/s. Ceiling, measured in the same run with the same load generator: a\n\
         minimal server on the same HTTP stack (axum on hyper) that verifies the same signed\n\
         webhook and answers 200, {cceil} requests/s. dashd delivers **{cratio}** of the ceiling\n\
         (each of its messages is stored, handled by the flow, committed to the outbox and sent\n\
         to Graph; the target is 0.20). On this path a message alone costs four write\n\
         transactions: inbound, the step, the claim, and the attempt with the sent mark (a\n\
         contact costs one more only when its identifiers change). Inbound messages, steps,\n\
         claims and sent marks of messages that arrive together share their transactions.\n\n\
         Failover: with Graph answering 500, the time from the failing Graph attempt to the\n\
         same reply's request at Twilio, in the same dispatch: p50 {cf50} ms, max {cfmax} ms\n\
         (20 messages).\n\n\
         ## Load matrix\n\n\
         The same webhooks into one bot on the chain `meta` (echo flow, default backlog\n\
         bounds and rate limits, per-bot limit off), {xs} s a phase, on SQLite and on\n\
         PostgreSQL (same machine). Closed loop: each user sends its next message once the\n\
         previous reply reached Graph. Open loop: a fixed schedule over 1,000 contacts,\n\
         whatever dashd answers; 503s are counted and not retried. Latency is webhook sent to\n\
         reply at Graph, for accepted messages. Lost: accepted (200) and never answered\n\
         within 90 s. Order: replies that overtook the reply to an earlier message of the\n\
         same contact, one acknowledged (200) before the later was sent. RSS and\n\
         CPU are dashd with its flow-worker processes (CPU in % of one core). Ratio: msgs/s\n\
         over the echo ceiling of this run, {xceil} requests/s. Raw figures:\n\
         `docs/performance.json`.\n\n\
         | backend | load | msgs/s | accepted | 503 | p50 / p95 / p99 / max (ms) | lost | dup | order | peak RSS (MB) | CPU % | ratio |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n{matrix_rows}\n\
         ## Start-up and memory\n\n\
         Start-up to `READY=1` with an empty data directory: {startup} ms (median of 3).\n\n\
         | bots | start-up to ready (ms) | RSS idle (MB) | RSS after one message each (MB) | peak RSS (MB) | peak RSS per bot (kB) |\n\
         |---|---|---|---|---|---|\n{memory_rows}\n\
         Target from the seeds: under 10 MB per active bot. Every bot here runs the same\n\
         echo flow, which dashd compiles once and shares; bots with distinct documents each\n\
         keep their own compiled copy.\n\n\
         These figures are dashd's own process. Flow steps run in `dashd flow-worker`\n\
         processes (`pipeline.flow_workers`, one per CPU, at least 2), each with its own\n\
         memory: about 12 MB resident with the shop example compiled (measured by hand on\n\
         this machine), growing with the compiled flows it caches, at most\n\
         `pipeline.flow_cache_mb` (64 MiB), and capped by `pipeline.flow_memory_mb`.\n\n\
         ## Where the time goes\n\n\
         A message alone costs 19 SQL statements and 4 commits (16 on SQLite, which keeps\n\
         known contacts and the conversations it committed in memory), counted by\n\
         `crates/dashd/tests/statements.rs` on the Cloud-API path (store inbound, commit the\n\
         step, claim, and the attempt with the sent mark). Messages that arrive together\n\
         share them: inbound rows, conversation steps, claims and sent marks are\n\
         group-committed, each kind of row one statement per batch (padded to one of nine\n\
         sizes), and 64 concurrent webhooks from 16 customers cost 4.6 statements and 0.70\n\
         commits a message on SQLite (6.6 to 7.2 and 0.75 to 0.86 on PostgreSQL).\n\n\
         A system-wide `perf record -a -g` during the closed loop with 50 users on SQLite\n\
         (this machine, before the last three changes listed below) found 17% idle, dashd's two tokio\n\
         workers 33% of the samples (HTTP in and out, JSON, the wake-ups between tasks:\n\
         `_raw_spin_unlock_irqrestore` alone 8%) and SQLite's connection threads 38%, of which\n\
         the largest parts are context switches (each statement is a hand-over from the\n\
         async task to its connection's thread and back), then SQLite itself. dashd uses about\n\
         0.7 ms of CPU a message, against about 0.04 ms for the echo server's request; the\n\
         load generator and the Graph server share the same two cores. An instrumented run\n\
         (time each write transaction held the writer) found the SQLite writer busy about 85%\n\
         of the time in the loaded phases: it, and the CPU, bound throughput. Changes this\n\
         measurement led to: a partial index of unhandled inbound messages (the worker's read\n\
         went through the contact's whole history, 7 ms a read after a few hundred messages);\n\
         a contact lookup by one indexed lookup per identifier instead of an `OR` that read\n\
         every contact of the bot; writes on a SQLite connection of their own (SQLite empties\n\
         a connection's page cache whenever another connection wrote, so writes that took\n\
         turns on the read connections read their index pages back each time); one statement\n\
         per kind of row for a batch of steps; a conversation's row kept in memory after its\n\
         own commit, and known contacts (SQLite only).\n\
         What would close the gap to the target, in the order of what it would give: fewer\n\
         hand-overs to SQLite's connection threads (sqlx sends every statement to the\n\
         connection's thread and back, and its multi-statement path is deprecated, so this\n\
         means a writer thread of dashd's own that runs a whole batch's transaction on the\n\
         connection; inbound work handed to the conversation task in memory instead of read\n\
         back; the dispatcher's per-round reads folded into its claim); history rows written\n\
         by the database (triggers) or dropped where the entry itself already records the\n\
         state (received, pending, sent);\n\
         fewer wake-ups between tasks on the message path (the group-commit queues wake one\n\
         task per request). The flow step runs in a `dashd flow-worker` process; the pipe\n\
         costs about 20 µs a step, and running the steps in threads instead\n\
         (`pipeline.flow_isolation = \"thread\"`) gives the same throughput within noise.\n\
         Past the backlog bound, intake refuses before any database work (before the sender\n\
         is looked up): that kept the rate answered at 5,000 offered messages/s close to the\n\
         rate at 1,000.\n\n\
         The whole benchmark took {total} s (build not included).\n",
        machine = r["machine"].as_str().unwrap_or_default(),
        xs = x["phase_seconds"],
        xceil = x["ceiling_requests_per_s"],
        bots = l["bots"],
        offered = l["offered_msgs_per_s"],
        n = l["messages"],
        p50 = l["p50_ms"],
        p95 = l["p95_ms"],
        p99 = l["p99_ms"],
        max = l["max_ms"],
        tn = t["messages"],
        tb = t["bots"],
        rps = t["replies_per_s"],
        secs = t["seconds"],
        ips = t["inbound_accepted_per_s"],
        hwm = r["peak_rss_during_throughput_mb"],
        startup = r["startup_ms_empty"],
        total = r["bench_seconds"],
        fs = f["seconds"],
        fb = f["bots"],
        fa = f["accepted"],
        fr = f["refused_503"],
        fl = f["lost"],
        fp50 = f["p50_ms"],
        fp99 = f["p99_ms"],
        fmax = f["max_ms"],
        bound = round(bound_ms),
        ratio = (ratio * 100.0).round() / 100.0,
        co = c["offered_msgs_per_s"],
        cn = c["messages"],
        cp50 = c["p50_ms"],
        cp95 = c["p95_ms"],
        cp99 = c["p99_ms"],
        cmax = c["max_ms"],
        cb = c["burst_messages"],
        cacc = c["webhooks_accepted_per_s"],
        crps = c["replies_per_s"],
        cceil = c["ceiling_requests_per_s"],
        cratio = c["ratio_to_ceiling"],
        cf50 = c["failover_p50_ms"],
        cfmax = c["failover_max_ms"],
    );
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let path = docs.join("performance.md");
    std::fs::write(&path, text).unwrap();
    std::fs::write(
        docs.join("performance.json"),
        serde_json::to_string_pretty(r).unwrap() + "\n",
    )
    .unwrap();
    eprintln!("wrote {}", path.display());
}
