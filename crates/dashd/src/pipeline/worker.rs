//! A conversation worker: takes work for the conversations hashed to it, one item at a
//! time, and for each runs the flow engine and commits the result in one transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dash_core::api::{Choice, MessageBody};
use dash_core::flow::engine::{ConversationState, Effect, Event, Waiting};
use dash_core::flow::{Bundle, Capabilities, Context, Document, Versions};
use dash_core::{Bot, BotRef, BotStatus, TenantStatus};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Inner, Work};
use crate::store::TenantRef;
use crate::store::pipeline::{NewOutbound, StepCommit, TimerRow};

/// Runs until the queue closes or dashd shuts down.
pub(crate) async fn run(inner: Arc<Inner>, mut queue: mpsc::Receiver<Work>) {
    loop {
        let work = tokio::select! {
            () = inner.shutdown.cancelled() => break,
            work = queue.recv() => match work {
                Some(work) => work,
                None => break,
            },
        };
        if let Err(err) = handle(&inner, work).await {
            // The work stays in the database (inbound `received`, timer row) and is
            // retried on the next message or restart.
            tracing::error!(error = format!("{err:#}"), "conversation step failed");
        }
    }
}

async fn handle(inner: &Arc<Inner>, work: Work) -> anyhow::Result<()> {
    match work {
        Work::Inbound { bot_id, contact } => {
            let Some(bot) = load_bot(inner, bot_id).await? else {
                return Ok(());
            };
            for message in inner.store.unprocessed_for(bot_id, &contact).await? {
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
                run_step(inner, &bot, &contact, &event, step).await?;
            }
            inner.announce_if_idle(bot_id, &contact).await;
        }
        Work::Timer {
            bot_id,
            contact,
            timer_id,
            done,
        } => {
            if let Some(bot) = load_bot(inner, bot_id).await? {
                let step = Step {
                    fired_timer: Some(timer_id),
                    ..Step::default()
                };
                run_step(inner, &bot, &contact, &Event::Timer { id: timer_id }, step).await?;
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
        Work::Http {
            bot_id,
            contact,
            request_id,
            outcome,
        } => {
            if let Some(bot) = load_bot(inner, bot_id).await? {
                run_step(
                    inner,
                    &bot,
                    &contact,
                    &Event::Http {
                        request_id,
                        outcome,
                    },
                    Step::default(),
                )
                .await?;
                inner.announce_if_idle(bot_id, &contact).await;
            }
        }
        Work::Resume {
            bot_id,
            contact,
            done,
        } => {
            let result = match load_bot(inner, bot_id).await {
                Ok(Some(bot)) => {
                    let before = load_state(inner, bot_id, &contact).await?;
                    let handed_off = matches!(
                        before.active.as_ref().map(|a| &a.waiting),
                        Some(Waiting::Handoff)
                    );
                    if handed_off {
                        run_step(inner, &bot, &contact, &Event::Resume, Step::default()).await?;
                    }
                    Ok(handed_off)
                }
                Ok(None) => Err("the bot no longer exists".to_owned()),
                Err(err) => Err(err.to_string()),
            };
            let _ = done.send(result);
        }
        Work::Reset {
            bot_id,
            contact,
            done,
        } => {
            let result = inner
                .store
                .reset_conversation(bot_id, &contact)
                .await
                .map_err(|err| err.to_string());
            let _ = done.send(result);
        }
    }
    Ok(())
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
    match inner.store.bot(&BotRef::Id(bot_id)).await {
        Ok(bot) => Ok(Some(bot)),
        Err(crate::store::StoreError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
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

/// The versions a step can use: the bot's active one and the conversation's own.
struct Loaded {
    active: Option<Arc<Bundle>>,
    current: Option<Arc<Bundle>>,
}

impl Versions for Loaded {
    fn active(&self) -> Option<&Bundle> {
        self.active.as_deref()
    }

    fn get(&self, version: u32) -> Option<&Bundle> {
        [&self.current, &self.active]
            .into_iter()
            .flatten()
            .find(|b| b.version == version)
            .map(|b| b.as_ref())
    }
}

async fn bundle(inner: &Inner, bot_id: Uuid, version: u32) -> Option<Arc<Bundle>> {
    if let Some(bundle) = inner.flows.get(bot_id, version) {
        return Some(bundle);
    }
    let stored = inner
        .store
        .flow_version(&BotRef::Id(bot_id), Some(version))
        .await
        .ok()?;
    // Bots running the same document share one compiled bundle.
    if let Some(shared) = inner.flows.shared(&stored.source, version) {
        inner.flows.put(bot_id, &stored.source, shared.clone());
        return Some(shared);
    }
    let doc: Document = serde_json::from_value(stored.document).ok()?;
    let compiled =
        tokio::task::spawn_blocking(move || Bundle::compile(doc, version, Capabilities::CURRENT))
            .await
            .ok()?;
    match compiled {
        Ok(bundle) => {
            let bundle = Arc::new(bundle);
            inner.flows.put(bot_id, &stored.source, bundle.clone());
            Some(bundle)
        }
        Err(errors) => {
            tracing::warn!(bot_id = %bot_id, version, errors = errors.len(), "a stored flow version no longer compiles");
            None
        }
    }
}

async fn run_step(
    inner: &Arc<Inner>,
    bot: &Bot,
    contact: &str,
    event: &Event,
    extra: Step,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let row = inner.store.conversation_row(bot.id, contact).await?;
    let stored_name = row.as_ref().and_then(|r| r.contact_name.clone());
    let state = state_of(bot.id, row.map(|r| r.state));
    let name = extra.contact_name.clone().or(stored_name);
    let answering = bot.status == BotStatus::Active && tenant_active(inner, bot).await;

    let (state, effects) = if answering {
        let active = match bot.flow_version {
            Some(v) => bundle(inner, bot.id, v).await,
            None => None,
        };
        let current = match state.active.as_ref().map(|a| a.version) {
            Some(v) if Some(v) != bot.flow_version => bundle(inner, bot.id, v).await,
            _ => None,
        };
        let versions = Loaded { active, current };
        let tz = dash_core::validate::timezone("timezone", &bot.timezone).unwrap_or(chrono_tz::UTC);
        let bot_json = json!({"name": bot.name, "timezone": bot.timezone, "tenant": bot.tenant});
        let contact_json = json!({"phone": contact, "name": name});
        let ctx = Context {
            now,
            timezone: tz,
            bot: &bot_json,
            contact: &contact_json,
        };
        let outcome = dash_core::flow::step(&versions, state, event, &ctx);
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
        flow: state.active.as_ref().map(|a| a.flow.clone()),
        step: state.active.as_ref().map(|a| a.step.clone()),
        flow_version: state.active.as_ref().map(|a| a.version),
        last_message_at: extra.last_message_at,
        processed_inbound: extra.processed_inbound,
        outbound: Vec::new(),
        timers_add: Vec::new(),
        timers_remove: extra.fired_timer.into_iter().collect(),
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
    let new_messages = inner.store.commit_step(&commit).await?;
    if !new_messages.is_empty() {
        inner.dispatch.notify_one();
    }
    if !commit.timers_add.is_empty() {
        inner.timers.notify_one();
    }
    for request in requests {
        spawn_http(inner, bot.id, contact, request);
    }
    Ok(())
}

fn spawn_http(
    inner: &Arc<Inner>,
    bot_id: Uuid,
    contact: &str,
    request: dash_core::flow::engine::HttpRequest,
) {
    let inner = inner.clone();
    let contact = contact.to_owned();
    tokio::spawn(async move {
        let allow_private = inner.config.pipeline.allow_private_http;
        let outcome = super::http::run(&inner.http, &request, allow_private).await;
        inner
            .submit(Work::Http {
                bot_id,
                contact,
                request_id: request.request_id,
                outcome,
            })
            .await;
    });
}

async fn tenant_active(inner: &Inner, bot: &Bot) -> bool {
    match inner.store.tenant(&TenantRef::Id(bot.tenant_id)).await {
        Ok(tenant) => tenant.status == TenantStatus::Active,
        Err(_) => false,
    }
}
