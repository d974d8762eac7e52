//! End-to-end: `dashctl chain` and `dashctl provider` against a real dashd started
//! in-process, with local stand-ins for the providers' APIs. Above all: a secret goes in
//! from a file or stdin and never comes out, in any command's output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::{Env, Run};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Secrets the tests write; none may ever appear in what dashctl prints.
const FILE_SECRET: &str = "file-secret-42";
const STDIN_SECRET: &str = "stdin-secret-7f3a";
const TYPED_SECRET: &str = "typed-secret-9c1e";
/// `Authorization: Basic` of `AC123:file-secret-42`.
const TWILIO_BASIC_AUTH: &str = "QUMxMjM6ZmlsZS1zZWNyZXQtNDI=";

/// Runs dashctl and keeps everything it printed, to check at the end that no secret
/// was ever among it.
struct Recorder<'a> {
    env: &'a Env,
    printed: Mutex<String>,
}

impl<'a> Recorder<'a> {
    fn new(env: &'a Env) -> Self {
        Self {
            env,
            printed: Mutex::new(String::new()),
        }
    }

    async fn ctl(&self, args: &[&str]) -> Run {
        let run = self.env.ctl(args).await;
        self.keep(&run);
        run
    }

    /// Runs dashctl with `input` on its stdin (a pipe, as in `pass show x | dashctl ...`).
    async fn ctl_with_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dashctl"))
            .args(args)
            .current_dir(self.env.dir.path())
            .env("DASHCTL_SOCKET", self.env.socket())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        let output = child.wait_with_output().await.unwrap();
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        self.keep(&run);
        run
    }

    fn keep(&self, run: &Run) {
        let mut printed = self.printed.lock().unwrap();
        printed.push_str(&run.stdout);
        printed.push_str(&run.stderr);
    }

    /// Fails if any of `secrets` was printed by any command run so far.
    #[track_caller]
    fn assert_never_printed(&self, secrets: &[&str]) {
        let printed = self.printed.lock().unwrap();
        assert!(printed.len() > 1000, "too little was recorded to tell");
        for secret in secrets {
            assert!(
                !printed.contains(secret),
                "{secret} was printed:\n{printed}"
            );
        }
    }
}

