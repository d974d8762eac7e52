//! `make bench`, part two: how fast `dashd` is ready, and how big it is. Writes
//! docs/startup.md.
//!
//! Cold start: a new, empty data directory (the database is created and every migration
//! applied), from `exec` to `READY=1` on the notify socket, as systemd measures it. Warm
//! start: the same on the data directory of the run before. The floor, measured in the
//! same run: the same binary's `dashd --version`, which execs, links and exits without
//! doing anything, so the ratio is what start-up itself costs on this machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 20;

/// Starts dashd in `dir`, waits for READY=1, stops it; the time to ready.
fn start_to_ready(dir: &Path) -> Duration {
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dashd"))
        .current_dir(dir)
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("dashd never sent READY=1");
    let ready = started.elapsed();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    ready
}

fn exec_version() -> Duration {
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_dashd"))
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed()
}

/// (median, max) in milliseconds.
fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    )
}

fn megabytes(path: &Path) -> Option<f64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.len() as f64 / 1_000_000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let floor = summary((0..RUNS).map(|_| exec_version()).collect());
    let cold = summary(
        (0..RUNS)
            .map(|_| start_to_ready(tempfile::tempdir().unwrap().path()))
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    start_to_ready(dir.path());
    let warm = summary((0..RUNS).map(|_| start_to_ready(dir.path())).collect());

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let measured = megabytes(Path::new(env!("CARGO_BIN_EXE_dashd"))).unwrap_or(0.0);
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let report = format!(
        "# Start-up and size\n\n\
         Figures from `make bench` (crates/dashd/benches/startup.rs), {RUNS} runs each, on\n\
         {cores} cores of {machine}; a shared, noisy machine: compare within one run.\n\
         Start-up is timed from `exec` to `READY=1` on the notify socket, as systemd sees it.\n\
         The floor is the same binary's `dashd --version` (exec, dynamic linking, exit), in\n\
         the same run.\n\n\
         | | median | max | median / floor |\n\
         |---|---|---|---|\n\
         | floor: `dashd --version` | {:.1} ms | {:.1} ms | 1 |\n\
         | cold start: new data directory, database created, every migration applied | {:.1} ms | {:.1} ms | {:.1} |\n\
         | warm start: existing data directory | {:.1} ms | {:.1} ms | {:.1} |\n\n\
         Target from the seeds: ready in under 100 ms.\n\n\
         The binary measured (`[profile.bench]`: the release profile without LTO) is\n\
         {measured:.1} MB; the release build itself (`make release`, thin LTO) is printed by\n\
         `make test-packaging`. Target from the seeds: under 30 MB.\n",
        floor.0,
        floor.1,
        cold.0,
        cold.1,
        cold.0 / floor.0,
        warm.0,
        warm.1,
        warm.0 / floor.0,
    );
    print!("{report}");
    std::fs::write(root.join("docs/startup.md"), report).unwrap();
}
