//! A conversation's work, one item at a time (see [`super::conversations`] for the
//! tasks that call it): runs the flow engine and commits the result in one transaction.
//!
//! Faults stay with the work that caused them. A step that fails (a database error, a
//! flow over its bounds, even a panic, caught here at the worker boundary) is retried
//! with backoff, `pipeline.max_attempts` times in all, then its inbound message is marked
//! `failed` with the reason and skipped, and the conversation goes on. A message that
//! was being handled when dashd died is counted at the next start (the message each
//! conversation was at gets an attempt), so even one that crashes dashd itself cannot
//! crash-loop it. A commit refused because the conversation changed meanwhile
//! (another dashd, an operator's reset) runs the step again on fresh state.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dash_core::api::{Choice, MessageBody};
use dash_core::flow::engine::{ConversationState, Effect, Event, ExternalAction, Waiting};
use dash_core::ratelimit::backoff;
use dash_core::{Bot, BotRef, BotStatus};
use futures_util::FutureExt;
use serde_json::json;
use uuid::Uuid;

use super::{Inner, Work};
use crate::flow_runner::{FlowSource, StepContext, StepRequest};
use crate::store::conversations::{ConversationRow, NewOutbound, StepCommit, TimerRow};

/// Handles one unit of a conversation's work. A panic must not take the conversation's
/// task down (nor leave its work unaccounted): it is logged, and the work it stood for is
/// retried or skipped by the paths below.
pub(crate) async fn handle_guarded(inner: &Arc<Inner>, work: Work) {
    if let Err(panic) = AssertUnwindSafe(handle(inner, work)).catch_unwind().await {
        tracing::error!(
            panic = panic_text(&panic),
            "conversation work panicked; it is retried or skipped"
        );
    }
}

/// Times a conversation step is run again when its commit finds the conversation changed.
const STALE_RETRIES: u32 = 3;

async fn handle(inner: &Arc<Inner>, work: Work) {
    match work {
        Work::Inbound { bot_id, contact } => inbound(inner, bot_id, &contact).await,
        Work::Timer {
            bot_id,
            contact,
            timer_id,
        } => {
            if let Err(failure) = guarded(timer(inner, bot_id, &contact, timer_id)).await {
                timer_failed(inner, bot_id, &contact, timer_id, &failure).await;
            }
        }
        Work::Http {
            bot_id,
            contact,
            request_id,
            outcome,
            attempt,
        } => {
            let event = Event::Http {
                request_id,
                outcome: outcome.clone(),
            };
            let result = guarded(async {
                if let Some(bot) = load_bot(inner, bot_id).await? {
                    run_step(inner, &bot, &contact, &event, Step::default()).await?;
                    inner.announce_if_idle(bot_id, &contact).await;
                }
                Ok(())
            })
            .await;
            if let Err(Failure { text: error, .. }) = result {
                let attempt = attempt + 1;
                if attempt < inner.config.pipeline.max_attempts {
                    let delay = retry_delay(inner, attempt);
                    tracing::warn!(bot_id = %bot_id, request_id, attempt, error, retry_in_ms = delay.as_millis() as u64, "cannot apply a flow HTTP result; retrying");
                    later(
                        inner,
                        delay,
                        Work::Http {
                            bot_id,
                            contact,
                            request_id,
                            outcome,
                            attempt,
                        },
                    );
                } else {
                    tracing::error!(bot_id = %bot_id, request_id, attempt, error, "cannot apply a flow HTTP result; given up (the conversation is resumed at the next restart)");
                }
            }
        }
        Work::Resume {
            bot_id,
            contact,
            done,
        } => {
            let result = operator_retries(inner, "resume", || async {
                let Some(bot) = load_bot(inner, bot_id).await? else {
                    return Ok(None);
                };
                let before = load_state(inner, bot_id, &contact).await?;
                let handed_off = matches!(
                    before.active.as_ref().map(|a| &a.waiting),
                    Some(Waiting::Handoff)
                );
                if handed_off {
                    run_step(inner, &bot, &contact, &Event::Resume, Step::default()).await?;
                }
                Ok(Some(handed_off))
            })
            .await;
            let _ = done.send(result);
        }
        Work::Takeover {
            bot_id,
            contact,
            done,
        } => {
            let result = operator_retries(inner, "takeover", || async {
                let Some(bot) = load_bot(inner, bot_id).await? else {
                    return Ok(None);
                };
                let handed_off = |state: &ConversationState| {
                    matches!(
                        state.active.as_ref().map(|a| &a.waiting),
                        Some(Waiting::Handoff)
                    )
                };
                if !handed_off(&load_state(inner, bot_id, &contact).await?) {
                    run_step(inner, &bot, &contact, &Event::Takeover, Step::default()).await?;
                }
                Ok(Some(handed_off(
                    &load_state(inner, bot_id, &contact).await?,
                )))
            })
            .await;
            let _ = done.send(result);
        }
        Work::Reset {
            bot_id,
            contact,
            done,
        } => {
            let result = operator_retries(inner, "reset", || async {
                inner.conversation_rows.forget(bot_id, &contact);
                Ok(Some(
                    inner.store.reset_conversation(bot_id, &contact).await?,
                ))
            })
            .await;
            let _ = done.send(result);
        }
    }
}

