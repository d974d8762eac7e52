//! Runs flow engine steps where a hostile template can hurt nothing but itself: in a
//! pool of supervised worker processes (`dashd flow-worker`), each under an
//! address-space limit, with a wall-clock deadline per step enforced from outside.
//!
//! Why processes: minijinja's fuel counts instructions, not their cost (one `replace` on
//! a long string is one instruction, so a template within every engine limit can still
//! spin for seconds), and its 100 MB cap on one string repetition bounds neither the sum
//! of many values nor a render's total memory (`~` doubles a string past any budget in a
//! few dozen instructions). Operators cannot be hooked to meter allocations, a failed
//! allocation aborts the whole process, and a thread stuck in a render cannot be stopped. A worker process can be: when its
//! step overruns the deadline it is killed (SIGKILL) and replaced; when it allocates past
//! `RLIMIT_AS` it dies alone and the step reports [`StepError::Crashed`]. dashd, its async
//! runtime, `/health` and the admin socket never run tenant templates.
//!
//! Fairness: one tenant holds at most half the processes at once (at least one), so a
//! tenant whose flows time out slows only itself. All pipe I/O is async.
//!
//! [`FlowRunner::in_process`] runs steps on blocking threads instead, with the same
//! deadline for the caller; it bounds neither memory nor CPU (a runaway render keeps its
//! thread until its fuel runs out) and exists for platforms or tests where spawning
//! processes is not wanted (`pipeline.flow_isolation = "thread"`).

mod child;
mod engine;
mod wire;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use dash_core::flow::engine::Limits;
use dash_core::flow::{ConversationState, Document, Effect, Event, FlowError, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::BufReader;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

pub use child::{WorkerLimits, serve};

use engine::{BundleCache, Compiled, Loaded};
use wire::{CompileOut, DocumentOut, EffectWire, EventWire, FrameError, Response, StepOut};

/// The config key that names the worker executable.
pub const EXECUTABLE_KEY: &str = "pipeline.flow_worker_exe";

/// How long a new worker may take to start and greet.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed start, steps fail at once for this long instead of retrying.
const START_BACKOFF: Duration = Duration::from_secs(1);
/// A failure to start workers is logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long a worker that closed its pipes gets to exit before it is killed.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// Tenants remembered before idle ones are forgotten.
const TENANT_MAP_LIMIT: usize = 4096;

/// Settings of a [`FlowRunner`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The `dashd` executable to start workers from; found next to this one when `None`.
    pub executable: Option<PathBuf>,
    /// Worker processes (or concurrent threads); 0 means the number of CPUs, at least 2.
    pub processes: usize,
    /// Address-space limit of each worker in MiB.
    pub memory_limit_mb: u64,
    /// Wall-clock budget of one step.
    pub step_timeout: Duration,
    /// Budget for compiled flows in each worker, in MiB (so up to `processes` times
    /// this in all); in thread mode, one cache of this size.
    pub cache_mb: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            executable: None,
            processes: 0,
            memory_limit_mb: 256,
            step_timeout: Duration::from_millis(2000),
            cache_mb: 64,
        }
    }
}

impl RunnerConfig {
    fn process_count(&self) -> usize {
        if self.processes > 0 {
            return self.processes;
        }
        std::thread::available_parallelism()
            .map_or(2, std::num::NonZeroUsize::get)
            .max(2)
    }
}

/// Identifies a flow version by content: the version number and the SHA-256 of its
/// document's JSON. Bots running the same document share one compiled bundle, and no
/// tenant can make its document pass for another's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    /// The version number given by storage.
    pub version: u32,
    /// SHA-256 of the document's JSON, lowercase hex.
    pub sha256: String,
}

/// A flow version as the runner needs it: its key and its document (JSON text),
/// sent to a worker only when that worker does not hold it yet. Build it once per
/// version and share it (`Arc`); hashing is proportional to the document.
#[derive(Debug)]
pub struct FlowSource {
    key: FlowKey,
    document: Arc<str>,
}

impl FlowSource {
    /// A version from the JSON text of its [`dash_core::flow::Document`].
    pub fn new(version: u32, document_json: impl Into<Arc<str>>) -> FlowSource {
        let document: Arc<str> = document_json.into();
        let digest = Sha256::digest(document.as_bytes());
        let mut sha256 = String::with_capacity(64);
        for byte in digest {
            // Writing to a String cannot fail.
            let _ = write!(sha256, "{byte:02x}");
        }
        FlowSource {
            key: FlowKey { version, sha256 },
            document,
        }
    }

