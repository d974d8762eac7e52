//! Flow steps in supervised worker processes (the real `dashd flow-worker`): outcomes
//! equal the in-process engine's; a template that allocates without bound or spins
//! kills only its worker, and the next step is served; a tenant whose steps spin cannot
//! hold up another tenant; bad input gets an answer, not a crash. Also prints the cost
//! of a step over the pipe against a direct call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use dash_core::flow::engine::{HttpOutcome, Limits, step_within};
use dash_core::flow::{
    Bundle, Capabilities, Context, ConversationState, Document, Effect, Event, Format, Outcome,
    Versions,
};
use dashd::flow_runner::{
    EXECUTABLE_KEY, FlowRunner, FlowSource, RunnerConfig, StepContext, StepError, StepRequest,
};
use serde_json::json;
use uuid::Uuid;

const SHOP: &str = include_str!("../../../examples/flows/shop.toml");
const SUPPORT: &str = include_str!("../../../examples/flows/support.toml");

/// Doubles a string until it is far over any worker's memory limit.
const ALLOCATES: &str = r#"
[[flows]]
id = "f"
triggers = [{ keywords = ["boom"] }]
steps = [{ id = "m", kind = "message", text = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}" }]
"#;

/// Few instructions, each over a long string: seconds of CPU within every engine limit
/// (fuel, range length, value length); the render runs twice, in the compile's dry run
/// and in the step.
const SPINS: &str = r#"
[[flows]]
id = "f"
triggers = [{ keywords = ["spin"] }]
steps = [{ id = "m", kind = "message", text = "{% set s = 'ab' * 30000 %}{% for i in range(1000) %}{% for j in range(4) %}{% set t = s | replace('a', 'c') %}{% endfor %}{% endfor %}done" }]
"#;

fn config(memory_limit_mb: u64, timeout_ms: u64, processes: usize) -> RunnerConfig {
    RunnerConfig {
        executable: Some(PathBuf::from(env!("CARGO_BIN_EXE_dashd"))),
        processes,
        memory_limit_mb,
        step_timeout: Duration::from_millis(timeout_ms),
        cache_mb: 16,
    }
}

fn source(text: &str, version: u32) -> Arc<FlowSource> {
    let doc = Document::parse(text, Format::sniff(text)).unwrap();
    Arc::new(FlowSource::from_document(version, &doc).unwrap())
}

fn bundle(text: &str, version: u32) -> Bundle {
    Bundle::from_text(text, version, Capabilities::CURRENT).unwrap()
}

fn context() -> StepContext {
    StepContext {
        now: Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap(),
        timezone: "America/Argentina/Buenos_Aires".parse().unwrap(),
        bot: json!({"name": "Tienda", "timezone": "America/Argentina/Buenos_Aires"}),
        contact: json!({"phone": "+5491123456789", "name": "Ana"}),
        limits: Limits::default(),
    }
}

fn say(text: &str) -> Event {
    Event::Message {
        text: text.to_owned(),
        reply_id: None,
    }
}

fn request(source: &Arc<FlowSource>, state: ConversationState, event: Event) -> StepRequest {
    StepRequest {
        active: Some(source.clone()),
        current: None,
        state,
        event,
        context: context(),
    }
}

/// The bot's active version and the conversation's own, as dashd's worker loads them.
struct Pair<'a> {
    active: Option<&'a Bundle>,
    current: Option<&'a Bundle>,
}

impl Versions for Pair<'_> {
    fn active(&self) -> Option<&Bundle> {
        self.active
    }
    fn get(&self, version: u32) -> Option<&Bundle> {
        [self.current, self.active]
            .into_iter()
            .flatten()
            .find(|b| b.version == version)
    }
}

fn direct(versions: &Pair<'_>, state: ConversationState, event: &Event) -> Outcome {
    let ctx = context();
    step_within(
        versions,
        state,
        event,
        &Context {
            now: ctx.now,
            timezone: ctx.timezone,
            bot: &ctx.bot,
            contact: &ctx.contact,
        },
        &ctx.limits,
    )
}

fn http_request_id(outcome: &Outcome) -> Option<u64> {
    outcome.effects.iter().find_map(|e| match e {
        Effect::Http(r) => Some(r.request_id),
        _ => None,
    })
}

