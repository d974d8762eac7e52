//! What a customer writes reaches the operator's terminal inert: dashctl's table and text
//! output holds no terminal control sequence, whatever the message contained, while the
//! JSON output keeps the text exactly (escaped by JSON itself).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{Env, Run};

const ECHO: &str = r#"
default_flow = "echo"
[[flows]]
id = "echo"
steps = [{ id = "say", kind = "end", text = "you said: {{ input }}" }]
"#;

/// Retitles the window, then clears the screen.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2Jhello \u{9b}31m\u{202e}gnp.exe\r";

/// The same text as dashctl shows it.
const SHOWN: &str = "^[]0;pwned^G^[[2Jhello \u{FFFD}31m\u{FFFD}gnp.exe^M";

const CONTACT: &str = "+5491100000009";

#[track_caller]
fn assert_inert(run: &Run) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        let control = text.chars().find(|c| {
            (c.is_control() && *c != '\n' && *c != '\t') || ('\u{202a}'..='\u{202e}').contains(c)
        });
        assert!(control.is_none(), "{stream} holds {control:?}: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_text_is_printed_without_control_sequences() {
    let env = Env::start().await;
    env.bot_with(Some(ECHO)).await;

    // The reply, as `dashctl chat` prints it.
    let chat = env
        .ctl(&["chat", "acme/ventas", "--as", CONTACT, "--send", HOSTILE])
        .await
        .ok();
    assert_inert(&chat);
    assert!(
        chat.stdout.contains(&format!("you said: {SHOWN}")),
        "{:?}",
        chat.stdout
    );

    // The transcript: the customer's message and the bot's echo.
    let show = env
        .ctl(&["conversation", "show", "acme/ventas", CONTACT])
        .await
        .ok();
    assert_inert(&show);
    assert!(show.stdout.contains(SHOWN), "{:?}", show.stdout);

    // Tables: the outbox with the echo in its TEXT column, the outbox entry in detail.
    let queue = env.ctl(&["queue", "list"]).await.ok();
    assert_inert(&queue);
    assert!(queue.stdout.contains("^[]0;pwned"), "{:?}", queue.stdout);
    let id = env.ctl(&["queue", "list", "-o", "json"]).await.ok().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let entry = env.ctl(&["queue", "show", &id]).await.ok();
    assert_inert(&entry);
    assert!(entry.stdout.contains(SHOWN), "{:?}", entry.stdout);

    // JSON keeps the exact text: nothing is lost, only escaped.
    let json = env
        .ctl(&["conversation", "show", "acme/ventas", CONTACT, "-o", "json"])
        .await
        .ok();
    let transcript = json.json()["transcript"].clone();
    assert_eq!(transcript[0]["body"]["text"], HOSTILE);
    assert!(!json.stdout.contains('\x1b'));
    env.stop().await;
}
