//! Hostile input against a real daemon in-process, with flow steps in real worker
//! processes: a message whose flow step kills its worker is retried, then marked failed
//! with the reason, and the conversation goes on; a tenant whose flow spins and exhausts
//! memory on every message does not slow another tenant's bot, and `/health` keeps
//! answering fast throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // tests fail loudly by design

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dash_core::api::{MessageState, SandboxEvent};
use dash_core::config::Config;
use serde_json::json;

mod common;
use common::{Admin, ECHO};

/// Echoes the customer; "boom" makes the step allocate without bound (the worker dies
/// of its memory limit), "spin" makes it burn CPU until its deadline. Neither branch is
/// taken by the dry run at import, so the document is accepted, as a careful attacker's
/// would be.
const HOSTILE: &str = r#"
default_flow = "echo"
[[flows]]
id = "echo"
steps = [{ id = "say", kind = "end", text = """{{ input }}{% if input == "boom" %}{% set ns = namespace(s="x") %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}{% endif %}{% if input == "spin" %}{% set ns = namespace(s="y" * 60000, t="") %}{% for i in range(1000) %}{% for j in range(1000) %}{% set ns.t = ns.s | replace("y", "z") %}{% endfor %}{% endfor %}{% endif %}""" }]
"#;

/// The tests that measure one tenant under another's attack run one at a time: two
/// attacks at once on a 2-core machine would measure each other.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(dir: &Path) -> Config {
    let mut config = common::config(dir);
    config.pipeline.flow_memory_mb = 128;
    config.pipeline.flow_step_timeout_ms = 1000;
    config.pipeline.retry_base_ms = 50;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_its_flow_worker_is_failed_and_the_conversation_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = dashd::start(config(dir.path())).await.unwrap();
    let admin = Admin::new(dir.path());
    admin.bot("evil", "bomb", HOSTILE).await;
    let mut replies = daemon.pipeline().subscribe();
    let accepted = admin.say("evil", "bomb", "+15550001", "boom").await;
    let poison: uuid::Uuid = accepted["message_id"].as_str().unwrap().parse().unwrap();
    admin.say("evil", "bomb", "+15550001", "hola").await;
    // The next message is answered once the poison one has been given up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, replies.recv()).await {
            Ok(Ok((_, SandboxEvent::Reply { body, .. }))) => {
                assert_eq!(body.text, "hola", "only the good message is answered");
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => panic!("{err}"),
            Err(_) => panic!("the conversation never went on"),
        }
    }
    let bot = daemon
        .store()
        .bot(&dash_core::BotRef::Path {
            tenant: "evil".into(),
            bot: "bomb".into(),
        })
        .await
        .unwrap();
    let transcript = daemon
        .store()
        .conversation(bot.id, "+15550001")
        .await
        .unwrap()
        .unwrap()
        .transcript;
    let failed = transcript.iter().find(|m| m.id == poison).unwrap();
    assert_eq!(failed.state, MessageState::Failed);
    assert_eq!(failed.attempts, 3);
    let reason = failed.last_error.as_deref().unwrap();
    assert!(reason.contains("flow worker died"), "{reason}");
    // dashd itself is fine.
    let health = reqwest::get(format!("http://{}/health", daemon.http_addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    daemon.shutdown().await.unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Sends `count` messages to the good bot one after the other and returns the sorted
/// latencies (message accepted → reply handed to the provider), in ms.
async fn good_latencies(
    admin: &Admin,
    replies: &mut tokio::sync::broadcast::Receiver<(uuid::Uuid, SandboxEvent)>,
    good_bot: uuid::Uuid,
    round: &str,
    count: usize,
) -> Vec<f64> {
    let mut ms = Vec::with_capacity(count);
    for n in 0..count {
        let contact = format!("+1666{round}{n:04}");
        let sent = Instant::now();
        admin.say("good", "echo", &contact, "ping").await;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), replies.recv()).await {
                Ok(Ok((bot, SandboxEvent::Reply { contact: to, .. })))
                    if bot == good_bot && to == contact =>
                {
                    break;
                }
                Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(err)) => panic!("{err}"),
                Err(_) => panic!("no reply to {contact}"),
            }
        }
        ms.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms
}