/// An operator's request, tried `pipeline.max_attempts` times with backoff; `None` from
/// `attempt` means the bot is gone. The error says what failed, as it is.
async fn operator_retries<F, Fut>(
    inner: &Inner,
    what: &str,
    mut attempt: F,
) -> Result<bool, super::OperatorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<bool>>>,
{
    let max_attempts = inner.config.pipeline.max_attempts;
    let mut tries = 0;
    loop {
        tries += 1;
        match guarded(attempt()).await {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => return Err(super::OperatorError::BotGone),
            Err(Failure { text: error, .. })
                if tries < max_attempts && !inner.shutdown.is_cancelled() =>
            {
                tracing::warn!(what, tries, error, "an operator's request failed; retrying");
                tokio::time::sleep(retry_delay(inner, tries)).await;
            }
            Err(Failure { text: error, .. }) => {
                return Err(super::OperatorError::Failed(format!(
                    "cannot {what} after {tries} attempts: {error}"
                )));
            }
        }
    }
}

/// Why a unit of work failed.
#[derive(Debug)]
struct Failure {
    text: String,
    /// Something dashd depends on was unavailable (the database, the flow workers):
    /// not the work's fault, so it is retried without counting an attempt.
    transient: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Runs a unit of work, turning an error or a panic into a [`Failure`].
async fn guarded<T>(work: impl Future<Output = anyhow::Result<T>>) -> Result<T, Failure> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            let transient = err.chain().any(|cause| {
                cause
                    .downcast_ref::<crate::store::StoreError>()
                    .is_some_and(crate::store::StoreError::is_unavailable)
                    || matches!(
                        cause.downcast_ref::<crate::flow_runner::StepError>(),
                        Some(crate::flow_runner::StepError::Unavailable(_))
                    )
            });
            Err(Failure {
                text: format!("{err:#}"),
                transient,
            })
        }
        Err(panic) => Err(Failure {
            text: format!("internal error (panic: {})", panic_text(&panic)),
            transient: false,
        }),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".to_owned());
    text.chars().take(200).collect()
}

/// The pause before attempt `attempt + 1` (exponential, with jitter, at most a minute
/// past the base's doubling).
fn retry_delay(inner: &Inner, attempt: u32) -> Duration {
    let base = Duration::from_millis(inner.config.pipeline.retry_base_ms);
    backoff(
        attempt,
        base,
        base.saturating_mul(64),
        Uuid::new_v4().as_u64_pair().0,
    )
}