    /// A version from a parsed document.
    pub fn from_document(version: u32, document: &Document) -> serde_json::Result<FlowSource> {
        Ok(FlowSource::new(version, serde_json::to_string(document)?))
    }

    /// Its key.
    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// The flow version number.
    pub fn version(&self) -> u32 {
        self.key.version
    }

    /// Bytes it holds, for a cache that weighs its entries.
    pub fn size_bytes(&self) -> usize {
        self.document.len() + size_of::<FlowSource>() + self.key.sha256.len()
    }
}

/// The world as the engine sees it for one step (the owned form of
/// [`dash_core::flow::Context`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepContext {
    /// The time of the event.
    pub now: DateTime<Utc>,
    /// The bot's time zone (crosses the pipe by name).
    #[serde(with = "tz_name")]
    pub timezone: Tz,
    /// `bot.*` in templates.
    pub bot: Value,
    /// `contact.*` in templates.
    pub contact: Value,
    /// Fan-out caps of one inbound event.
    #[serde(default)]
    pub limits: Limits,
}

mod tz_name {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(d)?;
        name.parse()
            .map_err(|_| serde::de::Error::custom(format!("unknown time zone {name:?}")))
    }
}

/// One engine step: the versions it may use, the state, the event and the context.
#[derive(Debug, Clone)]
pub struct StepRequest {
    /// The bot's active version (new conversations start on it).
    pub active: Option<Arc<FlowSource>>,
    /// The version the conversation in progress runs on, when it is another one.
    pub current: Option<Arc<FlowSource>>,
    /// The conversation before the event.
    pub state: ConversationState,
    /// What happened.
    pub event: Event,
    /// The world as the engine sees it.
    pub context: StepContext,
}

/// Why a step produced no outcome. The conversation state is unchanged; the caller
/// decides whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The step ran past its deadline; its worker was killed.
    #[error("flow step exceeded its {}ms time limit", .after.as_millis())]
    Timeout {
        /// The deadline that passed.
        after: Duration,
    },
    /// The worker died during the step (usually its memory limit: a failed allocation
    /// aborts it).
    #[error("flow worker died during the step ({status})")]
    Crashed {
        /// How it ended: "killed by SIGABRT", "exited with code 101".
        status: String,
    },
    /// The worker answered with an error (a malformed request, an engine panic).
    #[error("flow step failed: {0}")]
    Failed(String),
    /// No worker could be started.
    #[error("flow workers unavailable: {0}")]
    Unavailable(String),
}

/// Runs flow steps in isolated workers. Cheap to clone; workers stop when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct FlowRunner {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tenants: TenantSlots,
    timeout: Duration,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Processes(Arc<Pool>),
    Threads(Threads),
}

impl FlowRunner {
    /// Starts a process pool: finds the executable and starts one worker to prove it
    /// works; the others start on demand.
    pub async fn start(config: RunnerConfig) -> anyhow::Result<FlowRunner> {
        let executable = find_executable(config.executable.as_deref())?;
        let processes = config.process_count();
        let pool = Arc::new(Pool {
            executable,
            limits: WorkerLimits {
                memory_mb: config.memory_limit_mb,
                cache_mb: config.cache_mb,
            },
            slots: Arc::new(Semaphore::new(processes)),
            idle: Mutex::new(Vec::new()),
            health: Mutex::new(SpawnHealth::default()),
        });
        let first = pool.start_worker().await.map_err(|err| {
            anyhow::anyhow!(
                "cannot start a flow worker from {} (set {EXECUTABLE_KEY}): {err:#}",
                pool.executable.display()
            )
        })?;
        pool.put_idle(first);
        Ok(FlowRunner {
            shared: Arc::new(Shared {
                tenants: TenantSlots::new(processes),
                timeout: config.step_timeout,
                mode: Mode::Processes(pool),
            }),
        })
    }

