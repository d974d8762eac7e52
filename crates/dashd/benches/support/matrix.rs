//! The load matrix: signed Cloud API webhooks into dashd (one bot, the echo flow, the
//! chain `meta`) and the replies into a loopback Graph server, in closed loop (1, 10
//! and 50 users, each waiting for its reply before writing again) and in open loop
//! (100, 1,000 and 5,000 messages/s offered on a fixed schedule, whatever dashd
//! answers), each phase for the same time, on SQLite and on PostgreSQL. Every phase
//! reports msgs/s, webhook-to-Graph latency, lost (accepted, never answered),
//! duplicated, order violations per contact, peak RSS and CPU of dashd with its flow
//! workers, and the ratio to the echo ceiling measured in the same run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cloud_api::{Graph, post_once, setup_bot, webhook};
use super::{Dashd, percentile, round};

/// One phase of the matrix.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Users, each sending its next message once the previous one's reply arrived.
    Closed(usize),
    /// Messages per second on a fixed schedule, over `CONTACTS` contacts.
    Open(usize),
}

/// Contacts the open-loop phases write from.
const CONTACTS: usize = 1_000;
/// How long a phase's accepted messages may take to be answered after it ends.
const DRAIN: Duration = Duration::from_secs(90);

/// What a phase sent and when, by message text (`{phase} {contact} {seq}`).
#[derive(Default)]
struct Sent {
    /// When each accepted webhook was sent and when its 200 came back.
    accepted: HashMap<String, (Instant, Instant)>,
    refused: u64,
    failed: u64,
}