/// Queues `work` again after `delay` (unless dashd stops first: what it stands for is
/// in the database and is picked up at the next start).
fn later(inner: &Arc<Inner>, delay: Duration, work: Work) {
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = inner.shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => inner.submit(work),
        }
    });
}

/// Looks at a contact's pending messages again after `delay`, unless a look is already
/// planned for the conversation (its first waiting message decides when; a second wake
/// would only read the same messages again).
fn again_later(inner: &Arc<Inner>, delay: Duration, bot_id: Uuid, contact: &str) {
    if !inner.conversations.plan_wake(bot_id, contact) {
        return;
    }
    let inner = inner.clone();
    let contact = contact.to_owned();
    tokio::spawn(async move {
        tokio::select! {
            () = inner.shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {
                inner.conversations.woken(bot_id, &contact);
                inner.submit(Work::Inbound { bot_id, contact });
            }
        }
    });
}

/// Handles a contact's pending inbound messages in order. One that is waiting for its
/// next attempt holds the ones after it (order is kept); one that failed for good is
/// skipped.
async fn inbound(inner: &Arc<Inner>, bot_id: Uuid, contact: &str) {
    let bot = match guarded(load_bot(inner, bot_id)).await {
        Ok(Some(bot)) => bot,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(bot_id = %bot_id, error = %error, "cannot load the bot; its messages are retried");
            again_later(inner, retry_delay(inner, 1), bot_id, contact);
            return;
        }
    };
    let messages = match inner.store.unprocessed_for(bot_id, contact).await {
        Ok(messages) => messages,
        Err(err) => {
            tracing::error!(bot_id = %bot_id, error = %err, "cannot read pending messages; retrying");
            again_later(inner, retry_delay(inner, 1), bot_id, contact);
            return;
        }
    };
    let max_attempts = inner.config.pipeline.max_attempts;
    for message in messages {
        let now_ms = inner.clock.now_ms();
        if let Some(at) = message.next_attempt_ms.filter(|at| *at > now_ms) {
            let wait = Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0));
            again_later(inner, wait, bot_id, contact);
            return;
        }
        if message.attempts >= max_attempts {
            // Earlier attempts ended without a verdict: dashd stopped or crashed while
            // handling it (each start counts one for the message a conversation was at).
            let error = format!(
                "gave up after {} attempts that did not finish (dashd stopped or crashed while handling it)",
                message.attempts
            );
            give_up(inner, &message, &error).await;
            continue;
        }
        // This attempt, counted when it fails (and, should dashd die meanwhile, at the
        // next start).
        let attempts = message.attempts + 1;
        let event = Event::Message {
            text: message.body.text.clone(),
            reply_id: message.body.reply_id.clone(),
        };
        let step = Step {
            processed_inbound: Some(message.id),
            contact_name: message.body.name.clone(),
            last_message_at: Some(message.received_at),
            ..Step::default()
        };
        match guarded(run_step(inner, &bot, contact, &event, step)).await {
            Ok(()) => inner.backlog.release(bot_id),
            Err(failure) if failure.transient => {
                // Not the message's fault: the attempt is given back.
                let delay = retry_delay(inner, attempts);
                let retry_at = inner
                    .clock
                    .now_ms()
                    .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                tracing::warn!(bot = %bot.path(), message = %message.id, error = %failure, retry_in_ms = delay.as_millis() as u64, "cannot handle a message now; retrying");
                if let Err(err) = inner
                    .store
                    .inbound_postponed(message.id, &failure.text, retry_at, inner.clock.now())
                    .await
                {
                    tracing::error!(message = %message.id, error = %err, "cannot postpone a message");
                }
                again_later(inner, delay, bot_id, contact);
                return;
            }
            Err(Failure { text: error, .. }) if attempts < max_attempts => {
                let delay = retry_delay(inner, attempts);
                let retry_at = inner
                    .clock
                    .now_ms()
                    .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                tracing::warn!(bot = %bot.path(), message = %message.id, attempts, error, retry_in_ms = delay.as_millis() as u64, "handling a message failed; retrying");
                if let Err(err) = inner
                    .store
                    .inbound_failed(message.id, &error, Some(retry_at), inner.clock.now())
                    .await
                {
                    tracing::error!(message = %message.id, error = %err, "cannot record a failed attempt");
                }
                again_later(inner, delay, bot_id, contact);
                return;
            }
            Err(failure) => {
                let error = format!("failed {attempts} times, last: {failure}");
                give_up(inner, &message, &error).await;
            }
        }
    }
    inner.announce_if_idle(bot_id, contact).await;
}