    /// Runs steps on blocking threads of the async runtime, with the deadline enforced
    /// for the caller only: memory is not bounded, and a runaway render keeps its thread
    /// (and its tenant's slot) until its fuel runs out.
    pub fn in_process(config: &RunnerConfig) -> FlowRunner {
        let processes = config.process_count();
        let budget = usize::try_from(config.cache_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        FlowRunner {
            shared: Arc::new(Shared {
                tenants: TenantSlots::new(processes),
                timeout: config.step_timeout,
                mode: Mode::Threads(Threads {
                    cache: Arc::new(Mutex::new(BundleCache::new(budget))),
                    slots: Arc::new(Semaphore::new(processes)),
                }),
            }),
        }
    }

    /// Runs one step for `tenant` within the deadline.
    pub async fn step(&self, tenant: Uuid, request: StepRequest) -> Result<Outcome, StepError> {
        match self.run(tenant, Job::Step(Box::new(request))).await? {
            Answer::Outcome(outcome) => Ok(outcome),
            Answer::Compiled(_) => Err(StepError::Failed("unexpected answer".into())),
        }
    }

    /// Validates and compiles a document for `tenant` within the deadline, as import
    /// must: compiling renders every template once with sample data. `Ok(Err(errors))`
    /// lists every problem found.
    pub async fn validate(
        &self,
        tenant: Uuid,
        document: &Document,
        limits: &Limits,
    ) -> Result<Result<(), Vec<FlowError>>, StepError> {
        let json = serde_json::to_string(document)
            .map_err(|err| StepError::Failed(format!("cannot encode the document: {err}")))?;
        match self.run(tenant, Job::Compile(json.into(), *limits)).await? {
            Answer::Compiled(errors) if errors.is_empty() => Ok(Ok(())),
            Answer::Compiled(errors) => Ok(Err(errors)),
            Answer::Outcome(_) => Err(StepError::Failed("unexpected answer".into())),
        }
    }

    async fn run(&self, tenant: Uuid, job: Job) -> Result<Answer, StepError> {
        let tenant_slot = self.shared.tenants.acquire(tenant).await?;
        let timeout = self.shared.timeout;
        match &self.shared.mode {
            Mode::Processes(pool) => {
                let answer = pool.run(&job, timeout).await;
                drop(tenant_slot);
                answer
            }
            Mode::Threads(threads) => threads.run(job, timeout, tenant_slot).await,
        }
    }

    /// Worker processes started so far and idle (0 in thread mode).
    pub fn idle_workers(&self) -> usize {
        match &self.shared.mode {
            Mode::Processes(pool) => pool.idle.lock().map_or(0, |idle| idle.len()),
            Mode::Threads(_) => 0,
        }
    }
}

/// The executable workers start from: `configured` if given; else this process when it
/// is `dashd`; else a `dashd` beside it or one directory up (test binaries live in
/// `target/<profile>/deps`).
pub fn find_executable(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        if path.is_file() {
            return Ok(path.to_owned());
        }
        anyhow::bail!("{EXECUTABLE_KEY}: {} is not a file", path.display());
    }
    let current = std::env::current_exe().map_err(|err| {
        anyhow::anyhow!("cannot find this executable ({err}); set {EXECUTABLE_KEY}")
    })?;
    // Linux names a replaced executable "dashd (deleted)".
    if current
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name == "dashd" || name == "dashd (deleted)")
    {
        // The running executable itself, even after a package upgrade replaced the
        // file: workers run the same code as the daemon that talks to them.
        let running = Path::new("/proc/self/exe");
        return Ok(if running.exists() {
            running.to_owned()
        } else {
            current
        });
    }
    let beside = current.parent().map(|dir| dir.join("dashd"));
    let above = current
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("dashd"));
    [beside, above]
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no dashd executable found beside {} for flow workers; set {EXECUTABLE_KEY}",
                current.display()
            )
        })
}

// ---- tenants ----

