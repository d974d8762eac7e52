//! docs/api.md run as written: every `sh` block of the page, in order, in one bash
//! session, against a fresh dashd, with `BASE` set to its address, `PASSWORD` and
//! `ROOT_PASSWORD` set, and this build's `dashctl` first on the `PATH`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::process::Stdio;

const API_DOC: &str = include_str!("../../../docs/api.md");

/// The `sh` blocks of the page, in order.
fn blocks() -> Vec<String> {
    API_DOC
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_example_of_the_api_page_runs_as_written() {
    let blocks = blocks();
    assert!(blocks.len() >= 10, "{blocks:?}");
    let env = common::Env::start().await;
    // `dashctl` of this build, found by name as the docs call it.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dashctl"), bin.path().join("dashctl")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut script = String::from("set -euo pipefail\n");
    for (n, block) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '--- block {n}'\n{block}\necho\n"));
    }
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env("BASE", format!("http://{}", env.daemon().http_addr))
        .env("PASSWORD", "Horno-Martes-77")
        .env("ROOT_PASSWORD", "Consola-Raiz-2026")
        .env("DASHCTL_SOCKET", env.socket())
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // Every block ran, and what the steps promise is there.
    assert!(
        stdout.contains(&format!("--- block {}", blocks.len() - 1)),
        "{stdout}"
    );
    assert!(stdout.contains("\"kind\":\"user\""), "{stdout}");
    assert!(stdout.contains("\"status\":\"confirmed\""), "{stdout}");
    assert!(stdout.contains("\"total_cents\":900000"), "{stdout}");
    assert!(stdout.contains("event: order.created"), "{stdout}");
    assert!(stdout.contains("event: order.updated"), "{stdout}");
    assert!(!stdout.contains("\"error\""), "{stdout}");
    env.stop().await;
}
