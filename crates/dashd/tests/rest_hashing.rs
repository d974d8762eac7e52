//! bcrypt (cost 12) runs on blocking threads, a bounded number at once: while twenty
//! logins hash, `/health` keeps answering within 50 ms. In a file of its own, so no other
//! test's work shares the machine with the measurement.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::{Duration, Instant};

use common::rest::{self, PASSWORD, Rest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_hash_without_stalling_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |_| {}).await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    rest::tenant(&admin, &api, "tenant-a").await;

    let started = Instant::now();
    let logins: Vec<_> = (0..20)
        .map(|_| {
            let api = Rest::new(daemon.http_addr);
            tokio::spawn(async move { api.login("agent@tenant-a.example.com", PASSWORD).await })
        })
        .collect();
    let health = reqwest::Client::new();
    let url = format!("http://{}/health", daemon.http_addr);
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while logins.iter().any(|login| !login.is_finished()) {
        let asked = Instant::now();
        let answer = health.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        slowest = slowest.max(asked.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hashing = started.elapsed();
    for login in logins {
        login.await.unwrap();
    }
    // The logins did take a while (so /health was asked while they hashed) ...
    assert!(probes >= 10, "{probes} probes in {hashing:?}");
    // ... and it answered within 50 ms every time.
    assert!(
        slowest < Duration::from_millis(50),
        "/health took {slowest:?} while 20 logins hashed ({hashing:?}, {probes} probes)"
    );
    eprintln!("20 logins in {hashing:?}; slowest /health {slowest:?} over {probes} probes");
    daemon.shutdown().await.unwrap();
}
