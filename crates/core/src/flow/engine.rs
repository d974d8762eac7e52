//! The flow engine: a pure function from a conversation's state and one event to the new
//! state and the effects dashd must carry out (send a message, schedule a timer, make an
//! HTTP request, hand off to a person). No I/O and no clock: the time comes in the
//! [`Context`]. Every event ends with the conversation waiting for the customer (a
//! question or menu), for an HTTP result or an operator, or ended. What one inbound event
//! can cause (messages, HTTP requests, steps) is capped by [`Limits`], and the variables a
//! conversation keeps by [`MAX_VARS_BYTES`], so neither one message nor a long
//! conversation can grow without bound.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::bundle::{Bundle, DEFAULT_HTTP_TIMEOUT, Pos};
use super::document::{Media, Step};
use super::template::{Scope, truthy};
use super::text::{check_answer, fold};

/// Version of the serialised [`ConversationState`]; raised with a migration when its
/// shape changes, so that state written by one release is read by the next.
pub const STATE_SCHEMA: u32 = 1;

/// Largest size of a conversation's `vars`, as JSON. A value that would take them past
/// it is not stored (the variable is set to `null`, with a warning).
pub const MAX_VARS_BYTES: usize = 64 * 1024;

/// What one inbound event may cause: an inbound message, a timer or a resume, together
/// with the HTTP results it leads to. Validation ([`crate::flow::Bundle::check_limits`])
/// rejects a document whose longest straight-line path (steps that run without waiting
/// for the customer) exceeds a cap, so a valid document never meets them at run time;
/// the engine still enforces them, stopping the run with a warning and ending the
/// conversation, and never emits more than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Messages sent (`pipeline.max_messages_per_event`).
    pub max_messages: u32,
    /// HTTP requests made (`pipeline.max_http_per_event`).
    pub max_http: u32,
    /// Steps run (`pipeline.max_steps_per_event`).
    pub max_steps: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_messages: 20,
            max_http: 5,
            max_steps: 256,
        }
    }
}

/// What the inbound event being handled has caused so far; carried in the state across
/// the HTTP results it leads to, and reset by the next message, timer or resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    #[serde(default)]
    pub messages: u32,
    #[serde(default)]
    pub http: u32,
    #[serde(default)]
    pub steps: u32,
}

impl FanOut {
    fn is_zero(&self) -> bool {
        *self == FanOut::default()
    }
}

/// Everything the engine remembers about one conversation (one contact of one bot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationState {
    pub schema: u32,
    /// The running flow, if a conversation is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Active>,
    /// `vars.*` of the running conversation.
    #[serde(default)]
    pub vars: Map<String, Value>,
    /// Timers dashd has been asked to schedule and that are still wanted.
    #[serde(default)]
    pub timers: Vec<Timer>,
    /// Source of timer and request ids.
    #[serde(default)]
    pub next_id: u64,
    /// Last message from the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<DateTime<Utc>>,
    /// What the current inbound event has caused, while it waits for an HTTP result.
    #[serde(default, skip_serializing_if = "FanOut::is_zero")]
    pub fan_out: FanOut,
}

impl Default for ConversationState {
    fn default() -> Self {
        Self {
            schema: STATE_SCHEMA,
            active: None,
            vars: Map::new(),
            timers: Vec::new(),
            next_id: 1,
            last_activity: None,
            fan_out: FanOut::default(),
        }
    }
}

impl ConversationState {
    /// Reads stored state, accepting every schema up to this release's.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let state: ConversationState = serde_json::from_str(json).map_err(|err| err.to_string())?;
        if state.schema > STATE_SCHEMA {
            return Err(format!(
                "conversation state schema {} is newer than this release understands ({STATE_SCHEMA})",
                state.schema
            ));
        }
        Ok(ConversationState {
            schema: STATE_SCHEMA,
            ..state
        })
    }
}

/// Where a conversation in progress stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Active {
    /// The flow version it started on; it finishes on it.
    pub version: u32,
    pub flow: String,
    pub step: String,
    pub waiting: Waiting,
    #[serde(default)]
    pub retries: u32,
    pub started_at: DateTime<Utc>,
}

/// What a conversation in progress waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum Waiting {
    /// An answer to a question.
    Answer,
    /// A menu choice.
    Choice,
    /// The result of an HTTP request.
    Http { request_id: u64 },
    /// An operator to resume the bot.
    Handoff,
}

/// A timer dashd keeps durably and reports back as [`Event::Timer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: u64,
    pub kind: TimerKind,
    pub at: DateTime<Utc>,
}

/// Why a timer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    IdleReminder,
    IdleEnd,
    Expiry,
}