/// Marks an inbound message `failed` for good, with the reason; the contact's next
/// messages are handled.
async fn give_up(inner: &Inner, message: &crate::store::inbound::InboundWork, error: &str) {
    tracing::error!(bot_id = %message.bot_id, message = %message.id, error, "message skipped: it cannot be handled");
    match inner
        .store
        .inbound_failed(message.id, error, None, inner.clock.now())
        .await
    {
        Ok(_) => inner.backlog.release(message.bot_id),
        Err(err) => {
            tracing::error!(message = %message.id, error = %err, "cannot mark a message failed");
        }
    }
}

async fn timer(
    inner: &Arc<Inner>,
    bot_id: Uuid,
    contact: &str,
    timer_id: u64,
) -> anyhow::Result<()> {
    if let Some(bot) = load_bot(inner, bot_id).await? {
        let step = Step {
            fired_timer: Some(timer_id),
            ..Step::default()
        };
        run_step(inner, &bot, contact, &Event::Timer { id: timer_id }, step).await?;
    }
    Ok(())
}

/// A timer whose step failed is due again after a backoff, or dropped after
/// `pipeline.max_attempts` (never picked again at once: no hot loop).
async fn timer_failed(
    inner: &Inner,
    bot_id: Uuid,
    contact: &str,
    timer_id: u64,
    failure: &Failure,
) {
    let error = failure.text.as_str();
    // A transient failure is retried in a while without counting toward dropping it.
    let max_attempts = if failure.transient {
        u32::MAX
    } else {
        inner.config.pipeline.max_attempts
    };
    let now_ms = inner.clock.now_ms();
    let retry_at = |attempts: u32| {
        (attempts < max_attempts).then(|| {
            let delay = retry_delay(inner, attempts);
            now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
        })
    };
    match inner
        .store
        .timer_failed(bot_id, contact, timer_id, &retry_at)
        .await
    {
        Ok(0) => {}
        Ok(attempts) if attempts >= max_attempts => {
            tracing::error!(bot_id = %bot_id, timer_id, attempts, error, "flow timer dropped: its step keeps failing");
        }
        Ok(attempts) => {
            tracing::warn!(bot_id = %bot_id, timer_id, attempts, error, "flow timer failed; retrying");
        }
        // The timer stays claimed until its lease runs out, then comes back.
        Err(err) => tracing::error!(error = %err, "cannot postpone a failing flow timer"),
    }
}

/// The request id a conversation waits on, if it waits on one.
pub(crate) async fn pending_request(inner: &Inner, bot_id: Uuid, contact: &str) -> Option<u64> {
    let state = load_state(inner, bot_id, contact).await.ok()?;
    match state.active?.waiting {
        Waiting::Http { request_id } => Some(request_id),
        _ => None,
    }
}

async fn load_bot(inner: &Inner, bot_id: Uuid) -> anyhow::Result<Option<Bot>> {
    Ok(inner.cached_bot(bot_id).await?.map(|(bot, _)| bot))
}

async fn load_state(
    inner: &Inner,
    bot_id: Uuid,
    contact: &str,
) -> anyhow::Result<ConversationState> {
    let row = inner.store.conversation_row(bot_id, contact).await?;
    Ok(state_of(bot_id, row.map(|r| r.state)))
}