/// Runs every phase against a started dashd; `ceiling` is the echo server's
/// requests/s measured in the same run.
pub async fn run(
    dashd: &Dashd,
    http_addr: &str,
    phases: &[Load],
    seconds: u64,
    ceiling: f64,
) -> Vec<Value> {
    let (graph, _, url) = setup_bot(dashd, http_addr, "matrix", false).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let mut results = Vec::new();
    for (index, load) in phases.iter().enumerate() {
        let tag = format!("p{index}");
        let usage = Usage::watch(dashd.pid());
        let started = Instant::now();
        let sent = match *load {
            Load::Closed(users) => closed(&http, &url, &graph, &tag, users, seconds).await,
            Load::Open(rate) => open(&http, &url, &tag, rate, seconds).await,
        };
        // Everything accepted is waited for (bounded): a message missing after that is lost.
        let deadline = Instant::now() + DRAIN;
        while Instant::now() < deadline && !graph.has_all(sent.accepted.keys()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (peak_rss_mb, cpu_percent) = usage.finish();
        results.push(report(
            *load,
            seconds,
            started,
            &sent,
            &graph,
            ceiling,
            peak_rss_mb,
            cpu_percent,
        ));
        graph.clear();
    }
    results
}

async fn closed(
    http: &reqwest::Client,
    url: &str,
    graph: &Graph,
    tag: &str,
    users: usize,
    seconds: u64,
) -> Sent {
    let until = Instant::now() + Duration::from_secs(seconds);
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let mut tasks = Vec::new();
    for user in 0..users {
        let (http, url, graph, sent) = (http.clone(), url.to_owned(), graph.clone(), sent.clone());
        let contact = format!("1666{user:07}");
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while Instant::now() < until {
                let text = format!("{tag} {user} {seq}");
                let reply = graph.expect(&text);
                let (body, signature) =
                    webhook(&contact, &format!("wamid.{tag}.{user}.{seq}"), &text);
                let at = Instant::now();
                match post_once(&http, &url, body, &signature).await {
                    Some(200) => {
                        sent.lock()
                            .unwrap()
                            .accepted
                            .insert(text, (at, Instant::now()));
                        // A reply that never comes ends this user (and shows as lost).
                        if tokio::time::timeout(DRAIN, reply).await.is_err() {
                            return;
                        }
                    }
                    Some(503) => {
                        sent.lock().unwrap().refused += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => sent.lock().unwrap().failed += 1,
                }
                seq += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(sent).ok().unwrap().into_inner().unwrap()
}

async fn open(http: &reqwest::Client, url: &str, tag: &str, rate: usize, seconds: u64) -> Sent {
    let start = Instant::now();
    let interval = Duration::from_secs(1).div_f64(rate as f64);
    let total = rate * seconds as usize;
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + interval * n as u32)).await;
        let (contact, seq) = (n % CONTACTS, n / CONTACTS);
        let text = format!("{tag} {contact} {seq}");
        let (body, signature) = webhook(
            &format!("1777{contact:07}"),
            &format!("wamid.{tag}.{n}"),
            &text,
        );
        let (http, url, sent) = (http.clone(), url.to_owned(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            let status = post_once(&http, &url, body, &signature).await;
            let acked = Instant::now();
            let mut sent = sent.lock().unwrap();
            match status {
                Some(200) => {
                    sent.accepted.insert(text, (at, acked));
                }
                Some(503) => sent.refused += 1,
                _ => sent.failed += 1,
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(sent).ok().unwrap().into_inner().unwrap()
}

#[allow(clippy::too_many_arguments)]
fn report(
    load: Load,
    seconds: u64,
    started: Instant,
    sent: &Sent,
    graph: &Graph,
    ceiling: f64,
    peak_rss_mb: f64,
    cpu_percent: f64,
) -> Value {
    let arrivals = graph.arrivals();
    let mut latencies = Vec::new();
    let mut last = started;
    // By contact: (sent, acknowledged, answered) of each answered message.
    let mut by_contact: HashMap<&str, Vec<(Instant, Instant, Instant)>> = HashMap::new();
    for (text, (at, acked)) in &sent.accepted {
        let Some(arrived) = arrivals.get(text) else {
            continue;
        };
        latencies.push(arrived.duration_since(*at).as_secs_f64() * 1000.0);
        last = last.max(*arrived);
        let contact = text.rsplit_once(' ').map_or("", |(contact, _)| contact);
        by_contact
            .entry(contact)
            .or_default()
            .push((*at, *acked, *arrived));
    }
    // dashd answers a contact's messages in the order it accepted them. Concurrent
    // webhooks of one contact have no order; one acknowledged before the next was sent
    // must be answered first.
    let order_violations: usize = by_contact
        .values_mut()
        .map(|replies| {
            replies.sort_by_key(|(at, _, _)| *at);
            replies
                .iter()
                .enumerate()
                .filter(|(i, (at, _, arrived))| {
                    replies[..*i]
                        .iter()
                        .any(|(_, acked, earlier)| acked < at && earlier > arrived)
                })
                .count()
        })
        .sum();
    latencies.sort_by(f64::total_cmp);
    let answered = latencies.len();
    let elapsed = last
        .duration_since(started)
        .as_secs_f64()
        .max(seconds as f64);
    let msgs_per_s = answered as f64 / elapsed;
    let (kind, level) = match load {
        Load::Closed(users) => ("closed", users),
        Load::Open(rate) => ("open", rate),
    };
    let pct = |p: f64| {
        if latencies.is_empty() {
            Value::Null
        } else {
            json!(round(percentile(&latencies, p)))
        }
    };
    json!({
        "loop": kind,
        "users_or_rate": level,
        "seconds": seconds,
        "accepted": sent.accepted.len(),
        "refused_503": sent.refused,
        "errors": sent.failed,
        "answered": answered,
        "lost": sent.accepted.len() - answered,
        "duplicated": graph.duplicates(),
        "order_violations": order_violations,
        "msgs_per_s": round(msgs_per_s),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": latencies.last().map_or(Value::Null, |m| json!(round(*m))),
        "peak_rss_mb": round(peak_rss_mb),
        "cpu_percent": round(cpu_percent),
        "ratio_to_ceiling": (msgs_per_s / ceiling * 10_000.0).round() / 10_000.0,
    })
}

/// Peak RSS and CPU time of dashd and its children (the flow workers) over a phase,
/// sampled every 100 ms from /proc.
struct Usage {
    stop: Arc<AtomicU64>,
    peak_kb: Arc<AtomicU64>,
    pid: u32,
    ticks_before: u64,
    started: Instant,
}

impl Usage {
    fn watch(pid: u32) -> Usage {
        let stop = Arc::new(AtomicU64::new(0));
        let peak_kb = Arc::new(AtomicU64::new(0));
        let (stop2, peak2) = (stop.clone(), peak_kb.clone());
        tokio::spawn(async move {
            while stop2.load(Ordering::Relaxed) == 0 {
                let rss: u64 = family(pid).iter().map(|p| rss_kb(*p)).sum();
                peak2.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Usage {
            stop,
            peak_kb,
            pid,
            ticks_before: family(pid).iter().map(|p| cpu_ticks(*p)).sum(),
            started: Instant::now(),
        }
    }

    /// (peak RSS in MB, CPU in % of one core).
    fn finish(self) -> (f64, f64) {
        self.stop.store(1, Ordering::Relaxed);
        let ticks: u64 = family(self.pid).iter().map(|p| cpu_ticks(*p)).sum();
        let hz = 100.0; // USER_HZ on Linux
        let cpu = ticks.saturating_sub(self.ticks_before) as f64
            / hz
            / self.started.elapsed().as_secs_f64()
            * 100.0;
        (self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0, cpu)
    }
}

/// dashd and its direct children.
fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if stat_fields(child).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(pid)
            {
                pids.push(child);
            }
        }
    }
    pids
}

/// The fields of /proc/PID/stat after the command name (state is the first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn cpu_ticks(pid: u32) -> u64 {
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    stat_fields(pid).map_or(0, |f| {
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    })
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