/// Something that happened to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message from the contact; `reply_id` is set for button and list replies.
    Message {
        text: String,
        reply_id: Option<String>,
    },
    /// A timer fired.
    Timer { id: u64 },
    /// An HTTP request made for an action finished.
    Http {
        request_id: u64,
        outcome: HttpOutcome,
    },
    /// An operator handed the conversation back to the bot.
    Resume,
    /// A person takes the conversation over: the bot stays silent for this contact until
    /// [`Event::Resume`] (as after a `handoff` step). Ignored when no flow is active.
    Takeover,
}

/// How an HTTP request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpOutcome {
    Response { status: u16, body: Value },
    Failed { error: String },
}

/// Things dashd must do, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    Send(Outbound),
    ScheduleTimer(Timer),
    CancelTimer {
        id: u64,
    },
    Http(HttpRequest),
    /// Pause the bot for this contact until an operator resumes it.
    Handoff {
        flow: String,
        step: String,
    },
    ConversationStarted {
        flow: String,
        version: u32,
        reason: StartReason,
    },
    ConversationEnded {
        reason: EndReason,
    },
    /// An action dashd runs on the flow's behalf (`create_order`, `notify`, `llm`), with
    /// its payload rendered; the flow does not wait for it.
    Action {
        action: ExternalAction,
        payload: Value,
        flow: String,
        step: String,
        /// The conversation's variables when the action ran (a flow that ends right
        /// after forgets them): a `create_order` keeps them on the customer.
        vars: Map<String, Value>,
    },
    /// Something went wrong that the document author should know about (logged).
    Warning {
        message: String,
    },
}

/// Actions the engine declares and dashd executes (each gated by [`super::Capabilities`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalAction {
    CreateOrder,
    Notify,
    Llm,
}

/// A message for the contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outbound {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    /// Pause before sending.
    pub delay_ms: u64,
    /// Menu options, for providers that can show buttons or lists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
}

/// A menu option as a provider shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub id: String,
    pub label: String,
}

/// An HTTP request to make; its result comes back as [`Event::Http`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpRequest {
    pub request_id: u64,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub timeout_ms: u64,
}

/// Why a conversation started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartReason {
    Trigger,
    Default,
    OutOfHours,
    Command,
}

/// Why a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Completed,
    Command,
    RetriesExhausted,
    Idle,
    Expired,
    HttpFailed,
    Resumed,
    /// The version it ran on is gone.
    VersionRemoved,
    /// An internal limit was hit (a bug in the engine or an unvalidated document).
    Error,
}

/// The result of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: ConversationState,
    pub effects: Vec<Effect>,
}

/// The compiled versions of a bot's flows the engine can use.
pub trait Versions {
    /// The version new conversations start on.
    fn active(&self) -> Option<&Bundle>;
    /// A specific version, if still available.
    fn get(&self, version: u32) -> Option<&Bundle>;
}

/// The world as the engine sees it for one event.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub now: DateTime<Utc>,
    pub timezone: Tz,
    /// `bot.*` in templates (at least `name` and `timezone`).
    pub bot: &'a Value,
    /// `contact.*` in templates (at least `phone`, and `name` when known).
    pub contact: &'a Value,
}

/// Applies one event to a conversation, within the default [`Limits`].
pub fn step(
    versions: &dyn Versions,
    state: ConversationState,
    event: &Event,
    ctx: &Context<'_>,
) -> Outcome {
    step_within(versions, state, event, ctx, &Limits::default())
}

/// Applies one event to a conversation, within `limits` (the same limits its documents
/// were validated against, so a valid document never meets them).
pub fn step_within(
    versions: &dyn Versions,
    mut state: ConversationState,
    event: &Event,
    ctx: &Context<'_>,
    limits: &Limits,
) -> Outcome {
    // An HTTP result continues the run of the event that made the request; any other
    // event (a message, a timer, a resume) is a new event and starts a new count, also
    // when it arrives while a request is pending (a message that restarts the flow then
    // runs within its own bounds, not within what the earlier event had left).
    if !matches!(event, Event::Http { .. }) {
        state.fan_out = FanOut::default();
    }
    let mut run = Run {
        versions,
        bundle: None,
        state,
        effects: Vec::new(),
        ctx,
        input: "",
        limits,
        halted: false,
        stepping: false,
        pending: None,
    };
    match event {
        Event::Message { text, reply_id } => {
            run.input = text;
            run.on_message(text, reply_id.as_deref());
        }
        Event::Timer { id } => run.on_timer(*id),
        Event::Http {
            request_id,
            outcome,
        } => run.on_http(*request_id, outcome),
        Event::Resume => run.on_resume(),
        Event::Takeover => run.on_takeover(),
    }
    let mut state = run.state;
    // The counts only matter while the event's HTTP request is pending.
    if !matches!(
        state.active.as_ref().map(|a| &a.waiting),
        Some(Waiting::Http { .. })
    ) {
        state.fan_out = FanOut::default();
    }
    Outcome {
        state,
        effects: run.effects,
    }
}

