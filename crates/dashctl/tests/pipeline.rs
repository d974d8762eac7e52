//! The message pipeline end to end: a real dashd in-process, the real `dashctl` binary,
//! the sandbox provider recording what is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{Env, eventually};
use dash_core::BotRef;
use serde_json::Value;

const ECHO: &str = r#"
default_flow = "echo"
[[flows]]
id = "echo"
steps = [{ id = "say", kind = "end", text = "{{ input }}" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_example_takes_a_whole_order_through_dashctl_chat() {
    let env = Env::start().await;
    env.bot_with(Some(include_str!("../../../examples/flows/shop.toml")))
        .await;
    let chat = |text: &'static str| {
        let env = &env;
        async move {
            env.ctl(&[
                "chat",
                "acme/ventas",
                "--as",
                "+5491100000001",
                "--name",
                "Ana",
                "--send",
                text,
                "-o",
                "json",
            ])
            .await
            .ok()
            .json()
        }
    };
    let replies = chat("Hola").await;
    assert_eq!(
        replies[0]["body"]["text"],
        "¡Hola Ana! Soy el asistente de ventas."
    );
    assert_eq!(replies[1]["body"]["choices"][0]["label"], "Ver el catálogo");
    let catalog = chat("1").await;
    assert!(
        catalog[0]["body"]["text"]
            .as_str()
            .unwrap()
            .contains("Caja de alfajores")
    );
    assert_eq!(
        chat("alfajores").await[0]["body"]["text"],
        "¿Cuántas unidades querés? (1 a 20)"
    );
    assert_eq!(
        chat("veinticinco").await[0]["body"]["text"],
        "Decime un número entre 1 y 20."
    );
    chat("3").await;
    chat("Ana Pérez").await;
    chat("011 2345-6789").await;
    let confirm = chat("ana@example.com").await;
    assert_eq!(
        confirm[0]["body"]["text"],
        "Confirmo: 3 × Caja de alfajores ($4.500) = $ 13.500, a nombre de Ana Pérez. ¿Está bien? (sí/no)"
    );
    let done = chat("sí").await;
    let summary = done[0]["body"]["text"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "¡Gracias, Ana Pérez! Tu pedido de 3 × Caja de alfajores ($4.500) por $ 13.500"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("+541123456789") && summary.contains("ana@example.com"),
        "{summary}"
    );

    // The log holds the whole exchange; the conversation is over.
    let conversation = env
        .ctl(&[
            "conversation",
            "show",
            "acme/ventas",
            "+5491100000001",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(conversation["status"], "idle");
    let transcript = conversation["transcript"].as_array().unwrap();
    assert_eq!(
        transcript.iter().filter(|m| m["direction"] == "in").count(),
        9
    );
    assert!(
        transcript
            .iter()
            .filter(|m| m["direction"] == "out")
            .all(|m| m["state"] == "sent")
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_gets_one_reply() {
    let env = Env::start().await;
    env.bot_with(Some(ECHO)).await;
    let bot = env
        .daemon()
        .store()
        .bot(&BotRef::Path {
            tenant: "acme".into(),
            bot: "ventas".into(),
        })
        .await
        .unwrap();
    // A provider retrying its webhook delivers the same message (same id) twice.
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let message = dashd::store::inbound::NewInbound {
            bot_id: bot.id,
            tenant_id: bot.tenant_id,
            contact: "+5491100000009".into(),
            provider: "sandbox".into(),
            provider_message_id: Some("wamid.DUPLICATE-1".into()),
            body: dash_core::api::MessageBody {
                text: "once".into(),
                ..Default::default()
            },
            received_at: chrono::Utc::now(),
        };
        outcomes.push(env.daemon().pipeline().ingest(message).await.unwrap());
    }
    assert!(!outcomes[0].duplicate && outcomes[1].duplicate);
    assert_eq!(outcomes[0].id, outcomes[1].id);
    // `chat --send` matches replies by contact: let the first reply go out before the next.
    eventually(Duration::from_secs(10), || async {
        !env.sandbox().await.is_empty()
    })
    .await;
    // The next message's reply comes after the first one's, and there is no second "once".
    let posted = env
        .ctl(&[
            "chat",
            "acme/ventas",
            "--as",
            "+5491100000009",
            "--send",
            "twice",
            "-o",
            "json",
        ])
        .await
        .ok();
    assert_eq!(posted.json()[0]["body"]["text"], "twice");
    // Once nothing is left to handle or send for the contact, nothing more can come.
    let bot_id = env.bot_id().await;
    eventually(Duration::from_secs(5), || async {
        env.sandbox().await.len() >= 2
            && env
                .daemon()
                .store()
                .contact_idle(bot_id, "+5491100000009")
                .await
                .unwrap()
    })
    .await;
    assert_eq!(env.sandbox().await, ["once", "twice"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_messages_from_one_contact_are_handled_in_order() {
    let env = Env::with(|c| c.dispatcher.bot_rate_per_minute = 0).await;
    env.bot_with(Some(ECHO)).await;
    let record = env
        .daemon()
        .store()
        .bot(&BotRef::Path {
            tenant: "acme".into(),
            bot: "ventas".into(),
        })
        .await
        .unwrap();
    let pipeline = env.daemon().pipeline();
    for i in 0..200 {
        let message = dashd::store::inbound::NewInbound {
            bot_id: record.id,
            tenant_id: record.tenant_id,
            contact: "+5491100000007".into(),
            provider: "sandbox".into(),
            provider_message_id: Some(format!("m{i}")),
            body: dash_core::api::MessageBody {
                text: format!("m{i:03}"),
                ..Default::default()
            },
            received_at: chrono::Utc::now(),
        };
        // Each is stored before the next arrives, as a provider delivers them.
        pipeline.ingest(message).await.unwrap();
    }
    eventually(Duration::from_secs(30), || async {
        env.sandbox().await.len() == 200
    })
    .await;
    let expected: Vec<String> = (0..200).map(|i| format!("m{i:03}")).collect();
    assert_eq!(env.sandbox().await, expected);
    // And the log shows each reply right after its message.
    let conversation = env
        .ctl(&[
            "conversation",
            "show",
            "acme/ventas",
            "+5491100000007",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let texts: Vec<String> = conversation["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "in")
        .map(|m| m["body"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, expected);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixty_first_message_in_a_minute_waits() {
    let env = Env::start().await;
    env.bot_with(None).await;
    for i in 0..61 {
        env.ctl(&[
            "send",
            "acme/ventas",
            "--to",
            "+5491100000005",
            &format!("aviso {i}"),
        ])
        .await
        .ok();
    }
    eventually(Duration::from_secs(10), || async {
        env.sandbox().await.len() == 60
    })
    .await;
    // The dispatcher has decided about the 61st once it is postponed past now.
    eventually(Duration::from_secs(10), || async {
        deferred_beyond(&env, chrono::Duration::seconds(30)).await == 1
    })
    .await;
    assert_eq!(
        env.sandbox().await.len(),
        60,
        "the 61st went out within the minute"
    );
    let pending = env
        .ctl(&["queue", "list", "--state", "pending", "-o", "json"])
        .await
        .ok()
        .json();
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["body"]["text"], "aviso 60");
    // It is scheduled for when the first of the 60 leaves the one-minute window.
    let next: chrono::DateTime<chrono::Utc> = pending[0]["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let wait = next - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::seconds(45) && wait <= chrono::Duration::seconds(61),
        "{wait}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_operations_and_conversation_controls() {
    let env = Env::start().await;
    env.bot_with(Some(include_str!("../../../examples/flows/support.toml")))
        .await;
    // A handoff keeps the bot quiet until an operator resumes it.
    let chat = |text: &'static str| {
        let env = &env;
        async move {
            env.ctl(&[
                "chat",
                "acme/ventas",
                "--as",
                "+5491100000004",
                "--send",
                text,
                "-o",
                "json",
            ])
            .await
            .ok()
            .json()
        }
    };
    chat("help").await;
    let handoff = chat("2").await;
    assert_eq!(
        handoff[0]["body"]["text"],
        "Connecting you with a person. Please hold on."
    );
    assert_eq!(chat("hello?").await, serde_json::json!([]));
    let list = env
        .ctl(&["conversation", "list", "acme/ventas", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(list[0]["status"], "handoff");
    env.ctl(&["conversation", "resume", "acme/ventas", "+5491100000004"])
        .await
        .ok();
    eventually(Duration::from_secs(5), || async {
        env.sandbox().await.last().map(String::as_str)
            == Some("Thanks for your patience. Anything else, just write *help*.")
    })
    .await;
    let again = env
        .ctl(&["conversation", "resume", "acme/ventas", "+5491100000004"])
        .await;
    assert_eq!(again.code, 5, "{}", again.stderr);

    // Reset forgets the state, keeps the transcript.
    chat("help").await;
    env.ctl(&[
        "conversation",
        "reset",
        "acme/ventas",
        "+5491100000004",
        "--yes",
    ])
    .await
    .ok();
    let shown = env
        .ctl(&[
            "conversation",
            "show",
            "acme/ventas",
            "+5491100000004",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(shown["status"], "idle");
    assert!(shown["transcript"].as_array().unwrap().len() > 5);
    // The next message starts from the reset state, not from the menu it had shown
    // (dashd keeps the conversations it committed in memory on SQLite).
    let after_reset = chat("2").await;
    assert_ne!(
        after_reset[0]["body"]["text"], "Connecting you with a person. Please hold on.",
        "{after_reset}"
    );

    // Queue: cancel only what is not sent; retry only what failed.
    let sent = env
        .ctl(&[
            "queue",
            "list",
            "--bot",
            "acme/ventas",
            "--limit",
            "1",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(env.ctl(&["queue", "cancel", &id]).await.code, 5);
    assert_eq!(env.ctl(&["queue", "retry", &id]).await.code, 5);
    let shown = env
        .ctl(&["queue", "show", &id, "-o", "json"])
        .await
        .ok()
        .json();
    let states: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "processing", "sent"]);
    assert_eq!(env.ctl(&["queue", "show", "not-a-uuid"]).await.code, 2);
    assert_eq!(
        env.ctl(&["queue", "show", &uuid::Uuid::new_v4().to_string()])
            .await
            .code,
        4
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_without_the_sandbox_cannot_be_chatted_with() {
    let env = Env::start().await;
    env.bot_with(Some(ECHO)).await;
    let run = env
        .ctl(&["bot", "update", "acme/ventas", "--chain", "meta"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = env.ctl(&["chat", "acme/ventas", "--send", "hola"]).await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("not the sandbox"), "{}", run.stderr);
    let run = env
        .ctl(&["send", "acme/ventas", "--to", "12345", "hola"])
        .await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("to:"), "{}", run.stderr);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_feed_streams_every_bots_replies() {
    let env = Env::start().await;
    env.bot_with(Some(ECHO)).await;
    let client = reqwest::Client::builder()
        .unix_socket(env.socket())
        .build()
        .unwrap();
    let mut feed = client
        .get("http://dashd/v1/sandbox/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(feed.headers()["content-type"], "application/x-ndjson");
    env.ctl(&[
        "chat",
        "acme/ventas",
        "--as",
        "+5491100000003",
        "--send",
        "eco",
    ])
    .await
    .ok();
    let bot_id = env.bot_id().await.to_string();
    let mut buffer = Vec::new();
    let line = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                return serde_json::from_slice::<Value>(&line).unwrap();
            }
            buffer.extend_from_slice(&feed.chunk().await.unwrap().unwrap());
        }
    })
    .await
    .unwrap();
    assert_eq!(line["type"], "reply");
    assert_eq!(line["bot_id"], bot_id);
    assert_eq!(line["body"]["text"], "eco");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_bots_hold_their_messages_and_deleting_one_with_unsent_messages_needs_force() {
    let env = Env::start().await;
    env.bot_with(Some(ECHO)).await;
    env.ctl(&["bot", "update", "acme/ventas", "--status", "paused"])
        .await
        .ok();
    let refused = env
        .ctl(&["send", "acme/ventas", "--to", "+5491100000006", "hola"])
        .await;
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(refused.stderr.contains("paused"), "{}", refused.stderr);
    // A message already accepted waits while the bot is paused...
    let bot = env
        .daemon()
        .store()
        .bot(&BotRef::Path {
            tenant: "acme".into(),
            bot: "ventas".into(),
        })
        .await
        .unwrap();
    let body = dash_core::api::MessageBody {
        text: "held".into(),
        ..Default::default()
    };
    env.daemon()
        .store()
        .enqueue(
            bot.id,
            bot.tenant_id,
            "+5491100000006",
            &body,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    env.daemon().pipeline().outbox_changed();
    // Held: the dispatcher postpones it (by a minute) instead of sending it.
    eventually(Duration::from_secs(10), || async {
        deferred_beyond(&env, chrono::Duration::seconds(30)).await == 1
    })
    .await;
    assert!(env.sandbox().await.is_empty(), "a paused bot sent");
    // ...and cannot be dropped with its bot by accident.
    let run = env.ctl(&["bot", "delete", "acme/ventas", "--yes"]).await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("1 message(s) waiting"),
        "{}",
        run.stderr
    );
    // Resumed, the bot sends what it held.
    env.ctl(&["bot", "update", "acme/ventas", "--status", "active"])
        .await
        .ok();
    eventually(Duration::from_secs(10), || async {
        env.sandbox().await == ["held"]
    })
    .await;
    env.ctl(&[
        "bot",
        "update",
        "acme/ventas",
        "--settings",
        r#"{"chain":["sandbox"],"rate_limit_per_minute":1}"#,
    ])
    .await
    .ok();
    env.ctl(&["send", "acme/ventas", "--to", "+5491100000006", "uno"])
        .await
        .ok();
    env.ctl(&["send", "acme/ventas", "--to", "+5491100000006", "dos"])
        .await
        .ok();
    // The limit of one a minute is used up by "held": both wait.
    assert_eq!(
        env.ctl(&["bot", "delete", "acme/ventas", "--yes"])
            .await
            .code,
        5
    );
    env.ctl(&["bot", "delete", "acme/ventas", "--yes", "--force"])
        .await
        .ok();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_says_when_the_bot_had_not_finished_answering() {
    let env = Env::start().await;
    env.bot_with(Some(ECHO)).await;
    env.ctl(&[
        "bot",
        "update",
        "acme/ventas",
        "--settings",
        r#"{"chain":["sandbox"],"rate_limit_per_minute":1}"#,
    ])
    .await
    .ok();
    let run = env
        .ctl(&[
            "chat",
            "acme/ventas",
            "--send",
            "uno",
            "--send",
            "dos",
            "--wait",
            "2",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("still working on"), "{}", run.stderr);
    assert!(run.stderr.contains("\"timeout\""), "{}", run.stderr);
    let replies: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(replies[0]["body"]["text"], "uno");
    assert_eq!(replies.as_array().unwrap().len(), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_limit_covers_all_its_bots() {
    let env = Env::with(|c| {
        c.dispatcher.tenant_rate_per_minute = 3;
        c.dispatcher.bot_rate_per_minute = 0;
    })
    .await;
    env.bot_with(None).await;
    env.ctl(&["bot", "create", "acme/soporte", "--chain", "sandbox"])
        .await
        .ok();
    for (bot, text) in [
        ("acme/ventas", "v1"),
        ("acme/soporte", "s1"),
        ("acme/ventas", "v2"),
        ("acme/soporte", "s2"),
    ] {
        env.ctl(&["send", bot, "--to", "+5491100000008", text])
            .await
            .ok();
    }
    eventually(Duration::from_secs(10), || async {
        let sent = env
            .ctl(&["queue", "list", "--state", "sent", "-o", "json"])
            .await
            .ok()
            .json();
        sent.as_array().unwrap().len() == 3
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        deferred_beyond(&env, chrono::Duration::seconds(10)).await == 1
    })
    .await;
    let pending = env
        .ctl(&["queue", "list", "--state", "pending", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        pending.as_array().unwrap().len(),
        1,
        "the fourth message of the tenant waits"
    );
    env.stop().await;
}

/// Pending outbox entries the dispatcher has postponed more than `by` into the future:
/// proof that it looked at them and decided to wait (no fixed sleep needed).
async fn deferred_beyond(env: &Env, by: chrono::Duration) -> usize {
    let pending = env
        .ctl(&["queue", "list", "--state", "pending", "-o", "json"])
        .await
        .ok()
        .json();
    let horizon = chrono::Utc::now() + by;
    pending
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["next_attempt_at"]
                .as_str()
                .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .is_some_and(|t| t > horizon)
        })
        .count()
}