/// A provider API stand-in: answers every request `200` with `body`, and keeps each
/// request's head (request line and headers).
struct FakeApi {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    async fn start(body: &'static str) -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakeApi { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// A local URL nothing listens on.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn names(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_round_trip() {
    let env = Env::start().await;
    env.bot_with(None).await;

    let shown = env
        .ctl(&["chain", "show", "acme/ventas", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(names(&shown["chain"]), ["sandbox"]);
    assert_eq!(shown["bot"], "acme/ventas");
    assert_eq!(shown["fallback_threshold_errors"], 3);
    assert_eq!(shown["fallback_cooldown_seconds"], 300);

    let set = env
        .ctl(&[
            "chain",
            "set",
            "acme/ventas",
            "meta,twilio",
            "--threshold",
            "5",
            "--cooldown",
            "60",
            "-o",
            "json",
        ])
        .await
        .ok();
    // Neither has settings yet: said on stderr, the JSON stays clean.
    assert!(
        set.stderr.contains("warning: meta has no settings yet")
            && set.stderr.contains("warning: twilio has no settings yet"),
        "{}",
        set.stderr
    );
    let set = set.json();
    assert_eq!(names(&set["chain"]), ["meta", "twilio"]);
    assert_eq!(set["fallback_threshold_errors"], 5);
    assert_eq!(set["fallback_cooldown_seconds"], 60);
    let states: Vec<&str> = set["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["meta", "twilio"]);

    // What was set is what is read back, by path or by id.
    let id = env.bot_id().await.to_string();
    let by_id = env
        .ctl(&["chain", "show", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(by_id, set);
    let table = env.ctl(&["chain", "show", "acme/ventas"]).await.ok().stdout;
    assert!(table.contains("meta → twilio"), "{table}");
    assert!(table.contains("after 5 failed sends in a row"), "{table}");
    assert!(table.contains("1m 0s"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("twilio") && l.contains("closed")),
        "{table}"
    );

    // Options not given keep their value.
    let reordered = env
        .ctl(&[
            "chain",
            "set",
            "acme/ventas",
            "twilio,sandbox",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(names(&reordered["chain"]), ["twilio", "sandbox"]);
    assert_eq!(reordered["fallback_threshold_errors"], 5);
    assert_eq!(reordered["fallback_cooldown_seconds"], 60);

    // Refusals change nothing.
    env.ctl(&["chain", "set", "acme/ventas", "meta,pigeon"])
        .await
        .fails(2, "\"pigeon\" is not a provider");
    env.ctl(&["chain", "set", "acme/ventas", "meta,twilio,meta"])
        .await
        .fails(2, "meta is listed twice");
    env.ctl(&["chain", "set", "acme/ventas", "sandbox", "--threshold", "0"])
        .await
        .fails(2, "fallback_threshold_errors");
    env.ctl(&["chain", "set", "acme/ventas"])
        .await
        .fails(2, "PROVIDER");
    env.ctl(&["chain", "set", "acme/ghost", "sandbox"])
        .await
        .fails(4, "not found");
    let unchanged = env
        .ctl(&["chain", "show", "acme/ventas", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(unchanged, reordered);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_go_in_from_files_and_stdin_and_never_come_out() {
    let env = Env::start().await;
    env.bot_with(None).await;
    let ctl = Recorder::new(&env);
    let twilio_api = FakeApi::start(r#"{"status":"active","friendly_name":"Acme"}"#).await;
    let bridge_api = FakeApi::start(r#"{"ok":true,"session":"shop-1","state":"ready"}"#).await;
    ctl.ctl(&["chain", "set", "acme/ventas", "twilio,baileys,sandbox"])
        .await
        .ok();

    // A secret from a file, its trailing newline dropped.
    let token_file = env.dir.path().join("twilio.token");
    std::fs::write(&token_file, format!("{FILE_SECRET}\n")).unwrap();
    let secret_arg = format!("auth_token=@{}", token_file.display());
    let twilio_url = twilio_api.url();
    let set = ctl
        .ctl(&[
            "provider",
            "set",
            "acme/ventas",
            "twilio",
            "--set",
            &format!("base_url={twilio_url}"),
            "--set",
            "account_sid=AC123",
            "--set",
            "from=+14155238886",
            "--secret",
            &secret_arg,
        ])
        .await
        .ok();
    assert!(
        set.stdout.contains("twilio settings of acme/ventas saved"),
        "{}",
        set.stdout
    );
    assert!(
        set.stdout
            .lines()
            .any(|l| l.starts_with("auth_token") && l.contains(" set ") && l.contains("secret")),
        "{}",
        set.stdout
    );
    // The webhook URL and what to do with it; what is missing, as a warning.
    assert!(set.stdout.contains("/webhook/twilio/"), "{}", set.stdout);
    assert!(
        set.stdout.contains("On the provider's side:"),
        "{}",
        set.stdout
    );
    assert!(
        set.stderr.contains("warning:") && set.stderr.contains("public_url"),
        "{}",
        set.stderr
    );
    let webhook = ctl
        .ctl(&["provider", "show", "acme/ventas", "twilio", "-o", "json"])
        .await
        .ok()
        .json()["webhook_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let completed = ctl
        .ctl(&[
            "provider",
            "set",
            "acme/ventas",
            "twilio",
            "--set",
            &format!("public_url={webhook}"),
            "-o",
            "json",
        ])
        .await
        .ok();
    assert!(
        !completed.stderr.contains("warning"),
        "{}",
        completed.stderr
    );
    let completed = completed.json();
    assert_eq!(completed["secrets"]["auth_token"], "set");
    assert_eq!(completed["settings"]["account_sid"], "AC123");
    assert!(completed.get("missing").is_none(), "{completed}");

    // A secret from stdin.
    let bridge_url = bridge_api.url();
    ctl.ctl_with_stdin(
        &[
            "provider",
            "set",
            "acme/ventas",
            "baileys",
            "--set",
            &format!("base_url={bridge_url}"),
            "--set",
            "session=shop-1",
            "--secret",
            "token=-",
        ],
        &format!("{STDIN_SECRET}\n"),
    )
    .await
    .ok();
    let baileys = ctl
        .ctl(&["provider", "show", "acme/ventas", "baileys", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(baileys["secrets"], json!({"token": "set"}));
    assert_eq!(baileys["settings"]["session"], "shop-1");
    let shown = ctl
        .ctl(&["provider", "show", "acme/ventas", "baileys"])
        .await
        .ok()
        .stdout;
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("token") && l.contains("set") && !l.contains("not set")),
        "{shown}"
    );

    // The secrets reached the providers exactly as written, newline dropped: the probes
    // succeed with them.
    let probe = ctl
        .ctl(&["provider", "test", "acme/ventas", "twilio", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(probe["ok"], true, "{probe}");
    assert!(
        twilio_api
            .heads()
            .iter()
            .any(|h| h.contains("/2010-04-01/Accounts/AC123.json")
                && h.to_ascii_lowercase().contains(&format!(
                    "authorization: basic {}",
                    TWILIO_BASIC_AUTH.to_ascii_lowercase()
                ))),
        "{:?}",
        twilio_api.heads()
    );
    let probe = ctl
        .ctl(&["provider", "test", "acme/ventas", "baileys"])
        .await
        .ok()
        .stdout;
    assert!(probe.contains("ok"), "{probe}");
    assert!(
        bridge_api
            .heads()
            .iter()
            .any(|h| h.contains(&format!("Bearer {STDIN_SECRET}\r\n"))
                || h.contains(&format!("bearer {STDIN_SECRET}\r\n"))),
        "{:?}",
        bridge_api.heads()
    );

    // Everything that shows an entry, in both formats.
    for format in ["table", "json"] {
        for args in [
            &["provider", "list", "acme/ventas"][..],
            &["provider", "show", "acme/ventas", "twilio"],
            &["provider", "show", "acme/ventas", "baileys"],
            &["provider", "status"],
            &["provider", "status", "acme/ventas"],
            &["chain", "show", "acme/ventas"],
        ] {
            let mut args = args.to_vec();
            args.extend(["-o", format]);
            ctl.ctl(&args).await.ok();
        }
    }
    let list = ctl
        .ctl(&["provider", "list", "acme/ventas"])
        .await
        .ok()
        .stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("twilio") && l.contains("#1") && l.contains("1 of 1 set")),
        "{list}"
    );

    // Refusals, none of which may echo what they refuse.
    ctl.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--secret",
        &format!("auth_token={TYPED_SECRET}"),
    ])
    .await
    .fails(2, "auth_token=@FILE");
    ctl.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--secret",
        TYPED_SECRET,
    ])
    .await
    .fails(2, "NAME=@FILE");
    ctl.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--secret",
        &format!("auth_token={TYPED_SECRET}"),
        "-o",
        "json",
    ])
    .await
    .fails(2, "\"validation_failed\"");
    // A secret given as a setting: dashd refuses it and says how.
    ctl.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--set",
        &format!("auth_token={TYPED_SECRET}"),
    ])
    .await
    .fails(
        2,
        "auth_token is a secret: give it with --secret auth_token=@FILE",
    );
    ctl.ctl_with_stdin(
        &[
            "provider",
            "set",
            "acme/ventas",
            "evolution",
            "--secret",
            "api_key=-",
            "--secret",
            "webhook_token=-",
        ],
        STDIN_SECRET,
    )
    .await
    .fails(2, "only one --secret can be read from stdin");
    let missing_file = env.dir.path().join("nowhere.token");
    ctl.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--secret",
        &format!("auth_token=@{}", missing_file.display()),
    ])
    .await
    .fails(2, "nowhere.token: cannot read it");

    // The refusals changed nothing: the probe still passes with the stored secret.
    ctl.ctl(&["provider", "test", "acme/ventas", "twilio"])
        .await
        .ok();
    ctl.assert_never_printed(&[FILE_SECRET, STDIN_SECRET, TYPED_SECRET]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_by_dashd() {
    let env = Env::start().await;
    env.bot_with(None).await;
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--set",
        "colour=blue",
    ])
    .await
    .fails(2, "\"colour\" is not a twilio setting: use base_url");
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--set",
        "from=12",
    ])
    .await
    .fails(2, "E.164");
    env.ctl(&["provider", "set", "acme/ventas", "pigeon", "--set", "a=b"])
        .await
        .fails(2, "\"pigeon\" is not a provider");
    env.ctl(&["provider", "set", "acme/ventas", "twilio"])
        .await
        .fails(2, "nothing to change");
    env.ctl(&["provider", "set", "acme/ventas", "twilio", "--set", "from"])
        .await
        .fails(2, "NAME=VALUE");
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--set",
        "from=+14155238886",
        "--unset",
        "from",
    ])
    .await
    .fails(2, "more than once");
    // None of it was stored.
    assert_eq!(
        env.ctl(&["provider", "list", "acme/ventas", "-o", "json"])
            .await
            .ok()
            .json(),
        json!([])
    );
    let empty = env.ctl(&["provider", "list", "acme/ventas"]).await.ok();
    assert!(
        empty.stdout.is_empty() && empty.stderr.contains("no provider settings yet"),
        "{}",
        empty.stderr
    );