struct Run<'a> {
    versions: &'a dyn Versions,
    /// The version the conversation runs on.
    bundle: Option<&'a Bundle>,
    state: ConversationState,
    effects: Vec<Effect>,
    ctx: &'a Context<'a>,
    input: &'a str,
    limits: &'a Limits,
    /// Set when a limit stopped the run: nothing more is emitted.
    halted: bool,
    /// Set while [`Run::advance`] loops: a step that continues leaves its successor here
    /// instead of recursing, so a flow of any length runs in constant stack.
    stepping: bool,
    pending: Option<(&'a Bundle, Pos)>,
}

impl<'a> Run<'a> {
    /// Picks the bundle of the conversation in progress; ends it if that version is gone.
    fn conversation_bundle(&mut self) -> Option<&'a Bundle> {
        let version = self.state.active.as_ref()?.version;
        match self.versions.get(version) {
            Some(bundle) => {
                self.bundle = Some(bundle);
                Some(bundle)
            }
            None => {
                self.end(EndReason::VersionRemoved);
                None
            }
        }
    }

    fn on_message(&mut self, text: &str, reply_id: Option<&str>) {
        let now = self.ctx.now;
        let previous = self.state.last_activity.replace(now);
        if self.state.active.is_some() {
            // A conversation whose expiry timer was missed (dashd down) still expires.
            let expired = match (self.conversation_bundle(), previous) {
                (Some(bundle), Some(last)) => now - last >= chrono_span(bundle.doc.expiry.0),
                _ => false,
            };
            if expired {
                self.end(EndReason::Expired);
            }
        }
        if matches!(
            self.state.active.as_ref().map(|a| &a.waiting),
            Some(Waiting::Handoff)
        ) {
            // A person is answering; the bot stays quiet.
            self.reschedule_expiry();
            return;
        }
        self.cancel_timers(|kind| matches!(kind, TimerKind::IdleReminder | TimerKind::IdleEnd));

        let bundle = match self.state.active {
            Some(_) => self.conversation_bundle(),
            None => None,
        };
        let bundle = match bundle.or_else(|| self.versions.active()) {
            Some(bundle) => bundle,
            None => return,
        };
        self.bundle = Some(bundle);

        if let Some(index) = bundle.command(text) {
            self.command(bundle, index);
        } else if let Some(active) = self.state.active.clone() {
            match active.waiting {
                Waiting::Answer => self.answer(bundle, &active, text),
                Waiting::Choice => self.choose(bundle, &active, text, reply_id),
                // The customer wrote while a request was running: the flow continues when
                // the result arrives; the message is in the log, not lost.
                Waiting::Http { .. } | Waiting::Handoff => {}
            }
        } else {
            self.new_conversation(bundle, text);
        }
        self.reschedule_expiry();
    }

    /// Outside business hours, starts the out-of-hours flow or sends its message and
    /// returns true.
    fn out_of_hours(&mut self, bundle: &'a Bundle) -> bool {
        let closed = bundle
            .hours()
            .is_some_and(|hours| !hours.is_open(self.ctx.timezone, self.ctx.now));
        let Some(ooh) = bundle.doc.out_of_hours.as_ref().filter(|_| closed) else {
            return false;
        };
        if let Some(flow) = &ooh.flow {
            self.start(bundle, flow, StartReason::OutOfHours);
        } else if let Some(message) = &ooh.message {
            self.send_text(bundle, message, None, 0, Vec::new());
        }
        true
    }

    fn new_conversation(&mut self, bundle: &'a Bundle, text: &str) {
        if self.out_of_hours(bundle) {
            return;
        }
        if let Some(index) = bundle.trigger(text) {
            let id = bundle.doc.flows[index].id.clone();
            self.start(bundle, &id, StartReason::Trigger);
        } else if let Some(id) = &bundle.doc.default_flow {
            self.start(bundle, id, StartReason::Default);
        }
    }

    fn command(&mut self, bundle: &'a Bundle, index: usize) {
        let Some(command) = bundle.doc.commands.get(index) else {
            return;
        };
        if let Some(message) = &command.message {
            self.send_text(bundle, message, None, 0, Vec::new());
        }
        if command.end {
            if self.state.active.is_some() {
                self.end(EndReason::Command);
            }
        } else if let Some(flow) = &command.flow {
            if self.state.active.is_some() {
                self.end(EndReason::Command);
            }
            // A command starts a new conversation on the newest version; outside business
            // hours that is the out-of-hours flow or message, as for any new conversation.
            let target = self.versions.active().unwrap_or(bundle);
            self.bundle = Some(target);
            if !self.out_of_hours(target) {
                self.start(target, flow, StartReason::Command);
            }
        }
    }

    /// Starts `flow` as a new conversation on `bundle`.
    fn start(&mut self, bundle: &'a Bundle, flow: &str, reason: StartReason) {
        let Some(index) = bundle.flow(flow) else {
            self.warn(format!("flow {flow:?} does not exist"));
            return;
        };
        self.state.vars.clear();
        self.effects.push(Effect::ConversationStarted {
            flow: flow.to_owned(),
            version: bundle.version,
            reason,
        });
        self.state.active = Some(Active {
            version: bundle.version,
            flow: flow.to_owned(),
            step: String::new(),
            waiting: Waiting::Answer,
            retries: 0,
            started_at: self.ctx.now,
        });
        self.advance(bundle, (index, 0));
    }

    fn answer(&mut self, bundle: &'a Bundle, active: &Active, text: &str) {
        let Some(pos) = self.position(bundle, active) else {
            return;
        };
        let Some(Step::Question {
            text: question,
            var,
            validate,
            retry,
            max_retries,
            on_fail,
            ..
        }) = bundle.step_at(pos)
        else {
            return self.lost(active);
        };
        let today = self.ctx.now.with_timezone(&self.ctx.timezone).date_naive();
        let regex = match validate {
            super::document::Validation::Regex { pattern } => bundle.regex(pattern),
            _ => None,
        };
        match check_answer(validate, text, today, regex) {
            Some(value) => {
                self.store_var(var, value);
                self.continue_after(bundle, pos);
            }
            None => self.retry(
                bundle,
                pos,
                retry.as_ref().unwrap_or(question),
                *max_retries,
                on_fail.as_deref(),
                Vec::new(),
            ),
        }
    }

    fn choose(&mut self, bundle: &'a Bundle, active: &Active, text: &str, reply_id: Option<&str>) {
        let Some(pos) = self.position(bundle, active) else {
            return;
        };
        let Some(Step::Menu {
            text: prompt,
            options,
            var,
            retry,
            max_retries,
            on_fail,
            ..
        }) = bundle.step_at(pos)
        else {
            return self.lost(active);
        };
        let folded = fold(text);
        let chosen = options.iter().enumerate().find(|(i, option)| {
            let number = (i + 1).to_string();
            let id = option.id.clone().unwrap_or_else(|| number.clone());
            reply_id == Some(id.as_str())
                || folded == number
                || folded == fold(&option.label)
                || option.synonyms.iter().any(|s| fold(s) == folded)
        });
        match chosen {
            Some((_, option)) => {
                if let Some(var) = var {
                    self.store_var(var, Value::String(option.label.clone()));
                }
                if let Some(step) = &option.step {
                    self.goto_step(bundle, pos.0, step);
                } else if let Some(flow) = &option.flow {
                    self.goto_flow(bundle, flow);
                }
            }
            None => {
                let choices = menu_choices(options);
                self.retry(
                    bundle,
                    pos,
                    retry.as_ref().unwrap_or(prompt),
                    *max_retries,
                    on_fail.as_deref(),
                    choices,
                );
            }
        }
    }

    fn retry(
        &mut self,
        bundle: &'a Bundle,
        pos: Pos,
        message: &str,
        max: u32,
        on_fail: Option<&str>,
        choices: Vec<Choice>,
    ) {
        let retries = self.state.active.as_ref().map_or(0, |a| a.retries) + 1;
        if retries > max {
            match on_fail {
                Some(step) => self.goto_step(bundle, pos.0, step),
                None => self.end(EndReason::RetriesExhausted),
            }
            return;
        }
        if let Some(active) = self.state.active.as_mut() {
            active.retries = retries;
        }
        let text = if choices.is_empty() {
            self.render(bundle, message)
        } else {
            self.render(bundle, message)
                .map(|t| with_options(&t, &choices))
        };
        if let Some(text) = text {
            self.push_send(text, None, 0, choices);
        }
        self.schedule_idle(bundle, pos.0);
    }

    fn on_timer(&mut self, id: u64) {
        let Some(index) = self.state.timers.iter().position(|t| t.id == id) else {
            return; // cancelled or already handled
        };
        let timer = self.state.timers.remove(index);
        let Some(bundle) = self.conversation_bundle() else {
            return;
        };
        let Some(active) = self.state.active.clone() else {
            return;
        };
        match timer.kind {
            TimerKind::Expiry => self.end(EndReason::Expired),
            TimerKind::IdleReminder | TimerKind::IdleEnd => {
                let Some(flow) = bundle
                    .flow(&active.flow)
                    .and_then(|i| bundle.doc.flows.get(i))
                else {
                    return;
                };
                let Some(idle) = &flow.idle else { return };
                if timer.kind == TimerKind::IdleReminder {
                    if let Some(reminder) = &idle.reminder {
                        self.send_text(bundle, reminder, None, 0, Vec::new());
                    }
                    let wait = idle.end_after.unwrap_or(idle.after).0;
                    self.schedule(TimerKind::IdleEnd, later(self.ctx.now, wait));
                } else {
                    if let Some(message) = &idle.end_message {
                        self.send_text(bundle, message, None, 0, Vec::new());
                    }
                    self.end(EndReason::Idle);
                }
            }
        }
    }

    fn on_http(&mut self, request_id: u64, outcome: &HttpOutcome) {
        let Some(active) = self.state.active.clone() else {
            return;
        };
        if active.waiting != (Waiting::Http { request_id }) {
            return; // a late result for a request the conversation moved past
        }
        let Some(bundle) = self.conversation_bundle() else {
            return;
        };
        let Some(pos) = self.position(bundle, &active) else {
            return;
        };
        let Some(Step::Action {
            http: Some(http), ..
        }) = bundle.step_at(pos)
        else {
            return self.lost(&active);
        };
        let body = match outcome {
            HttpOutcome::Response { status, body } if (200..300).contains(status) => Some(body),
            HttpOutcome::Response { status, .. } => {
                self.warn(format!("http step {:?} got status {status}", active.step));
                None
            }
            HttpOutcome::Failed { error } => {
                self.warn(format!("http step {:?} failed: {error}", active.step));
                None
            }
        };
        match body {
            Some(body) => {
                for (var, path) in &http.save {
                    self.store_var(var, lookup(body, path));
                }
                self.continue_after(bundle, pos);
            }
            None => match &http.on_error {
                Some(step) => self.goto_step(bundle, pos.0, step),
                None => self.end(EndReason::HttpFailed),
            },
        }
    }

    fn on_takeover(&mut self) {
        self.cancel_timers(|kind| matches!(kind, TimerKind::IdleReminder | TimerKind::IdleEnd));
        match self.state.active.as_mut() {
            Some(active) => active.waiting = Waiting::Handoff,
            None => {
                let Some(bundle) = self.versions.active() else {
                    return;
                };
                self.bundle = Some(bundle);
                // No flow step to go back to: resuming ends it (see `on_resume`).
                self.state.active = Some(Active {
                    version: bundle.version,
                    flow: String::new(),
                    step: String::new(),
                    waiting: Waiting::Handoff,
                    retries: 0,
                    started_at: self.ctx.now,
                });
            }
        }
        self.reschedule_expiry();
    }

    fn on_resume(&mut self) {
        let Some(active) = self.state.active.clone() else {
            return;
        };
        if active.waiting != Waiting::Handoff {
            return;
        }
        if active.flow.is_empty() {
            // Taken over outside any flow: nothing to go back to.
            self.end(EndReason::Resumed);
            return;
        }
        let Some(bundle) = self.conversation_bundle() else {
            return;
        };
        let Some(pos) = self.position(bundle, &active) else {
            return;
        };
        match bundle.step_at(pos) {
            Some(Step::Handoff {
                resume: Some(step), ..
            }) => {
                let step = step.clone();
                self.goto_step(bundle, pos.0, &step);
                self.reschedule_expiry();
            }
            _ => self.end(EndReason::Resumed),
        }
    }

    /// The position of the step a conversation waits on.
    fn position(&mut self, bundle: &Bundle, active: &Active) -> Option<Pos> {
        let pos = bundle
            .flow(&active.flow)
            .and_then(|f| bundle.step(f, &active.step));
        if pos.is_none() {
            self.lost(active);
        }
        pos
    }

    /// The stored position does not exist in its version (state edited by hand?).
    fn lost(&mut self, active: &Active) {
        self.warn(format!(
            "step {:?} of flow {:?} not found in version {}",
            active.step, active.flow, active.version
        ));
        self.end(EndReason::Error);
    }

    fn goto_step(&mut self, bundle: &'a Bundle, flow: usize, step: &str) {
        match bundle.step(flow, step) {
            Some(pos) => self.advance(bundle, pos),
            None => {
                self.warn(format!("step {step:?} does not exist"));
                self.end(EndReason::Error);
            }
        }
    }

    /// Jumps to another flow inside the same conversation (variables kept).
    fn goto_flow(&mut self, bundle: &'a Bundle, flow: &str) {
        match bundle.flow(flow) {
            Some(index) => self.advance(bundle, (index, 0)),
            None => {
                self.warn(format!("flow {flow:?} does not exist"));
                self.end(EndReason::Error);
            }
        }
    }

    fn continue_after(&mut self, bundle: &'a Bundle, pos: Pos) {
        let explicit = bundle.step_at(pos).and_then(|step| match step {
            Step::Message { next, .. }
            | Step::Question { next, .. }
            | Step::Condition { next, .. }
            | Step::Action { next, .. } => next.clone(),
            _ => None,
        });
        match explicit {
            Some(next) => self.goto_step(bundle, pos.0, &next),
            None if bundle.step_at((pos.0, pos.1 + 1)).is_some() => {
                self.advance(bundle, (pos.0, pos.1 + 1))
            }
            None => self.end(EndReason::Completed),
        }
    }

    /// Runs steps from `pos` until one waits or the conversation ends.
    fn advance(&mut self, bundle: &'a Bundle, pos: Pos) {
        if self.stepping {
            self.pending = Some((bundle, pos));
            return;
        }
        self.stepping = true;
        let mut next = Some((bundle, pos));
        while let Some((bundle, pos)) = next {
            self.run_step(bundle, pos);
            next = self.pending.take();
        }
        self.stepping = false;
    }

    /// Runs one step; a step that goes on names its successor through `advance`.
    fn run_step(&mut self, bundle: &'a Bundle, pos: Pos) {
        if self.halted {
            return;
        }
        if self.state.fan_out.steps >= self.limits.max_steps {
            self.halt(format!(
                "more than {} steps for one inbound event (pipeline.max_steps_per_event): the run was stopped",
                self.limits.max_steps
            ));
            return;
        }
        self.state.fan_out.steps += 1;
        let Some(step) = bundle.step_at(pos) else {
            self.end(EndReason::Completed);
            return;
        };
        let flow_id = bundle.doc.flows[pos.0].id.clone();
        if let Some(active) = self.state.active.as_mut() {
            active.flow = flow_id;
            active.step = step.id().to_owned();
            active.retries = 0;
        }
        match step {
            Step::Message {
                text, media, delay, ..
            } => {
                let delay_ms =
                    delay.map_or(0, |d| u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX));
                for (i, t) in text.iter().enumerate() {
                    // Media goes with the first text; the delay applies before it.
                    let (media, delay) = if i == 0 {
                        (media.as_ref(), delay_ms)
                    } else {
                        (None, 0)
                    };
                    self.send_text(bundle, t, media, delay, Vec::new());
                }
                self.continue_after(bundle, pos);
            }
            Step::Question { text, .. } => {
                self.send_text(bundle, text, None, 0, Vec::new());
                self.wait(bundle, pos, Waiting::Answer);
            }
            Step::Menu { text, options, .. } => {
                let choices = menu_choices(options);
                if let Some(rendered) = self.render(bundle, text) {
                    self.push_send(with_options(&rendered, &choices), None, 0, choices);
                }
                self.wait(bundle, pos, Waiting::Choice);
            }
            Step::Condition { branches, .. } => {
                let mut failures = Vec::new();
                let taken = branches.iter().find(|branch| {
                    let scope = self.scope();
                    match bundle.templates.eval(&branch.when, &scope) {
                        Ok(value) => truthy(&value),
                        Err(err) => {
                            failures.push(format!(
                                "condition {:?} failed, taken as false: {err}",
                                branch.when
                            ));
                            false
                        }
                    }
                });
                for failure in failures {
                    self.warn(failure);
                }
                match taken {
                    Some(branch) if branch.step.is_some() => {
                        let step = branch.step.clone().unwrap_or_default();
                        self.goto_step(bundle, pos.0, &step);
                    }
                    Some(branch) => {
                        let flow = branch.flow.clone().unwrap_or_default();
                        self.goto_flow(bundle, &flow);
                    }
                    None => self.continue_after(bundle, pos),
                }
            }
            Step::Action { set: Some(set), .. } => {
                for (name, value) in set {
                    let computed = match value {
                        Value::String(template) => self.render(bundle, template).map(Value::String),
                        Value::Object(map) => {
                            let expr = map.get("expr").and_then(Value::as_str).unwrap_or_default();
                            let scope = self.scope();
                            match bundle.templates.eval(expr, &scope) {
                                Ok(value) => Some(value),
                                Err(err) => {
                                    self.warn(format!("set.{name}: {err}"));
                                    None
                                }
                            }
                        }
                        literal => Some(literal.clone()),
                    };
                    self.store_var(name, computed.unwrap_or(Value::Null));
                }
                self.continue_after(bundle, pos);
            }
            Step::Action {
                http: Some(http), ..
            } => {
                if self.state.fan_out.http >= self.limits.max_http {
                    self.halt(format!(
                        "more than {} HTTP requests for one inbound event (pipeline.max_http_per_event): the run was stopped",
                        self.limits.max_http
                    ));
                    return;
                }
                self.state.fan_out.http += 1;
                let request_id = self.take_id();
                let url = self.render(bundle, &http.url).unwrap_or_default();
                let headers = http
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (name.clone(), self.render(bundle, value).unwrap_or_default())
                    })
                    .collect();
                let body = http
                    .body
                    .as_ref()
                    .map(|b| self.render(bundle, b).unwrap_or_default());
                let timeout = http.timeout.map_or(DEFAULT_HTTP_TIMEOUT, |t| t.0);
                self.effects.push(Effect::Http(HttpRequest {
                    request_id,
                    method: http.method.to_ascii_uppercase(),
                    url,
                    headers,
                    body,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                }));
                self.wait(bundle, pos, Waiting::Http { request_id });
            }
            Step::Action {
                create_order,
                notify,
                llm,
                ..
            } => {
                // Reaching here means the daemon declared it can run the action
                // (validation refuses it otherwise); the engine hands it over and goes on.
                let (action, payload) = match (create_order, notify, llm) {
                    (Some(p), _, _) => (ExternalAction::CreateOrder, p),
                    (_, Some(p), _) => (ExternalAction::Notify, p),
                    (_, _, Some(p)) => (ExternalAction::Llm, p),
                    _ => {
                        self.end(EndReason::Error);
                        return;
                    }
                };
                let payload = self.render_value(bundle, payload);
                if self.halted {
                    return;
                }
                self.effects.push(Effect::Action {
                    action,
                    payload,
                    flow: bundle.doc.flows[pos.0].id.clone(),
                    step: step.id().to_owned(),
                    vars: self.state.vars.clone(),
                });
                self.continue_after(bundle, pos);
            }
            Step::Handoff { text, .. } => {
                if let Some(text) = text {
                    self.send_text(bundle, text, None, 0, Vec::new());
                }
                if self.halted {
                    return;
                }
                self.effects.push(Effect::Handoff {
                    flow: bundle.doc.flows[pos.0].id.clone(),
                    step: step.id().to_owned(),
                });
                self.wait(bundle, pos, Waiting::Handoff);
            }
            Step::Goto {
                step: Some(target), ..
            } => {
                let target = target.clone();
                self.goto_step(bundle, pos.0, &target);
            }
            Step::Goto {
                flow: Some(target), ..
            } => {
                let target = target.clone();
                self.goto_flow(bundle, &target);
            }
            Step::Goto { .. } => self.end(EndReason::Error),
            Step::End { text, .. } => {
                if let Some(text) = text {
                    self.send_text(bundle, text, None, 0, Vec::new());
                }
                self.end(EndReason::Completed);
            }
        }
    }

    fn wait(&mut self, bundle: &'a Bundle, pos: Pos, waiting: Waiting) {
        if self.halted {
            return;
        }
        let idle = matches!(waiting, Waiting::Answer | Waiting::Choice);
        if let Some(active) = self.state.active.as_mut() {
            active.waiting = waiting;
        }
        if idle {
            self.schedule_idle(bundle, pos.0);
        }
    }

    fn schedule_idle(&mut self, bundle: &Bundle, flow: usize) {
        self.cancel_timers(|kind| matches!(kind, TimerKind::IdleReminder | TimerKind::IdleEnd));
        if let Some(idle) = bundle.doc.flows.get(flow).and_then(|f| f.idle.as_ref()) {
            self.schedule(TimerKind::IdleReminder, later(self.ctx.now, idle.after.0));
        }
    }

    /// Keeps one expiry timer, `expiry` after the latest activity, while a conversation runs.
    fn reschedule_expiry(&mut self) {
        self.cancel_timers(|kind| kind == TimerKind::Expiry);
        if self.state.active.is_some()
            && let Some(bundle) = self.bundle
        {
            let at = later(
                self.state.last_activity.unwrap_or(self.ctx.now),
                bundle.doc.expiry.0,
            );
            self.schedule(TimerKind::Expiry, at);
        }
    }

    fn schedule(&mut self, kind: TimerKind, at: Option<DateTime<Utc>>) {
        if self.halted {
            return;
        }
        // Durations are bounded by validation; a date past chrono's range waits forever.
        let at = at.unwrap_or(DateTime::<Utc>::MAX_UTC);
        let timer = Timer {
            id: self.take_id(),
            kind,
            at,
        };
        self.state.timers.push(timer.clone());
        self.effects.push(Effect::ScheduleTimer(timer));
    }

    fn cancel_timers(&mut self, which: impl Fn(TimerKind) -> bool) {
        let (cancelled, kept): (Vec<Timer>, Vec<Timer>) = std::mem::take(&mut self.state.timers)
            .into_iter()
            .partition(|t| which(t.kind));
        self.state.timers = kept;
        for timer in cancelled {
            self.effects.push(Effect::CancelTimer { id: timer.id });
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.state.next_id.max(1);
        self.state.next_id = id + 1;
        id
    }

    fn end(&mut self, reason: EndReason) {
        if self.state.active.take().is_none() {
            return;
        }
        self.cancel_timers(|_| true);
        self.state.vars.clear();
        self.effects.push(Effect::ConversationEnded { reason });
    }

    fn warn(&mut self, message: String) {
        self.effects.push(Effect::Warning { message });
    }

    /// Stops the run at a limit: a warning, and the conversation ends (it would otherwise
    /// stand on a step that did not finish).
    fn halt(&mut self, message: String) {
        self.warn(message);
        self.end(EndReason::Error);
        self.halted = true;
    }

    /// Stores a variable unless it would take the conversation's `vars` past
    /// [`MAX_VARS_BYTES`]; then it is set to `null`, with a warning.
    fn store_var(&mut self, name: &str, value: Value) {
        self.state.vars.insert(name.to_owned(), value);
        let size = serde_json::to_vec(&self.state.vars).map_or(usize::MAX, |json| json.len());
        if size > MAX_VARS_BYTES {
            self.state.vars.insert(name.to_owned(), Value::Null);
            self.warn(format!(
                "vars.{name} not stored: the conversation's variables would take {size} bytes, over the limit of {MAX_VARS_BYTES}"
            ));
        }
    }

    fn scope(&self) -> Scope<'_> {
        let flow = self.state.active.as_ref().map_or("", |a| a.flow.as_str());
        Scope {
            contact: self.ctx.contact,
            bot: self.ctx.bot,
            vars: &self.state.vars,
            now: self.ctx.now.with_timezone(&self.ctx.timezone).to_rfc3339(),
            input: self.input,
            flow,
        }
    }

    fn render(&mut self, bundle: &Bundle, source: &str) -> Option<String> {
        let result = bundle.templates.render(source, &self.scope());
        match result {
            Ok(text) => Some(text),
            Err(err) => {
                self.warn(format!("template {source:?}: {err}"));
                None
            }
        }
    }

    /// Renders every string inside a JSON value as a template.
    fn render_value(&mut self, bundle: &Bundle, value: &Value) -> Value {
        match value {
            Value::String(source) => Value::String(self.render(bundle, source).unwrap_or_default()),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.render_value(bundle, v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.render_value(bundle, v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn send_text(
        &mut self,
        bundle: &Bundle,
        source: &str,
        media: Option<&Media>,
        delay_ms: u64,
        choices: Vec<Choice>,
    ) {
        let Some(text) = self.render(bundle, source) else {
            return;
        };
        let media = media.map(|m| Media {
            url: self.render(bundle, &m.url).unwrap_or_default(),
            kind: m.kind,
            caption: m.caption.as_ref().and_then(|c| self.render(bundle, c)),
        });
        self.push_send(text, media, delay_ms, choices);
    }

    fn push_send(
        &mut self,
        text: String,
        media: Option<Media>,
        delay_ms: u64,
        choices: Vec<Choice>,
    ) {
        if self.halted || (text.trim().is_empty() && media.is_none()) {
            return;
        }
        if self.state.fan_out.messages >= self.limits.max_messages {
            self.halt(format!(
                "more than {} messages for one inbound event (pipeline.max_messages_per_event): the run was stopped",
                self.limits.max_messages
            ));
            return;
        }
        self.state.fan_out.messages += 1;
        self.effects.push(Effect::Send(Outbound {
            text,
            media,
            delay_ms,
            choices,
        }));
    }
}

fn menu_choices(options: &[super::document::MenuOption]) -> Vec<Choice> {
    options
        .iter()
        .enumerate()
        .map(|(i, option)| Choice {
            id: option.id.clone().unwrap_or_else(|| (i + 1).to_string()),
            label: option.label.clone(),
        })
        .collect()
}

/// A menu's text followed by its numbered options.
fn with_options(text: &str, choices: &[Choice]) -> String {
    let mut out = text.trim_end().to_owned();
    out.push('\n');
    for (i, choice) in choices.iter().enumerate() {
        out.push_str(&format!("\n{}. {}", i + 1, choice.label));
    }
    out
}

/// `data.items.0.id` in a JSON value; missing parts give `null`.
fn lookup(value: &Value, path: &str) -> Value {
    let mut current = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        current = match current {
            Value::Object(map) => match map.get(part) {
                Some(v) => v,
                None => return Value::Null,
            },
            Value::Array(items) => match part.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(v) => v,
                None => return Value::Null,
            },
            _ => return Value::Null,
        };
    }
    current.clone()
}

fn chrono_span(duration: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(duration).unwrap_or(ChronoDuration::MAX)
}

/// `at + duration`, or `None` past chrono's range (never a panic).
fn later(at: DateTime<Utc>, duration: std::time::Duration) -> Option<DateTime<Utc>> {
    at.checked_add_signed(chrono_span(duration))
}
