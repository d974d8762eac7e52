//! Time decides when a flow timer fires: with a manual clock held still, an idle
//! reminder is due only once the clock is moved past it. No test here sleeps to let
//! time pass, and none waits a fixed time to prove that nothing happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::Arc;
use std::time::Duration;

use dash_core::api::SandboxEvent;
use dashd::clock::{Clock, ManualClock};

mod common;
use common::Admin;

const ASK: &str = r#"
[[flows]]
id = "ask"
triggers = [{ keywords = ["hola"] }]
idle = { after = "10m", reminder = "¿Seguís ahí?" }
steps = [
  { id = "q", kind = "question", text = "¿Tu nombre?", var = "name" },
  { id = "bye", kind = "end", text = "Gracias {{ vars.name }}" },
]
"#;

/// The next sandbox event: a reply, or the contact going idle (everything handled and
/// sent).
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<(uuid::Uuid, SandboxEvent)>,
) -> SandboxEvent {
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("no sandbox event")
        .unwrap()
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_reminder_fires_when_the_clock_reaches_it_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path());
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let daemon = dashd::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    let admin = Admin::new(dir.path());
    admin.bot("acme", "ventas", ASK).await;
    let mut events = daemon.pipeline().subscribe();
    admin.say("acme", "ventas", "+5491100000001", "hola").await;
    let texts = |event: SandboxEvent| match event {
        SandboxEvent::Reply { body, .. } => Some(body.text),
        SandboxEvent::Idle { .. } => None,
    };
    assert_eq!(
        texts(next_event(&mut events).await).as_deref(),
        Some("¿Tu nombre?")
    );
    // The question is out and the conversation waits: the contact is idle.
    assert_eq!(texts(next_event(&mut events).await), None);

    // Nine minutes on the clock: the reminder is not due. The scheduler is woken and
    // asks the same question as below (what is due at the clock's time): nothing.
    clock.advance(chrono::Duration::minutes(9));
    daemon.pipeline().clock_moved();
    let store = daemon.store();
    let due = store.due_timers(clock.now_ms(), 10).await.unwrap();
    assert!(due.is_empty(), "{due:?}");
    clock.advance(chrono::Duration::minutes(2));
    daemon.pipeline().clock_moved();
    assert_eq!(
        texts(next_event(&mut events).await).as_deref(),
        Some("¿Seguís ahí?")
    );
    daemon.shutdown().await.unwrap();
}