/// Runs the same conversation through the runner and the engine, step by step.
async fn same_as_direct(runner: &FlowRunner) {
    let tenant = Uuid::new_v4();
    let (support, shop) = (source(SUPPORT, 1), source(SHOP, 2));
    let (support_bundle, shop_bundle) = (bundle(SUPPORT, 1), bundle(SHOP, 2));
    let mut state = ConversationState::default();
    let mut events = vec![say("support"), say("ticket"), say("tk-12"), say("TK-1234")];
    let mut steps = 0;
    while let Some(event) = events.first().cloned() {
        events.remove(0);
        let versions = Pair {
            active: Some(&support_bundle),
            current: None,
        };
        let expected = direct(&versions, state.clone(), &event);
        let got = runner
            .step(tenant, request(&support, state.clone(), event))
            .await
            .unwrap();
        assert_eq!(got, expected);
        if events.is_empty()
            && let Some(id) = http_request_id(&got)
        {
            events.push(Event::Http {
                request_id: id,
                outcome: HttpOutcome::Response {
                    status: 200,
                    body: json!({"status": "open", "owner": {"name": "Bea", "n": 1.5}}),
                },
            });
        }
        state = got.state;
        steps += 1;
    }
    assert_eq!(steps, 5);
    // Handoff and resume, then a conversation that started on version 1 goes on after
    // the bot activated version 2: both versions travel.
    for event in [say("agent"), Event::Resume, say("support"), say("ticket")] {
        let (versions, req) = if matches!(&event, Event::Message { text, .. } if text == "ticket") {
            let req = StepRequest {
                active: Some(shop.clone()),
                current: Some(support.clone()),
                state: state.clone(),
                event: event.clone(),
                context: context(),
            };
            let versions = Pair {
                active: Some(&shop_bundle),
                current: Some(&support_bundle),
            };
            (versions, req)
        } else {
            let versions = Pair {
                active: Some(&support_bundle),
                current: None,
            };
            (versions, request(&support, state.clone(), event.clone()))
        };
        let expected = direct(&versions, state.clone(), &event);
        let got = runner.step(tenant, req).await.unwrap();
        assert_eq!(got, expected);
        state = got.state;
    }
    // The shop flow, with menus (choices), vars and timers.
    let mut state = ConversationState::default();
    let versions = Pair {
        active: Some(&shop_bundle),
        current: None,
    };
    for text in ["hola", "1", "1", "3", "Ana", "cancelar"] {
        let expected = direct(&versions, state.clone(), &say(text));
        let got = runner
            .step(tenant, request(&shop, state.clone(), say(text)))
            .await
            .unwrap();
        assert_eq!(got, expected, "after {text:?}");
        state = got.state;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_outcomes_equal_the_engine_called_directly() {
    let runner = FlowRunner::start(config(256, 5000, 2)).await.unwrap();
    same_as_direct(&runner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_mode_outcomes_equal_the_engine_called_directly() {
    let runner = FlowRunner::in_process(&config(256, 5000, 2));
    same_as_direct(&runner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_allocates_without_bound_kills_only_its_worker() {
    let runner = FlowRunner::start(config(256, 20_000, 2)).await.unwrap();
    let hostile = source(ALLOCATES, 1);
    let result = runner
        .step(
            Uuid::new_v4(),
            request(&hostile, ConversationState::default(), say("boom")),
        )
        .await;
    match &result {
        Err(StepError::Crashed { status }) => assert!(status.contains("SIG"), "{status}"),
        // The engine itself may bound the render and report a flow error.
        Ok(outcome) => assert!(
            !outcome
                .effects
                .iter()
                .any(|e| matches!(e, Effect::Send(out) if out.text.len() > 1 << 20)),
            "{outcome:?}"
        ),
        Err(other) => panic!("unexpected {other:?}"),
    }
    eprintln!("allocation bomb: {result:?}");
    let shop = source(SHOP, 1);
    let next = runner
        .step(
            Uuid::new_v4(),
            request(&shop, ConversationState::default(), say("hola")),
        )
        .await
        .unwrap();
    assert!(next.effects.iter().any(|e| matches!(e, Effect::Send(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_spins_times_out_and_the_next_step_runs() {
    let runner = FlowRunner::start(config(512, 300, 2)).await.unwrap();
    let hostile = source(SPINS, 1);
    let started = Instant::now();
    let result = runner
        .step(
            Uuid::new_v4(),
            request(&hostile, ConversationState::default(), say("spin")),
        )
        .await;
    assert_eq!(
        result,
        Err(StepError::Timeout {
            after: Duration::from_millis(300)
        })
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let shop = source(SHOP, 1);
    for _ in 0..3 {
        runner
            .step(
                Uuid::new_v4(),
                request(&shop, ConversationState::default(), say("hola")),
            )
            .await
            .unwrap();
    }
}

#[test]
fn thread_mode_enforces_the_deadline_for_the_caller() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runner = FlowRunner::in_process(&config(0, 100, 2));
    let hostile = source(SPINS, 1);
    let started = Instant::now();
    let result = runtime.block_on(runner.step(
        Uuid::new_v4(),
        request(&hostile, ConversationState::default(), say("spin")),
    ));
    assert!(
        matches!(result, Err(StepError::Timeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // The thread runs on until its fuel runs out: that is the mode's documented limit.
    runtime.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_tenant_cannot_hold_up_another() {
    let timeout = Duration::from_secs(1);
    let runner = FlowRunner::start(config(512, 1000, 2)).await.unwrap();
    let hostile_tenant = Uuid::new_v4();
    let hostile = source(SPINS, 1);
    // Two spinning steps for a pool of two: without a per-tenant cap they would hold
    // every worker.
    let mut attacks = Vec::new();
    for _ in 0..2 {
        let runner = runner.clone();
        let req = request(&hostile, ConversationState::default(), say("spin"));
        attacks.push(tokio::spawn(async move {
            let result = runner.step(hostile_tenant, req).await;
            (result, Instant::now())
        }));
    }
    // Wait until the attack holds the worker started with the pool.
    let deadline = Instant::now() + Duration::from_secs(5);
    while runner.idle_workers() > 0 {
        assert!(Instant::now() < deadline, "the attack never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shop = source(SHOP, 1);
    let started = Instant::now();
    runner
        .step(
            Uuid::new_v4(),
            request(&shop, ConversationState::default(), say("hola")),
        )
        .await
        .unwrap();
    let done = Instant::now();
    let waited = done - started;
    eprintln!("other tenant's step took {waited:?} while the pool was under attack");
    assert!(waited < timeout / 2, "{waited:?}");
    for attack in attacks {
        let (result, finished) = attack.await.unwrap();
        assert!(finished > done, "an attack ended first: {result:?}");
        // Spinning for longer than the deadline (debug builds), or just long.
        assert!(
            matches!(result, Err(StepError::Timeout { .. }) | Ok(_)),
            "{result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_start_is_an_error_naming_the_setting() {
    let mut cfg = config(256, 1000, 2);
    cfg.executable = Some(PathBuf::from("/bin/false"));
    let err = FlowRunner::start(cfg).await.unwrap_err().to_string();
    assert!(err.contains(EXECUTABLE_KEY), "{err}");
    let mut cfg = config(256, 1000, 2);
    cfg.executable = Some(PathBuf::from("/nonexistent/dashd"));
    let err = FlowRunner::start(cfg).await.unwrap_err().to_string();
    assert!(err.contains(EXECUTABLE_KEY), "{err}");
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn read_frame(input: &mut impl Read) -> serde_json::Value {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn the_worker_answers_bad_input_with_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dashd"))
        .args(["flow-worker", "--memory-mb", "256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    assert_eq!(read_frame(&mut stdout)["type"], "hello");
    let unknown_key = json!({
        "type": "step", "active": {"version": 1, "sha256": "00"}, "current": null,
        "state": ConversationState::default(), "event": {"event": "resume"},
        "context": {"now": "2026-01-01T00:00:00Z", "timezone": "UTC", "bot": {}, "contact": {}},
    });
    let bad_zone = json!({
        "type": "step", "active": null, "current": null,
        "state": ConversationState::default(), "event": {"event": "resume"},
        "context": {"now": "2026-01-01T00:00:00Z", "timezone": "Mars/Olympus", "bot": {}, "contact": {}},
    });
    let broken_document = json!({
        "type": "step", "active": {"version": 1, "sha256": "01"}, "current": null,
        "documents": [{"key": {"version": 1, "sha256": "01"}, "document": "{\"flows\": 3}"}],
        "state": ConversationState::default(), "event": {"event": "resume"},
        "context": {"now": "2026-01-01T00:00:00Z", "timezone": "UTC", "bot": {}, "contact": {}},
    });
    let cases: [(Vec<u8>, &str); 5] = [
        (b"not json".to_vec(), "failed"),
        (br#"{"type": "launch"}"#.to_vec(), "failed"),
        (unknown_key.to_string().into_bytes(), "missing"),
        (bad_zone.to_string().into_bytes(), "failed"),
        (broken_document.to_string().into_bytes(), "done"),
    ];
    for (body, expected) in cases {
        stdin.write_all(&frame(&body)).unwrap();
        let answer = read_frame(&mut stdout);
        assert_eq!(answer["type"], expected, "{answer}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_cost_over_the_pipe() {
    let runner = FlowRunner::start(config(256, 5000, 2)).await.unwrap();
    let shop = source(SHOP, 1);
    let shop_bundle = bundle(SHOP, 1);
    let versions = Pair {
        active: Some(&shop_bundle),
        current: None,
    };
    let tenant = Uuid::new_v4();
    let mut piped = Vec::new();
    let mut inline = Vec::new();
    for _ in 0..1000 {
        let started = Instant::now();
        runner
            .step(
                tenant,
                request(&shop, ConversationState::default(), say("hola")),
            )
            .await
            .unwrap();
        piped.push(started.elapsed());
        let started = Instant::now();
        direct(&versions, ConversationState::default(), &say("hola"));
        inline.push(started.elapsed());
    }
    piped.sort();
    inline.sort();
    eprintln!(
        "median step: {:?} in a worker process, {:?} called directly (p99 {:?} / {:?})",
        piped[500], inline[500], piped[990], inline[990]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_fail_fast_while_no_worker_can_start() {
    let dir = tempfile::tempdir().unwrap();
    let executable = dir.path().join("dashd");
    std::fs::copy(env!("CARGO_BIN_EXE_dashd"), &executable).unwrap();
    let mut cfg = config(512, 300, 2);
    cfg.executable = Some(executable.clone());
    let runner = FlowRunner::start(cfg).await.unwrap();
    std::fs::remove_file(&executable).unwrap();
    // The worker started with the pool is killed at the deadline; none can replace it.
    let hostile = source(SPINS, 1);
    let result = runner
        .step(
            Uuid::new_v4(),
            request(&hostile, ConversationState::default(), say("spin")),
        )
        .await;
    assert!(
        matches!(result, Err(StepError::Timeout { .. })),
        "{result:?}"
    );
    let shop = source(SHOP, 1);
    for _ in 0..3 {
        let started = Instant::now();
        let result = runner
            .step(
                Uuid::new_v4(),
                request(&shop, ConversationState::default(), say("hola")),
            )
            .await;
        assert!(
            matches!(result, Err(StepError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_validated_in_a_worker() {
    let runner = FlowRunner::start(config(256, 20_000, 2)).await.unwrap();
    let tenant = Uuid::new_v4();
    let parse = |text: &str| Document::parse(text, Format::sniff(text)).unwrap();
    assert_eq!(
        runner
            .validate(tenant, &parse(SHOP), &Limits::default())
            .await,
        Ok(Ok(()))
    );
    let unknown_step = r#"
[[flows]]
id = "f"
steps = [{ id = "a", kind = "message", text = "hi", next = "nowhere" }]
"#;
    let errors = runner
        .validate(tenant, &parse(unknown_step), &Limits::default())
        .await
        .unwrap()
        .unwrap_err();
    assert!(!errors.is_empty());
    // Compiling renders every template once: the allocation happens in the worker.
    let result = runner
        .validate(tenant, &parse(ALLOCATES), &Limits::default())
        .await;
    assert!(
        matches!(
            result,
            Err(StepError::Crashed { .. }) | Ok(Err(_)) | Ok(Ok(()))
        ),
        "{result:?}"
    );
    eprintln!("allocation bomb at import: {result:?}");
    assert_eq!(
        runner
            .validate(tenant, &parse(SUPPORT), &Limits::default())
            .await,
        Ok(Ok(()))
    );
}
