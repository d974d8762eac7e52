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

/// Puts the bridge in front of acme/ventas's chain (`baileys,sandbox`) with its token;
/// the token file lives as long as the value returned.
async fn use_bridge(env: &Env, url: &str) -> tempfile::NamedTempFile {
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
        &format!("base_url={url}"),
        "--secret",
        &format!("token=@{}", token.path().display()),
    ])
    .await
    .ok();
    token
}

/// Runs dashctl in a pseudo-terminal (util-linux `script`), as an operator would; returns
/// its exit code and everything the terminal showed.
async fn run_ctl_in_terminal(socket: &std::path::Path, args: &[&str]) -> (i32, String) {
    let command = std::iter::once(env!("CARGO_BIN_EXE_dashctl"))
        .chain(args.iter().copied())
        .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("DASHCTL_SOCKET", socket)
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("util-linux script runs dashctl in a terminal");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The screen's text without terminal control sequences (cursor moves, colours), with
/// what a carriage return overwrote dropped.
fn plain_lines(screen: &str) -> Vec<String> {
    let mut text = String::new();
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            text.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    text.split('\n')
        .map(|line| {
            let line = line.trim_end_matches('\r');
            line.rsplit('\r').next().unwrap_or(line).to_owned()
        })
        .collect()
}

/// Each QR code drawn on the screen: runs of lines made only of half-blocks.
fn drawings(screen: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in plain_lines(screen) {
        let blocks = line.chars().count() >= 21 && line.chars().all(|c| " ▀▄█".contains(c));
        if blocks {
            current.push(line);
        } else if !current.is_empty() {
            found.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        found.push(current);
    }
    found
}

/// Reads a drawn QR code as a phone camera would: the half-blocks back into modules
/// (drawn characters are the light ones, the terminal's default), a picture of them, and
/// a QR decoder on the picture. Returns the payload.
fn decode(lines: &[String]) -> String {
    let mut light: Vec<Vec<bool>> = Vec::new();
    for line in lines {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in line.chars() {
            top.push(matches!(c, '█' | '▀'));
            bottom.push(matches!(c, '█' | '▄'));
        }
        light.push(top);
        light.push(bottom);
    }
    const SCALE: usize = 4;
    let height = light.len();
    let width = light.iter().map(Vec::len).max().unwrap_or(0);
    let mut picture =
        rqrr::PreparedImage::prepare_from_greyscale(width * SCALE, height * SCALE, |x, y| {
            let row = &light[y / SCALE];
            if row.get(x / SCALE).copied().unwrap_or(true) {
                255
            } else {
                0
            }
        });
    let grids = picture.detect_grids();
    assert_eq!(
        grids.len(),
        1,
        "one QR code in the drawing:\n{}",
        lines.join("\n")
    );
    let (_, payload) = grids[0].decode().expect("the drawing decodes");
    payload
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
    let mut env = Env::start().await;
    env.bot_with(Some(ECHO)).await;
    let session = env.bot_id().await.simple().to_string();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let dashd_url = format!("http://{}", env.daemon().http_addr);
    let mut bridge = Bridge::start(data.path(), &dashd_url, port).await;

    let _token = use_bridge(&env, &bridge.url).await;

    // `session pair` in a terminal, as an operator runs it: the QR drawn in half-blocks,
    // redrawn when it rotates, then the paired number.
    let socket = env.socket();
    let pair = tokio::spawn(async move {
        run_ctl_in_terminal(
            &socket,
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
    let rotated_qr = session_state(&env).await.unwrap()["qr"].clone();
    // Give the terminal a moment to draw the rotated code before the phone scans.
    tokio::time::sleep(Duration::from_millis(500)).await;
    bridge
        .command(json!({"session": session, "do": "pair", "phone": "15551234567"}))
        .await;
    let (code, screen) = pair.await.unwrap();
    assert_eq!(code, 0, "{screen}");
    let drawn: Vec<String> = drawings(&screen).iter().map(|d| decode(d)).collect();
    assert!(drawn.len() >= 2, "{screen}");
    assert_eq!(drawn[0], first_qr.as_str().unwrap(), "the first QR scans");
    assert_eq!(
        drawn[drawn.len() - 1],
        rotated_qr.as_str().unwrap(),
        "the rotated QR was redrawn and scans"
    );
    assert!(
        screen.contains("paired") && screen.contains("15551234567"),
        "{screen}"
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
    let mut bridge = Bridge::start(data.path(), &dashd_url, port).await;
    wait_state(&env, "ready", Duration::from_secs(30)).await;

    // No event lost: dashd stops; a customer writes; the bridge keeps the message in its
    // on-disk queue, and is killed too. Both come back: the message reaches the flow and
    // the reply goes out through the bridge.
    let addr = env.stop_daemon().await;
    bridge
        .command(json!({"session": session, "do": "message", "message": {"text": "while dashd was down", "chat_id": "15557654321@c.us"}}))
        .await;
    eventually(Duration::from_secs(10), || async {
        std::fs::read_dir(data.path().join("events").join(&session))
            .map(|dir| {
                dir.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .unwrap_or(false)
    })
    .await;
    bridge.child.kill().await.unwrap();
    let _bridge = Bridge::start(data.path(), &dashd_url, port).await;
    env.start_again(addr).await;
    eventually(Duration::from_secs(40), || async {
        transcript(&env).await.iter().any(|m| {
            m["direction"] == "out"
                && m["body"]["text"] == "while dashd was down"
                && m["state"] == "sent"
                && m["provider"] == "baileys"
        })
    })
    .await;
    let inbound = transcript(&env)
        .await
        .iter()
        .filter(|m| m["direction"] == "in" && m["body"]["text"] == "while dashd was down")
        .count();
    assert_eq!(inbound, 1, "the queued message arrived once");
    env.stop().await;
}

/// `session pair --pairing-code`: the code to type on the phone instead of a QR, then the
/// paired number; `--png` writes the QR as a picture; a bridge event for a session no
/// bot owns is refused as such (404 `unknown_session`), so the bridge sets it aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pair_by_pairing_code_and_write_the_qr_as_png() {
    let env = Env::start().await;
    env.bot_with(Some(ECHO)).await;
    let session = env.bot_id().await.simple().to_string();
    let data = tempfile::tempdir().unwrap();
    let dashd_url = format!("http://{}", env.daemon().http_addr);
    let mut bridge = Bridge::start(data.path(), &dashd_url, free_port()).await;
    let _token = use_bridge(&env, &bridge.url).await;

    // A bad number is refused before anything starts.
    env.ctl(&["session", "pair", "acme/ventas", "--pairing-code", "12ab"])
        .await
        .fails(2, "country code");

    let cwd = tempfile::tempdir().unwrap();
    let socket = env.socket();
    let cwd_path = cwd.path().to_owned();
    let pair = tokio::spawn(async move {
        run_ctl(
            &cwd_path,
            Some(&socket),
            &[
                "session",
                "pair",
                "acme/ventas",
                "--pairing-code",
                "+1 555 123-4567",
                "--timeout",
                "60",
            ],
        )
        .await
    });
    eventually(Duration::from_secs(20), || async {
        session_state(&env)
            .await
            .is_some_and(|s| s["pairing_code"] == "TEST-4567")
    })
    .await;
    bridge
        .command(json!({"session": session, "do": "pair", "phone": "15551234567"}))
        .await;
    let run = pair.await.unwrap().ok();
    assert!(
        run.stdout.contains("pairing code: TEST-4567"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("qr: "), "{}", run.stdout);
    assert!(run.stdout.contains("+15551234567"), "{}", run.stdout);

    // A customer known by phone; the library learns their LID: dashd links the two, so
    // the LID finds the same conversation (one customer, one conversation).
    bridge
        .command(json!({"session": session, "do": "message", "message": {"text": "hola", "chat_id": "15557654321@c.us"}}))
        .await;
    eventually(Duration::from_secs(20), || async {
        transcript(&env)
            .await
            .iter()
            .any(|m| m["direction"] == "out")
    })
    .await;
    bridge
        .command(json!({"session": session, "do": "lid_mapping", "lid": "99887766554433@lid", "phone": "15557654321"}))
        .await;
    eventually(Duration::from_secs(20), || async {
        let run = env
            .ctl(&[
                "-o",
                "json",
                "conversation",
                "show",
                "acme/ventas",
                "99887766554433@lid",
            ])
            .await;
        run.code == 0 && run.json()["contact"] == "+15557654321"
    })
    .await;

    // Logged out, then paired again by QR with --png: the picture is the QR shown.
    env.ctl(&["--yes", "session", "logout", "acme/ventas"])
        .await
        .ok();
    let png = cwd.path().join("qr.png");
    let socket = env.socket();
    let cwd_path = cwd.path().to_owned();
    let png_arg = png.to_str().unwrap().to_owned();
    let pair = tokio::spawn(async move {
        run_ctl(
            &cwd_path,
            Some(&socket),
            &[
                "session",
                "pair",
                "acme/ventas",
                "--png",
                &png_arg,
                "--timeout",
                "60",
            ],
        )
        .await
    });
    eventually(Duration::from_secs(20), || async { png.exists() }).await;
    bridge
        .command(json!({"session": session, "do": "pair", "phone": "15551234567"}))
        .await;
    let run = pair.await.unwrap().ok();
    let qr = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("qr: "))
        .next_back()
        .unwrap()
        .to_owned();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    assert!(run.stdout.contains("qr png: "), "{}", run.stdout);
    assert!(qr.starts_with("2@TEST-"), "{qr}");

    // An event for a session nobody owns: 404 unknown_session, nothing stored.
    let answer = reqwest::Client::new()
        .post(format!("{dashd_url}/webhook/bridge/baileys"))
        .header("content-type", "application/json")
        .body(r#"{"event":"qr","session":"nobody","data":{"qr":"2@x"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_session");
    env.stop().await;
}