fn state_of(bot_id: Uuid, stored: Option<serde_json::Value>) -> ConversationState {
    match stored {
        Some(json) => match ConversationState::from_json(&json.to_string()) {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(bot_id = %bot_id, error = %err, "unreadable conversation state; starting afresh");
                ConversationState::default()
            }
        },
        None => ConversationState::default(),
    }
}

/// What a step adds to the commit besides the engine's output.
#[derive(Debug, Default)]
struct Step {
    processed_inbound: Option<Uuid>,
    contact_name: Option<String>,
    last_message_at: Option<DateTime<Utc>>,
    fired_timer: Option<u64>,
}

/// A bot's flow version as the flow runner takes it; `None` when it does not exist
/// (deleted). A database error is an error: the step is retried, never run without its
/// flow.
async fn flow_source(
    inner: &Inner,
    bot_id: Uuid,
    version: u32,
) -> anyhow::Result<Option<Arc<FlowSource>>> {
    if let Some(source) = inner.flows.get(bot_id, version) {
        return Ok(Some(source));
    }
    let stored = match inner
        .store
        .flow_version(&BotRef::Id(bot_id), Some(version))
        .await
    {
        Ok(stored) => stored,
        Err(crate::store::StoreError::NotFound { .. }) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let source = Arc::new(FlowSource::new(
        version,
        serde_json::to_string(&stored.document)?,
    ));
    // Bots running the same document share one entry.
    Ok(Some(inner.flows.put(bot_id, source)))
}

/// Runs one engine step and commits it; runs it again on fresh state when the commit
/// finds the conversation changed meanwhile. A step whose inbound message or timer was
/// already handled is dropped.
async fn run_step(
    inner: &Arc<Inner>,
    bot: &Bot,
    contact: &str,
    event: &Event,
    extra: Step,
) -> anyhow::Result<()> {
    for _ in 0..STALE_RETRIES {
        if try_step(inner, bot, contact, event, &extra).await? {
            return Ok(());
        }
    }
    anyhow::bail!("the conversation kept changing while its step ran")
}

/// One attempt; false when the commit was refused as stale.
async fn try_step(
    inner: &Arc<Inner>,
    bot: &Bot,
    contact: &str,
    event: &Event,
    extra: &Step,
) -> anyhow::Result<bool> {
    let now = inner.clock.now();
    let row = match inner.conversation_rows.get(bot.id, contact) {
        Some(row) => Some(row),
        None => inner.store.conversation_row(bot.id, contact).await?,
    };
    let stored_name = row.as_ref().and_then(|r| r.contact_name.clone());
    let expected_version = row.as_ref().map(|r| r.version);
    let state = state_of(bot.id, row.map(|r| r.state));
    let name = extra.contact_name.clone().or(stored_name);
    let answering = bot.status == BotStatus::Active && tenant_active(inner, bot).await;

    let (state, effects) = if answering {
        let active = match bot.flow_version {
            Some(v) => flow_source(inner, bot.id, v).await?,
            None => None,
        };
        let current = match state.active.as_ref().map(|a| a.version) {
            Some(v) if Some(v) != bot.flow_version => flow_source(inner, bot.id, v).await?,
            _ => None,
        };
        let request = StepRequest {
            active,
            current,
            state,
            event: event.clone(),
            context: StepContext {
                now,
                timezone: dash_core::validate::timezone("timezone", &bot.timezone)
                    .unwrap_or(chrono_tz::UTC),
                bot: json!({"name": bot.name, "timezone": bot.timezone, "tenant": bot.tenant}),
                contact: json!({"phone": contact, "name": name}),
                limits: inner.config.pipeline.flow_limits(),
            },
        };
        // Off the async runtime, bounded in memory and time: a step over its bounds is
        // an error for this message (retried, then failed), never a crash or a stall.
        let outcome = inner
            .runner
            .step(bot.tenant_id, request)
            .await
            .map_err(|err| anyhow::anyhow!("flow step: {err}"))?;
        (outcome.state, outcome.effects)
    } else {
        (state, Vec::new())
    };

    let mut commit = StepCommit {
        bot_id: bot.id,
        tenant_id: bot.tenant_id,
        contact: contact.to_owned(),
        contact_name: name,
        state: serde_json::to_value(&state)?,
        status: match state.active.as_ref().map(|a| &a.waiting) {
            None => "idle",
            Some(Waiting::Handoff) => "handoff",
            Some(Waiting::Http { .. }) => "waiting_http",
            Some(_) => "active",
        },
        // A conversation taken over outside any flow has none to show.
        flow: state
            .active
            .as_ref()
            .map(|a| a.flow.clone())
            .filter(|flow| !flow.is_empty()),
        step: state
            .active
            .as_ref()
            .map(|a| a.step.clone())
            .filter(|step| !step.is_empty()),
        flow_version: state.active.as_ref().map(|a| a.version),
        last_message_at: extra.last_message_at,
        expected_version,
        processed_inbound: extra.processed_inbound,
        fired_timer: extra.fired_timer,
        outbound: Vec::new(),
        timers_add: Vec::new(),
        timers_remove: Vec::new(),
        orders: Vec::new(),
        events: Vec::new(),
        now,
    };
    let mut requests = Vec::new();
    for effect in effects {
        match effect {
            Effect::Send(out) => commit.outbound.push(NewOutbound {
                body: MessageBody {
                    text: out.text,
                    media: out.media,
                    choices: out
                        .choices
                        .into_iter()
                        .map(|c| Choice {
                            id: c.id,
                            label: c.label,
                        })
                        .collect(),
                    ..MessageBody::default()
                },
                delay_ms: out.delay_ms,
            }),
            Effect::ScheduleTimer(timer) => commit.timers_add.push(TimerRow {
                timer_id: timer.id,
                kind: format!("{:?}", timer.kind),
                due_ms: timer.at.timestamp_millis(),
            }),
            Effect::CancelTimer { id } => commit.timers_remove.push(id),
            Effect::Http(request) => requests.push(request),
            Effect::Handoff { flow, step } => {
                tracing::info!(bot = %bot.path(), flow, step, "conversation handed off to a person");
                commit.events.push((
                    "handoff.requested",
                    serde_json::json!({"bot_id": bot.id, "contact": contact, "flow": flow, "step": step}),
                ));
            }
            Effect::ConversationStarted {
                flow,
                version,
                reason,
            } => {
                tracing::debug!(bot = %bot.path(), flow, version, ?reason, "conversation started");
            }
            Effect::ConversationEnded { reason } => {
                tracing::debug!(bot = %bot.path(), ?reason, "conversation ended");
            }
            Effect::Action {
                action: ExternalAction::CreateOrder,
                payload,
                flow,
                step,
                vars,
            } => match flow_order(contact, &payload) {
                Ok(order) => commit.orders.push((order, vars)),
                Err(reason) => {
                    tracing::warn!(bot = %bot.path(), flow, step, reason, "a flow's create_order is invalid; no order");
                }
            },
            Effect::Action {
                action, flow, step, ..
            } => {
                // Validation with this release's capabilities refuses these actions, so
                // only a document stored by a newer dashd could get here.
                tracing::error!(bot = %bot.path(), ?action, flow, step, "flow action not supported by this dashd; skipped");
            }
            Effect::Warning { message } => {
                tracing::warn!(bot = %bot.path(), warning = message, "flow warning");
            }
        }
    }
    // A timer both added and cancelled in one step never reaches the database.
    let cancelled: Vec<u64> = commit.timers_remove.clone();
    commit
        .timers_add
        .retain(|t| !cancelled.contains(&t.timer_id));
    let sets_timers = !commit.timers_add.is_empty();
    // What the conversation's row holds once this commits, for its next step.
    let committed = ConversationRow {
        state: commit.state.clone(),
        contact_name: commit.contact_name.clone(),
        version: expected_version.map_or(1, |version| version + 1),
    };
    // Until the commit is known to have happened, the next step reads the row.
    inner.conversation_rows.forget(bot.id, contact);
    let Some(new_messages) = inner.steps.submit(commit).await?? else {
        if extra.processed_inbound.is_some() || extra.fired_timer.is_some() {
            // Stale only if the message or timer is still to do; otherwise it was done.
            return Ok(!still_to_do(inner, bot.id, contact, extra).await?);
        }
        return Ok(false);
    };
    inner.conversation_rows.put(bot.id, contact, committed);
    if !new_messages.is_empty() {
        inner.backlog.add(bot.id, new_messages.len());
        inner.dispatch.notify_one();
    }
    if sets_timers {
        inner.timers.notify_one();
    }
    for request in requests {
        spawn_http(inner, bot.id, contact, request);
    }
    Ok(true)
}

/// Whether the step's inbound message is still `received` / its timer still there.
async fn still_to_do(
    inner: &Inner,
    bot_id: Uuid,
    contact: &str,
    extra: &Step,
) -> anyhow::Result<bool> {
    if let Some(id) = extra.processed_inbound {
        return Ok(inner
            .store
            .unprocessed_for(bot_id, contact)
            .await?
            .iter()
            .any(|m| m.id == id));
    }
    if let Some(timer_id) = extra.fired_timer {
        return Ok(inner.store.timer_exists(bot_id, contact, timer_id).await?);
    }
    Ok(false)
}

fn spawn_http(
    inner: &Arc<Inner>,
    bot_id: Uuid,
    contact: &str,
    request: dash_core::flow::engine::HttpRequest,
) {
    let inner = inner.clone();
    let contact = contact.to_owned();
    // Tracked: shutdown waits for it, and its result is applied.
    let tracker = inner.in_flight.clone();
    tracker.spawn(async move {
        let allow_private = inner.config.pipeline.allow_private_http;
        let outcome = super::http::run(&inner.http, &request, allow_private).await;
        inner.submit(Work::Http {
            bot_id,
            contact,
            request_id: request.request_id,
            outcome,
            attempt: 0,
        });
    });
}

async fn tenant_active(inner: &Inner, bot: &Bot) -> bool {
    matches!(inner.cached_bot(bot.id).await, Ok(Some((_, true))))
}

/// The order a flow's `create_order` payload describes, for `contact`. Templates render
/// to text, so quantities and prices may come as numbers or as numeric strings.
fn flow_order(
    contact: &str,
    payload: &serde_json::Value,
) -> Result<dash_core::commerce::NewOrder, String> {
    use serde_json::Value;
    fn number(value: &Value) -> Option<i64> {
        match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
    fn text(value: Option<&Value>) -> Option<String> {
        value
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
    let items = payload
        .get("items")
        .and_then(Value::as_array)
        .ok_or("create_order needs items = [{ sku = ..., quantity = ... }]")?;
    let items = items
        .iter()
        .map(|item| dash_core::commerce::NewOrderItem {
            sku: text(item.get("sku")),
            name: text(item.get("name")),
            unit_price_cents: item.get("unit_price_cents").and_then(number),
            quantity: item.get("quantity").map_or(Some(1), number).unwrap_or(0),
        })
        .collect();
    let order = dash_core::commerce::NewOrder {
        contact: contact.to_owned(),
        customer_name: text(payload.get("customer_name")),
        items,
        currency: text(payload.get("currency")),
        seller_id: None,
        notes: text(payload.get("notes")),
    };
    order
        .validated()
        .map_err(|err| format!("{}: {}", err.field, err.message))
}
