//! `dashctl session` against a real dashd: what it says before a bridge is configured,
//! when the bridge cannot be reached, and the session list. Pairing through a running
//! bridge process is tested with the bridges themselves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::net::TcpListener;

use common::Env;

/// A local URL nothing listens on.
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_commands_explain_what_is_missing() {
    let env = Env::start().await;
    env.bot_with(None).await;
    // No bridge anywhere yet.
    let run = env.ctl(&["session", "list"]).await.ok();
    assert!(
        run.stderr.contains("no bridge sessions yet"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.ctl(&["-o", "json", "session", "list"])
            .await
            .ok()
            .json(),
        serde_json::json!([])
    );
    // The chain has no bridge.
    env.ctl(&["session", "pair", "acme/ventas"])
        .await
        .fails(2, "has no provider paired by QR code");
    env.ctl(&["session", "pair", "acme/ventas", "--provider", "meta"])
        .await
        .fails(2, "has no sessions to pair");
    // In the chain, but not configured.
    env.ctl(&["chain", "set", "acme/ventas", "baileys,sandbox"])
        .await
        .ok();
    env.ctl(&["session", "pair", "acme/ventas"])
        .await
        .fails(5, "has no baileys settings");
    // Configured, but the bridge is not running: dashd says so.
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "bridge-token\n").unwrap();
    let secret = format!("token=@{}", token.path().display());
    let url = closed_port_url();
    env.ctl(&[
        "provider",
        "set",
        "acme/ventas",
        "baileys",
        "--set",
        &format!("base_url={url}"),
        "--secret",
        &secret,
    ])
    .await
    .ok();
    env.ctl(&["session", "pair", "acme/ventas", "--timeout", "5"])
        .await
        .fails(1, "the baileys bridge");
    env.stop().await;
}