    // --unset puts a setting back to its default.
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--set",
        "base_url=http://127.0.0.1:9",
    ])
    .await
    .ok();
    let reset = env
        .ctl(&[
            "provider",
            "set",
            "acme/ventas",
            "twilio",
            "--unset",
            "base_url",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(reset["settings"]["base_url"], "https://api.twilio.com");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_delete_asks_first() {
    let env = Env::start().await;
    env.bot_with(None).await;
    env.ctl(&["chain", "set", "acme/ventas", "meta,sandbox"])
        .await
        .ok();
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "meta",
        "--set",
        "phone_number_id=123456",
    ])
    .await
    .ok();

    let refused = env
        .ctl(&["provider", "delete", "acme/ventas", "meta"])
        .await
        .fails(2, "--yes");
    assert!(
        refused.stderr.contains("meta stays in the bot's chain"),
        "{}",
        refused.stderr
    );
    let kept = env
        .ctl(&["provider", "show", "acme/ventas", "meta", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(kept["settings"]["phone_number_id"], "123456");

    let deleted = env
        .ctl(&["provider", "delete", "acme/ventas", "meta", "--yes"])
        .await
        .ok();
    assert!(
        deleted
            .stdout
            .contains("meta settings of acme/ventas deleted"),
        "{}",
        deleted.stdout
    );
    let gone = env
        .ctl(&["provider", "show", "acme/ventas", "meta", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(gone["settings"].get("phone_number_id").is_none(), "{gone}");
    assert!(gone.get("updated_at").is_none(), "{gone}");
    // Nothing left: said without asking.
    env.ctl(&["provider", "delete", "acme/ventas", "meta"])
        .await
        .fails(4, "bot acme/ventas has no meta settings");
    env.ctl(&[
        "provider",
        "rm",
        "acme/ventas",
        "meta",
        "--yes",
        "-o",
        "json",
    ])
    .await
    .fails(4, "not_found");
    env.ctl(&["provider", "delete", "acme/ventas", "sandbox", "--yes"])
        .await
        .fails(2, "the sandbox takes no settings");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_chain_entry() {
    let env = Env::start().await;
    env.bot_with(None).await;
    env.ctl(&["bot", "create", "acme/soporte", "--chain", "sandbox"])
        .await
        .ok();
    env.ctl(&["chain", "set", "acme/ventas", "meta,twilio"])
        .await
        .ok();

    let all = env
        .ctl(&["provider", "status", "-o", "json"])
        .await
        .ok()
        .json();
    let entries: Vec<(String, String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|chain| {
            let bot = chain["bot"].as_str().unwrap().to_owned();
            chain["providers"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |p| {
                    (
                        bot.clone(),
                        p["provider"].as_str().unwrap().to_owned(),
                        p["breaker"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut expected = [
        ("acme/soporte", "sandbox"),
        ("acme/ventas", "meta"),
        ("acme/ventas", "twilio"),
    ]
    .map(|(b, p)| (b.to_owned(), p.to_owned(), "closed".to_owned()))
    .to_vec();
    let mut entries = entries;
    entries.sort();
    expected.sort();
    assert_eq!(entries, expected);

    let table = env.ctl(&["provider", "status"]).await.ok().stdout;
    let header = table.lines().next().unwrap();
    for column in [
        "BOT",
        "PROVIDER",
        "BREAKER",
        "FAILURES",
        "OPEN UNTIL",
        "LAST ERROR",
        "LAST SUCCESS",
        "P50 LATENCY",
    ] {
        assert!(header.contains(column), "{header}");
    }
    for (bot, provider) in [
        ("acme/soporte", "sandbox"),
        ("acme/ventas", "meta"),
        ("acme/ventas", "twilio"),
    ] {
        assert!(
            table.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.starts_with(&[bot, provider, "closed", "0"])
            }),
            "{table}"
        );
    }
    let one = env
        .ctl(&["provider", "status", "acme/soporte", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["bot"], "acme/soporte");
    env.ctl(&["provider", "status", "acme/ghost"])
        .await
        .fails(4, "not found");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_exits_non_zero_and_feeds_the_breaker() {
    let env = Env::start().await;
    env.bot_with(None).await;
    env.ctl(&["chain", "set", "acme/ventas", "twilio,sandbox"])
        .await
        .ok();
    let token_file = env.dir.path().join("token");
    std::fs::write(&token_file, FILE_SECRET).unwrap();
    let closed = closed_port_url();
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "twilio",
        "--set",
        &format!("base_url={closed}"),
        "--set",
        "account_sid=AC123",
        "--set",
        "from=+14155238886",
        "--set",
        "public_url=https://bots.example.com/webhook/twilio/x",
        "--secret",
        &format!("auth_token=@{}", token_file.display()),
    ])
    .await
    .ok();

    let failed = env
        .ctl(&["provider", "test", "acme/ventas", "twilio"])
        .await
        .fails(1, "the twilio probe of acme/ventas failed");
    assert!(
        failed.stdout.contains("failed (retryable)"),
        "{}",
        failed.stdout
    );
    let json = env
        .ctl(&["provider", "test", "acme/ventas", "twilio", "-o", "json"])
        .await
        .fails(1, "\"probe_failed\"");
    let result: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(result["ok"], false);
    assert_eq!(result["provider"], "twilio");
    assert!(!result["detail"].as_str().unwrap().is_empty(), "{result}");

    // Both failures count against the breaker, and the last error is shown.
    let status = env
        .ctl(&["provider", "status", "acme/ventas", "-o", "json"])
        .await
        .ok()
        .json();
    let twilio = &status[0]["providers"][0];
    assert_eq!(twilio["provider"], "twilio");
    assert_eq!(twilio["consecutive_failures"], 2, "{status}");
    assert!(twilio["last_error"].is_string(), "{status}");
    let table = env
        .ctl(&["provider", "status", "acme/ventas"])
        .await
        .ok()
        .stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("acme/ventas") && l.contains("twilio") && l.contains(" 2 ")),
        "{table}"
    );
    assert!(!failed.stdout.contains(FILE_SECRET) && !failed.stderr.contains(FILE_SECRET));

    // A provider without its settings fails its probe too.
    env.ctl(&["provider", "test", "acme/ventas", "meta"])
        .await
        .fails(1, "probe");
    env.stop().await;
}