/// Another tenant's traffic at a steady 50 messages a second, with `/health` polled
/// meanwhile, until `running` is cleared; returns (messages sent, slowest health
/// answer, health probes).
fn traffic(
    admin: Arc<Admin>,
    health_url: String,
    running: Arc<AtomicBool>,
    path: &'static str,
    texts: &'static [&'static str],
) -> tokio::task::JoinHandle<(u32, Duration, u32)> {
    tokio::spawn(async move {
        let health = {
            let running = running.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut slowest = Duration::ZERO;
                let mut probes = 0;
                while running.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let response = client.get(&health_url).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    slowest = slowest.max(asked.elapsed());
                    probes += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (slowest, probes)
            })
        };
        let mut n = 0u32;
        while running.load(Ordering::Relaxed) {
            let text = texts[n as usize % texts.len()];
            let response = admin
                .0
                .post(format!("http://dashd{path}"))
                .json(&json!({"from": format!("+1777{:04}", n % 50), "text": text}))
                .send()
                .await
                .unwrap();
            // Accepted, or refused once its backlog is full: both are fine.
            assert!(matches!(response.status().as_u16(), 202 | 503));
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (slowest, probes) = health.await.unwrap();
        (n, slowest, probes)
    })
}

/// The good bot's latencies while `texts` go to `path` at 50 a second.
async fn good_latencies_beside(
    daemon: &dashd::Daemon,
    admin: &Arc<Admin>,
    replies: &mut tokio::sync::broadcast::Receiver<(uuid::Uuid, SandboxEvent)>,
    good_bot: uuid::Uuid,
    round: &str,
    path: &'static str,
    texts: &'static [&'static str],
) -> (Vec<f64>, u32, Duration, u32) {
    let running = Arc::new(AtomicBool::new(true));
    let other = traffic(
        admin.clone(),
        format!("http://{}/health", daemon.http_addr),
        running.clone(),
        path,
        texts,
    );
    // Let the other tenant's messages fill its share first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let latencies = good_latencies(admin, replies, good_bot, round, 40).await;
    running.store(false, Ordering::Relaxed);
    let (sent, slowest, probes) = other.await.unwrap();
    (latencies, sent, slowest, probes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_does_not_slow_another_tenant_or_health() {
    let _alone = MEASURING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = dashd::start(config(dir.path())).await.unwrap();
    let admin = Arc::new(Admin::new(dir.path()));
    admin.bot("good", "echo", ECHO).await;
    admin.bot("busy", "echo", ECHO).await;
    admin.bot("evil", "bomb", HOSTILE).await;
    let good_bot = daemon
        .store()
        .bot(&dash_core::BotRef::Path {
            tenant: "good".into(),
            bot: "echo".into(),
        })
        .await
        .unwrap()
        .id;
    let mut replies = daemon.pipeline().subscribe();
    // Warm up (worker processes, caches), then the good bot alone.
    good_latencies(&admin, &mut replies, good_bot, "0", 5).await;
    let alone = good_latencies(&admin, &mut replies, good_bot, "1", 40).await;
    // Beside another tenant's ordinary traffic, then beside the same rate of hostile
    // messages, each spinning to its 1 s deadline or killing its worker.
    let (ordinary, _, _, _) = good_latencies_beside(
        &daemon,
        &admin,
        &mut replies,
        good_bot,
        "2",
        "/v1/tenants/busy/bots/echo/sandbox/messages",
        &["ping"],
    )
    .await;
    let (attacked, hostile_messages, slowest_health, probes) = good_latencies_beside(
        &daemon,
        &admin,
        &mut replies,
        good_bot,
        "3",
        "/v1/tenants/evil/bots/bomb/sandbox/messages",
        &["spin", "boom"],
    )
    .await;

    let p = |ms: &[f64]| (percentile(ms, 0.5), percentile(ms, 0.99));
    let ((p50_alone, p99_alone), (p50_ordinary, p99_ordinary), (p50_attacked, p99_attacked)) =
        (p(&alone), p(&ordinary), p(&attacked));
    eprintln!(
        "good bot p50/p99: alone {p50_alone:.1}/{p99_alone:.1} ms; beside ordinary traffic \
         {p50_ordinary:.1}/{p99_ordinary:.1} ms; beside {hostile_messages} hostile messages \
         {p50_attacked:.1}/{p99_attacked:.1} ms; /health slowest {:.1} ms over {probes} probes",
        slowest_health.as_secs_f64() * 1000.0
    );
    // The hostile steps take a full second each (or kill their worker): had the good
    // bot waited behind one, its p99 would be over a second. Under attack it must stay
    // within noise of what the same rate of ordinary traffic costs it.
    assert!(
        p99_attacked < (p99_ordinary * 2.0).max(p99_ordinary + 100.0),
        "the good bot slowed down: p99 {p99_ordinary:.1} ms beside ordinary traffic, {p99_attacked:.1} ms under attack"
    );
    assert!(
        p99_attacked < (p99_alone * 4.0).max(p99_alone + 150.0),
        "the good bot slowed down: p99 {p99_alone:.1} ms alone, {p99_attacked:.1} ms under attack"
    );
    assert!(
        slowest_health < Duration::from_millis(100),
        "/health took {slowest_health:?}"
    );
    assert!(probes > 10);
    daemon.shutdown().await.unwrap();
}

/// Asks a question and reminds after ten idle minutes. The reminder of the hostile
/// variant spins until its deadline for every real customer (the dry run at import uses
/// a sample phone number, for which it does not).
fn reminding(hostile: bool) -> String {
    let reminder = if hostile {
        r#"¿Seguís ahí?{% if contact.phone != "+10000000000" %}{% set ns = namespace(s="y" * 60000, t="") %}{% for i in range(1000) %}{% for j in range(1000) %}{% set ns.t = ns.s | replace("y", "z") %}{% endfor %}{% endfor %}{% endif %}"#
    } else {
        "¿Seguís ahí?"
    };
    format!(
        r#"
[[flows]]
id = "ask"
triggers = [{{ keywords = ["hola"] }}]
idle = {{ after = "10m", reminder = '{reminder}' }}
steps = [
  {{ id = "q", kind = "question", text = "¿Tu nombre?", var = "name" }},
  {{ id = "bye", kind = "end", text = "Gracias" }},
]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenants_timers_do_not_delay_another_tenants() {
    use dashd::clock::ManualClock;
    let _alone = MEASURING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let daemon = dashd::start_with_clock(config(dir.path()), clock.clone())
        .await
        .unwrap();
    let admin = Admin::new(dir.path());
    admin.bot("good", "echo", &reminding(false)).await;
    admin.bot("evil", "bomb", &reminding(true)).await;
    let good_bot = daemon
        .store()
        .bot(&dash_core::BotRef::Path {
            tenant: "good".into(),
            bot: "echo".into(),
        })
        .await
        .unwrap()
        .id;
    let mut replies = daemon.pipeline().subscribe();
    // Twenty hostile conversations first, so their reminders are due first.
    for n in 0..20 {
        admin
            .say("evil", "bomb", &format!("+1777{n:04}"), "hola")
            .await;
    }
    admin.say("good", "echo", "+16660001", "hola").await;
    let mut questions = 0;
    while questions < 21 {
        let (_, event) = tokio::time::timeout(Duration::from_secs(30), replies.recv())
            .await
            .expect("the questions were not asked")
            .unwrap();
        if matches!(event, SandboxEvent::Reply { .. }) {
            questions += 1;
        }
    }
    // Eleven minutes later every reminder is due; each hostile one takes a full step
    // deadline (1 s) in the hostile tenant's single flow worker.
    clock.advance(chrono::Duration::minutes(11));
    daemon.pipeline().clock_moved();
    let asked = Instant::now();
    loop {
        let (bot, event) = tokio::time::timeout(Duration::from_secs(30), replies.recv())
            .await
            .expect("the good reminder never came")
            .unwrap();
        if let SandboxEvent::Reply { body, .. } = event
            && bot == good_bot
        {
            assert_eq!(body.text, "¿Seguís ahí?");
            break;
        }
    }
    let waited = asked.elapsed();
    eprintln!("the good tenant's reminder came {waited:?} after it was due");
    assert!(
        waited < Duration::from_secs(5),
        "the good tenant's reminder waited {waited:?} behind the hostile tenant's"
    );
    daemon.shutdown().await.unwrap();
}

/// Import renders every template once with sample data: a document whose template
/// blows its memory or time bound there is refused (422 naming the source), never
/// compiled inside dashd, and dashd goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_exceeds_its_bounds_at_import_is_refused_with_422() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = dashd::start(config(dir.path())).await.unwrap();
    let admin = Admin::new(dir.path());
    admin.bot("evil", "bomb", ECHO).await;
    let bomb = r#"
default_flow = "f"
[[flows]]
id = "f"
steps = [{ id = "s", kind = "end", text = """{% set ns = namespace(s="x") %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}""" }]
"#;
    let response = admin
        .0
        .post("http://dashd/v1/tenants/evil/bots/bomb/flows")
        .json(&json!({"source": bomb, "activate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "source", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory or time limit"),
        "{body}"
    );
    // Still serving, with the flow it had.
    let answer = admin.say("evil", "bomb", "+15550002", "hola").await;
    assert_eq!(answer["duplicate"], false);
    daemon.shutdown().await.unwrap();
}