/// Per-tenant concurrency: at most half the workers each, at least one.
#[derive(Debug)]
struct TenantSlots {
    per_tenant: usize,
    map: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

impl TenantSlots {
    fn new(processes: usize) -> Self {
        Self {
            per_tenant: (processes / 2).max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    async fn acquire(&self, tenant: Uuid) -> Result<OwnedSemaphorePermit, StepError> {
        let semaphore = {
            let mut map = self
                .map
                .lock()
                .map_err(|_| StepError::Failed("tenant slots poisoned".into()))?;
            if map.len() >= TENANT_MAP_LIMIT {
                // A semaphore held by a permit or a waiter has other references.
                map.retain(|_, s| Arc::strong_count(s) > 1);
            }
            map.entry(tenant)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        semaphore
            .acquire_owned()
            .await
            .map_err(|_| StepError::Unavailable("flow runner closed".into()))
    }
}

// ---- process pool ----

#[derive(Debug)]
struct Pool {
    executable: PathBuf,
    limits: WorkerLimits,
    /// One permit per process that may exist.
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Worker>>,
    health: Mutex<SpawnHealth>,
}

#[derive(Debug, Default)]
struct SpawnHealth {
    last_failure: Option<(Instant, String)>,
    last_logged: Option<Instant>,
}

#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// Work for a worker.
#[derive(Debug)]
enum Job {
    Step(Box<StepRequest>),
    /// The JSON of a document to validate, and the caps it must fit.
    Compile(Arc<str>, Limits),
}

/// What a worker made of a [`Job`].
#[derive(Debug)]
enum Answer {
    Outcome(Outcome),
    Compiled(Vec<FlowError>),
}

/// How an exchange with a worker ended, short of the deadline.
enum Exchange {
    Answered(Result<Answer, String>),
    /// The worker closed its output: it died.
    Died,
    /// The worker said something that is not the protocol; it cannot be trusted further.
    Broken(String),
}

impl Pool {
    async fn run(self: &Arc<Self>, job: &Job, timeout: Duration) -> Result<Answer, StepError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StepError::Unavailable("flow runner closed".into()))?;
        let mut worker = match self.take_idle() {
            Some(worker) => worker,
            None => self.spawn().await?,
        };
        let exchange = async {
            match job {
                Job::Step(request) => worker.step(request).await,
                Job::Compile(document, limits) => worker.compile(document, limits).await,
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Exchange::Answered(result)) => {
                self.put_idle(worker);
                drop(slot);
                result.map_err(StepError::Failed)
            }
            Ok(Exchange::Died) => {
                let status = worker.reap().await;
                drop(slot);
                Err(StepError::Crashed { status })
            }
            Ok(Exchange::Broken(message)) => {
                tracing::error!(
                    error = message,
                    "flow worker broke the protocol; restarting it"
                );
                self.replace_in_background(worker, slot);
                Err(StepError::Failed(message))
            }
            Err(_) => {
                self.replace_in_background(worker, slot);
                Err(StepError::Timeout { after: timeout })
            }
        }
    }

    /// Kills `worker`, waits for it to exit and starts its successor, holding the slot
    /// throughout so the pool never exceeds its size.
    fn replace_in_background(self: &Arc<Self>, worker: Worker, slot: OwnedSemaphorePermit) {
        let pool = self.clone();
        tokio::spawn(async move {
            worker.kill().await;
            if let Ok(fresh) = pool.spawn().await {
                pool.put_idle(fresh);
            }
            drop(slot);
        });
    }

    /// An idle worker that is still alive (one may have been killed from outside, by
    /// the OOM killer or an operator; its death must not be blamed on the next step).
    fn take_idle(&self) -> Option<Worker> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut worker) = idle.pop() {
            match worker.child.try_wait() {
                Ok(None) => return Some(worker),
                Ok(Some(status)) => {
                    tracing::warn!(status = describe(status), "an idle flow worker died");
                }
                Err(err) => tracing::warn!(error = %err, "cannot check an idle flow worker"),
            }
        }
        None
    }

    fn put_idle(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(worker);
        }
    }

    /// Starts a worker, failing fast while a recent start failed.
    async fn spawn(&self) -> Result<Worker, StepError> {
        if let Ok(health) = self.health.lock()
            && let Some((at, message)) = &health.last_failure
            && at.elapsed() < START_BACKOFF
        {
            return Err(StepError::Unavailable(message.clone()));
        }
        match self.start_worker().await {
            Ok(worker) => {
                if let Ok(mut health) = self.health.lock()
                    && health.last_failure.take().is_some()
                {
                    tracing::info!("flow workers start again");
                }
                Ok(worker)
            }
            Err(err) => {
                let message = format!("{err:#}");
                if let Ok(mut health) = self.health.lock() {
                    let now = Instant::now();
                    if health
                        .last_logged
                        .is_none_or(|at| at.elapsed() >= LOG_INTERVAL)
                    {
                        tracing::error!(
                            executable = %self.executable.display(),
                            error = message,
                            "cannot start a flow worker; flow steps fail until one starts"
                        );
                        health.last_logged = Some(now);
                    }
                    health.last_failure = Some((now, message.clone()));
                }
                Err(StepError::Unavailable(message))
            }
        }
    }

    async fn start_worker(&self) -> anyhow::Result<Worker> {
        let mut command = Command::new(&self.executable);
        command
            .arg("flow-worker")
            .arg("--memory-mb")
            .arg(self.limits.memory_mb.to_string())
            .arg("--cache-mb")
            .arg(self.limits.cache_mb.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a Ctrl-C meant for dashd does not kill workers
            // mid-step; they exit when dashd closes their stdin.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("worker started without pipes");
        };
        let mut worker = Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let hello = tokio::time::timeout(START_TIMEOUT, worker.read_response()).await;
        match hello {
            Err(_) => anyhow::bail!("no greeting within {}s", START_TIMEOUT.as_secs()),
            Ok(Err(message)) => {
                let status = worker.reap().await;
                anyhow::bail!("{message} ({status})")
            }
            Ok(Ok(Response::Hello { protocol, version }))
                if protocol == wire::PROTOCOL && version == wire::dashd_version() =>
            {
                Ok(worker)
            }
            Ok(Ok(Response::Hello { version, .. })) => anyhow::bail!(
                "the executable is dashd {version}, this is {}: restart dashd after an upgrade",
                wire::dashd_version()
            ),
            Ok(Ok(_)) => anyhow::bail!("unexpected first message"),
        }
    }
}

