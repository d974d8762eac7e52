//! Pairing through a real bridge process: dashd in-process, the shared bridge server
//! (`bridges/common`) running on its test driver as a separate Node process (the phone
//! and WhatsApp are the only things stood in for), and the real `dashctl`. `session pair`
//! shows the QR and its rotation, then the paired number; a message through the bridge
//! reaches the flow and the reply goes out through the bridge; the bridge killed, the
//! session shows `disconnected` and replies fail over to the next provider; the bridge
//! back, the session is `ready` again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{Env, eventually, run_ctl};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

const ECHO: &str = r#"
default_flow = "echo"
[[flows]]
id = "echo"
steps = [{ id = "say", kind = "end", text = "{{ input }}" }]
"#;
const TOKEN: &str = "bridge-e2e-token-0123456789";

struct Bridge {
    child: Child,
    stdin: ChildStdin,
    url: String,
}

impl Bridge {
    /// Starts the bridge on its test driver, on `port`, posting to `dashd_url`.
    async fn start(data: &std::path::Path, dashd_url: &str, port: u16) -> Bridge {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../bridges/common/test/fixtures/test-bridge.js");
        let mut child = Command::new("node")
            .arg(script)
            .env("BRIDGE_TOKEN", TOKEN)
            .env("BRIDGE_DATA_DIR", data)
            .env("DASHD_URL", dashd_url)
            .env("BRIDGE_PORT", port.to_string())
            .env("TEST_BRIDGE_LIBRARY", "baileys")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node (Node 20) runs the bridge");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the bridge starts")
            .unwrap()
            .unwrap();
        let url = serde_json::from_str::<Value>(&first).unwrap()["listening"]
            .as_str()
            .unwrap()
            .to_owned();
        // Keep draining stdout so the bridge never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Bridge { child, stdin, url }
    }

    /// Acts as the phone or the network would.
    async fn command(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn session_state(env: &Env) -> Option<Value> {
    let run = env
        .ctl(&["-o", "json", "session", "show", "acme/ventas"])
        .await;
    (run.code == 0).then(|| run.json())
}

async fn wait_state(env: &Env, state: &str, within: Duration) {
    eventually(within, || async {
        session_state(env)
            .await
            .is_some_and(|s| s["state"] == state)
    })
    .await;
}

async fn transcript(env: &Env) -> Vec<Value> {
    let run = env
        .ctl(&[
            "-o",
            "json",
            "conversation",
            "show",
            "acme/ventas",
            "+15557654321",
        ])
        .await;
    if run.code != 0 {
        return Vec::new();
    }
    run.json()["transcript"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pair_through_a_bridge_then_talk_then_fail_over_and_come_back() {
    let env = Env::start().await;
    env.bot_with(Some(ECHO)).await;
    let session = env.bot_id().await.simple().to_string();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let dashd_url = format!("http://{}", env.daemon().http_addr);
    let mut bridge = Bridge::start(data.path(), &dashd_url, port).await;

    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), format!("{TOKEN}\n")).unwrap();
    env.ctl(&["chain", "set", "acme/ventas", "baileys,sandbox"])
        .await
        .ok();
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "baileys",
        "--set",
        &format!("base_url={}", bridge.url),
        "--secret",
        &format!("token=@{}", token.path().display()),
    ])
    .await
    .ok();

    // `session pair`, without a terminal: the QR payloads as lines, then the number.
    let cwd = tempfile::tempdir().unwrap();
    let socket = env.socket();
    let cwd_path = cwd.path().to_owned();
    let pair = tokio::spawn(async move {
        run_ctl(
            &cwd_path,
            Some(&socket),
            &["session", "pair", "acme/ventas", "--timeout", "60"],
        )
        .await
    });
    wait_state(&env, "qr", Duration::from_secs(20)).await;
    let first_qr = session_state(&env).await.unwrap()["qr"].clone();
    bridge
        .command(json!({"session": session, "do": "qr"}))
        .await;
    eventually(Duration::from_secs(10), || async {
        session_state(&env)
            .await
            .is_some_and(|s| s["qr"] != first_qr && s["qr"].is_string())
    })
    .await;
    bridge
        .command(json!({"session": session, "do": "pair", "phone": "15551234567"}))
        .await;
    let run = pair.await.unwrap().ok();
    let qrs: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("qr: "))
        .collect();
    assert!(qrs.len() >= 2, "{}", run.stdout);
    assert_ne!(qrs[0], qrs[qrs.len() - 1], "the rotated QR was shown");
    assert!(qrs.iter().all(|q| q.starts_with("2@TEST-")), "{qrs:?}");
    assert!(
        run.stdout.contains("paired") && run.stdout.contains("15551234567"),
        "{}",
        run.stdout
    );
    let ready = session_state(&env).await.unwrap();
    assert_eq!(ready["state"], "ready");
    assert_eq!(ready["phone"], "+15551234567");

    // A message through the bridge reaches the flow; the reply goes out through it.
    bridge
        .command(json!({"session": session, "do": "message", "message": {"text": "hola puente", "chat_id": "15557654321@c.us"}}))
        .await;
    eventually(Duration::from_secs(20), || async {
        transcript(&env).await.iter().any(|m| {
            m["direction"] == "out"
                && m["body"]["text"] == "hola puente"
                && m["state"] == "sent"
                && m["provider"] == "baileys"
        })
    })
    .await;

    // The bridge dies: the session shows disconnected, and replies go out through the
    // next provider (the sandbox).
    bridge.child.kill().await.unwrap();
    env.ctl(&[
        "send",
        "acme/ventas",
        "--to",
        "+15557654321",
        "while the bridge is down",
    ])
    .await
    .ok();
    eventually(Duration::from_secs(20), || async {
        transcript(&env).await.iter().any(|m| {
            m["body"]["text"] == "while the bridge is down"
                && m["state"] == "sent"
                && m["provider"] == "sandbox"
        })
    })
    .await;
    wait_state(&env, "disconnected", Duration::from_secs(30)).await;

    // The bridge back on the same data: the session is restored and ready again.
    let _bridge = Bridge::start(data.path(), &dashd_url, port).await;
    wait_state(&env, "ready", Duration::from_secs(30)).await;
    env.stop().await;
}