impl Worker {
    /// Sends a document to validate and reads the problems found.
    async fn compile(&mut self, document: &str, limits: &Limits) -> Exchange {
        let body = match serde_json::to_vec(&CompileOut { document, limits }) {
            Ok(body) => body,
            Err(err) => return Exchange::Answered(Err(format!("cannot encode the job: {err}"))),
        };
        if let Some(failed) = self.send(&body).await {
            return failed;
        }
        match self.read_response().await {
            Err(message) if message.is_empty() => Exchange::Died,
            Err(message) => Exchange::Broken(message),
            Ok(Response::Compiled { errors }) => Exchange::Answered(Ok(Answer::Compiled(errors))),
            Ok(Response::Failed { message }) => Exchange::Answered(Err(message)),
            Ok(other) => Exchange::Broken(format!("unexpected answer: {}", kind(&other))),
        }
    }

    /// Writes one request; what to report if that failed.
    async fn send(&mut self, body: &[u8]) -> Option<Exchange> {
        match wire::write_frame_async(&mut self.stdin, body).await {
            Ok(()) => None,
            Err(err) if err.kind() == std::io::ErrorKind::InvalidInput => Some(Exchange::Answered(
                Err(format!("cannot send the job: {err}")),
            )),
            Err(_) => Some(Exchange::Died),
        }
    }

    /// Sends a step and reads its outcome, resending with documents the worker lacks.
    async fn step(&mut self, request: &StepRequest) -> Exchange {
        let mut documents: Vec<&FlowSource> = Vec::new();
        for attempt in 0..2 {
            let out = StepOut {
                active: request.active.as_ref().map(|s| &s.key),
                current: request.current.as_ref().map(|s| &s.key),
                documents: documents
                    .iter()
                    .map(|s| DocumentOut {
                        key: &s.key,
                        document: &s.document,
                    })
                    .collect(),
                state: &request.state,
                event: EventWire::from(&request.event),
                context: &request.context,
            };
            let body = match serde_json::to_vec(&out) {
                Ok(body) => body,
                Err(err) => {
                    return Exchange::Answered(Err(format!("cannot encode the step: {err}")));
                }
            };
            if let Some(failed) = self.send(&body).await {
                return failed;
            }
            match self.read_response().await {
                Err(message) if message.is_empty() => return Exchange::Died,
                Err(message) => return Exchange::Broken(message),
                Ok(Response::Done {
                    state,
                    effects,
                    broken,
                }) => {
                    for flow in broken {
                        tracing::warn!(
                            version = flow.version,
                            errors = flow.errors,
                            "a stored flow version no longer compiles"
                        );
                    }
                    let effects = effects.into_iter().map(Effect::from).collect();
                    return Exchange::Answered(Ok(Answer::Outcome(Outcome { state, effects })));
                }
                Ok(Response::Failed { message }) => return Exchange::Answered(Err(message)),
                Ok(Response::Missing { keys }) if attempt == 0 => {
                    documents = [&request.active, &request.current]
                        .into_iter()
                        .flatten()
                        .filter(|s| keys.contains(&s.key))
                        .map(Arc::as_ref)
                        .collect();
                }
                Ok(other) => {
                    return Exchange::Broken(format!("unexpected answer: {}", kind(&other)));
                }
            }
        }
        Exchange::Broken("the worker still lacks documents it was sent".into())
    }

    /// Reads one response; `Err("")` when the worker closed its output.
    async fn read_response(&mut self) -> Result<Response<EffectWire>, String> {
        match wire::read_frame_async(&mut self.stdout).await {
            Ok(Some(frame)) => serde_json::from_slice(&frame)
                .map_err(|err| format!("unreadable answer from the flow worker: {err}")),
            Ok(None) => Err(String::new()),
            Err(FrameError::Io(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(String::new())
            }
            Err(err) => Err(format!("flow worker: {err}")),
        }
    }

    /// Waits (briefly) for a worker that closed its output, and describes how it ended.
    async fn reap(mut self) -> String {
        drop(self.stdin);
        match tokio::time::timeout(REAP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => describe(status),
            Ok(Err(err)) => format!("cannot wait for it: {err}"),
            Err(_) => {
                let _ = self.child.kill().await;
                "closed its output but did not exit; killed".to_owned()
            }
        }
    }

    /// Kills a worker and waits for it to exit.
    async fn kill(mut self) {
        // SIGKILL, then wait: the worker is reaped, never left a zombie.
        if let Err(err) = self.child.kill().await {
            tracing::warn!(error = %err, "cannot kill a flow worker");
        }
    }
}

fn kind<E>(response: &Response<E>) -> &'static str {
    match response {
        Response::Hello { .. } => "hello",
        Response::Done { .. } => "done",
        Response::Compiled { .. } => "compiled",
        Response::Missing { .. } => "missing",
        Response::Failed { .. } => "failed",
    }
}

/// "killed by SIGKILL", "exited with code 1".
fn describe(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        return match nix::sys::signal::Signal::try_from(signal) {
            Ok(signal) => format!("killed by {signal}"),
            Err(_) => format!("killed by signal {signal}"),
        };
    }
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "ended".to_owned(),
    }
}

// ---- threads ----

#[derive(Debug)]
struct Threads {
    cache: Arc<Mutex<BundleCache>>,
    slots: Arc<Semaphore>,
}

impl Threads {
    async fn run(
        &self,
        job: Job,
        timeout: Duration,
        tenant_slot: OwnedSemaphorePermit,
    ) -> Result<Answer, StepError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StepError::Unavailable("flow runner closed".into()))?;
        let cache = self.cache.clone();
        // The permits live as long as the thread, not the caller's wait: a runaway
        // render keeps its slots, so its tenant cannot start more of them.
        let task = tokio::task::spawn_blocking(move || {
            let _held = (tenant_slot, slot);
            match job {
                Job::Step(request) => run_on_thread(&cache, *request).map(Answer::Outcome),
                Job::Compile(document, limits) => {
                    Ok(Answer::Compiled(engine::validate(&document, &limits)))
                }
            }
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => Err(StepError::Failed(format!("flow step thread failed: {err}"))),
            Err(_) => Err(StepError::Timeout { after: timeout }),
        }
    }
}

fn run_on_thread(cache: &Mutex<BundleCache>, request: StepRequest) -> Result<Outcome, StepError> {
    let mut loaded = Loaded::default();
    for (source, active) in [(&request.active, true), (&request.current, false)] {
        let Some(source) = source else { continue };
        let cached = cache.lock().ok().and_then(|mut c| c.get(&source.key));
        let compiled = match cached {
            Some(compiled) => compiled,
            None => {
                // Compiled outside the lock: a slow compile holds up nobody else.
                let (compiled, size) = engine::compile(&source.key, &source.document);
                if let Ok(mut c) = cache.lock() {
                    c.insert(source.key.clone(), compiled.clone(), size);
                }
                compiled
            }
        };
        if let Compiled::Broken(errors) = &compiled {
            tracing::warn!(
                version = source.key.version,
                errors,
                "a stored flow version no longer compiles"
            );
        }
        loaded.set(&source.key, compiled, active);
    }
    match engine::run(loaded, request.state, &request.event, &request.context) {
        Response::Done { state, effects, .. } => Ok(Outcome { state, effects }),
        Response::Failed { message } => Err(StepError::Failed(message)),
        Response::Hello { .. } | Response::Compiled { .. } | Response::Missing { .. } => {
            Err(StepError::Failed("unexpected engine answer".into()))
        }
    }
}
