//! Messages: send one through a bot (`POST .../messages`), the sandbox's inbound side
//! and its live stream, conversations, and the outbox queue.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dash_core::api::{
    Accepted, ConversationDetail, ConversationSummary, MessageBody, MessageRecord, QueueEntry,
    QueueFilter, SandboxEvent, SandboxFeedEvent, SandboxInbound, SendMessage,
};
use dash_core::provider::{ProviderKind, chain_of};
use dash_core::{Bot, BotRef, ValidationError, validate};
use serde::Deserialize;
use uuid::Uuid;

use super::paths::BotPath;
use crate::error::{ApiError, Json, Path, Query};
use crate::pipeline::{IngestError, OperatorError};
use crate::state::AppState;
use crate::store::inbound::NewInbound;
use crate::store::outbox::QueueQuery;

pub async fn send(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Json(req): Json<SendMessage>,
) -> Result<(StatusCode, axum::Json<MessageRecord>), ApiError> {
    let bot = state.store.bot(&bot).await?;
    let (record, _) = queue_text(&state, &bot, req, None).await?;
    Ok((StatusCode::CREATED, axum::Json(record)))
}

/// Queues a text for a contact in the bot's outbox, once per idempotency key when one is
/// given (`true`: an earlier request's message, answered again). The admin socket and
/// the REST API both send through here.
pub(crate) async fn queue_text(
    state: &AppState,
    bot: &Bot,
    req: SendMessage,
    idempotency_key: Option<&str>,
) -> Result<(MessageRecord, bool), ApiError> {
    let req = req.validated()?;
    answering(state, bot).await?;
    let body = req.body();
    // A contact known by several identifiers is reached under its one key.
    let to = match state.store.find_contact(bot.id, &req.to).await? {
        Some(identity) => identity.contact,
        None => req.to.clone(),
    };
    let outbound = crate::store::outbox::Outbound {
        bot_id: bot.id,
        tenant_id: bot.tenant_id,
        contact: &to,
        body: &body,
        now: chrono::Utc::now(),
    };
    let (record, replayed) = match idempotency_key {
        Some(key) => {
            let request =
                serde_json::to_string(&req).map_err(|err| ApiError::Internal(err.into()))?;
            let fingerprint =
                crate::adapter::signature::sha256_hex(format!("{}\n{request}", bot.id).as_bytes());
            state
                .store
                .enqueue_once(&outbound, key, &fingerprint)
                .await?
        }
        None => (
            state
                .store
                .enqueue(bot.id, bot.tenant_id, &to, &body, outbound.now)
                .await?,
            false,
        ),
    };
    if !replayed {
        state.pipeline.outbox_changed();
        tracing::info!(bot = %bot.path(), message = %record.id, "message queued");
    }
    Ok((record, replayed))
}

/// A message from a pretend customer, through the real inbound pipeline.
/// Past the backlog bound, or while dashd stops, the answer is 503 with `Retry-After`.
pub async fn sandbox_inbound(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Json(req): Json<SandboxInbound>,
) -> Result<(StatusCode, axum::Json<Accepted>), Response> {
    let req = req
        .validated()
        .map_err(|err| ApiError::from(err).into_response())?;
    let bot = sandbox_bot(&state, &bot)
        .await
        .map_err(IntoResponse::into_response)?;
    let message = NewInbound {
        bot_id: bot.id,
        tenant_id: bot.tenant_id,
        contact: req.from,
        provider: ProviderKind::Sandbox.as_str().to_owned(),
        provider_message_id: req.message_id,
        body: MessageBody {
            text: req.text,
            reply_id: req.reply_id,
            name: req.name,
            ..MessageBody::default()
        },
        received_at: chrono::Utc::now(),
    };
    let ingested = state
        .pipeline
        .ingest(message)
        .await
        .map_err(ingest_refused)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Accepted {
            message_id: ingested.id,
            duplicate: ingested.duplicate,
        }),
    ))
}

/// Query of the sandbox stream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Only this contact's events.
    #[serde(default)]
    contact: Option<String>,
}

/// What the sandbox sends, live, as newline-delimited JSON ([`SandboxEvent`]).
pub async fn sandbox_stream(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let bot = sandbox_bot(&state, &bot).await?;
    let contact = query
        .contact
        .as_deref()
        .map(|c| validate::phone("contact", c))
        .transpose()?;
    let bot_id = bot.id;
    ndjson(&state, move |id, event| {
        let wanted = id == bot_id && contact.as_deref().is_none_or(|c| event_contact(event) == c);
        wanted.then(|| serde_json::to_vec(event).unwrap_or_default())
    })
}

/// Every sandbox bot's events, each with its bot id (monitoring, load tests).
pub async fn sandbox_feed(State(state): State<AppState>) -> Result<Response, ApiError> {
    ndjson(&state, |bot_id, event| {
        let line = SandboxFeedEvent {
            bot_id,
            event: event.clone(),
        };
        Some(serde_json::to_vec(&line).unwrap_or_default())
    })
}

/// How often an idle stream sends an empty line.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Streams the sandbox events `select` keeps, one JSON object per line, until dashd stops.
fn ndjson(
    state: &AppState,
    select: impl Fn(Uuid, &SandboxEvent) -> Option<Vec<u8>> + Send + Clone + 'static,
) -> Result<Response, ApiError> {
    let receiver = state.pipeline.subscribe();
    let shutdown = state.pipeline.shutdown_token();
    let stream =
        futures_util::stream::unfold((receiver, shutdown), move |(mut receiver, shutdown)| {
            let select = select.clone();
            async move {
                loop {
                    let event = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        event = receiver.recv() => event,
                        // An empty line now and then: a client that went away is
                        // noticed (the write fails) and its stream closed.
                        () = tokio::time::sleep(KEEPALIVE) => {
                            let line = Bytes::from_static(b"\n");
                            return Some((Ok::<_, Infallible>(line), (receiver, shutdown)));
                        }
                    };
                    match event {
                        Ok((id, event)) => {
                            if let Some(mut line) = select(id, &event) {
                                line.push(b'\n');
                                return Some((
                                    Ok::<_, Infallible>(Bytes::from(line)),
                                    (receiver, shutdown),
                                ));
                            }
                        }
                        // A watcher too slow to keep up misses events rather than slowing dashd.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .map_err(|err| ApiError::Internal(err.into()))
}

/// The answer to a message intake did not accept: 503 with `Retry-After` when busy or
/// stopping (the sender retries; nothing was stored).
pub fn ingest_refused(err: IngestError) -> Response {
    let (message, retry_after_s) = match err {
        IngestError::Store(err) => return ApiError::from(err).into_response(),
        IngestError::Busy {
            reason,
            retry_after_s,
        } => (reason, retry_after_s),
        IngestError::Stopping => ("dashd is shutting down".to_owned(), 5),
    };
    let mut response = ApiError::Unavailable(message).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(retry_after_s),
    );
    response
}

fn event_contact(event: &SandboxEvent) -> &str {
    match event {
        SandboxEvent::Reply { contact, .. } | SandboxEvent::Idle { contact, .. } => contact,
    }
}

/// Refuses to queue messages for a paused bot or a suspended tenant (they would wait).
async fn answering(state: &AppState, bot: &Bot) -> Result<(), ApiError> {
    let tenant = state
        .store
        .tenant(&crate::store::TenantRef::Id(bot.tenant_id))
        .await?;
    if tenant.status != dash_core::TenantStatus::Active {
        return Err(ApiError::Conflict {
            message: format!("tenant {} is suspended: its bots send nothing", tenant.slug),
            field: Some("status"),
        });
    }
    if bot.status != dash_core::BotStatus::Active {
        return Err(ApiError::Conflict {
            message: format!(
                "bot {} is paused: resume it with `dashctl bot update {} --status active`",
                bot.path(),
                bot.path()
            ),
            field: Some("status"),
        });
    }
    Ok(())
}

async fn sandbox_bot(state: &AppState, bot: &BotRef) -> Result<Bot, ApiError> {
    let bot = state.store.bot(bot).await?;
    let chain = chain_of(&bot.settings);
    if !chain.contains(&ProviderKind::Sandbox) {
        let names: Vec<&str> = chain.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::Conflict {
            message: format!(
                "bot {} sends through {}, not the sandbox: add it with `dashctl bot update {} --chain sandbox`",
                bot.path(),
                names.join(", "),
                bot.path()
            ),
            field: Some("chain"),
        });
    }
    Ok(bot)
}

pub async fn conversations(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
) -> Result<axum::Json<Vec<ConversationSummary>>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    Ok(axum::Json(state.store.list_conversations(bot.id).await?))
}

pub async fn conversation(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(path): Path<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<ConversationDetail>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let contact = contact_of(&state, bot.id, &path).await?;
    state
        .store
        .conversation(bot.id, &contact)
        .await?
        .map(axum::Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "conversation of bot {} with {contact} not found",
                bot.path()
            ))
        })
}

pub async fn resume(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(path): Path<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let contact = contact_of(&state, bot.id, &path).await?;
    match state.pipeline.resume(bot.id, &contact).await {
        Ok(true) => {
            tracing::info!(bot = %bot.path(), "conversation resumed by an operator");
            Ok(axum::Json(
                serde_json::json!({"contact": contact, "resumed": true}),
            ))
        }
        Ok(false) => Err(ApiError::Conflict {
            message: format!(
                "the conversation of bot {} with {contact} is not handed off to a person",
                bot.path()
            ),
            field: None,
        }),
        Err(err) => Err(operator_error(err)),
    }
}

/// What went wrong with a resume or reset, as it is: a deleted bot is 404, a step that
/// kept failing or a stopping dashd is 503 with the reason.
pub(crate) fn operator_error(err: OperatorError) -> ApiError {
    match err {
        OperatorError::BotGone => ApiError::NotFound(err.to_string()),
        OperatorError::Failed(_) | OperatorError::Stopping => {
            ApiError::Unavailable(err.to_string())
        }
    }
}

pub async fn reset(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Path(path): Path<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let bot = state.store.bot(&bot).await?;
    let contact = contact_of(&state, bot.id, &path).await?;
    let reset = state
        .pipeline
        .reset(bot.id, &contact)
        .await
        .map_err(operator_error)?;
    tracing::info!(bot = %bot.path(), reset, "conversation reset by an operator");
    Ok(axum::Json(
        serde_json::json!({"contact": contact, "reset": reset}),
    ))
}

/// The contact key of a path's `{contact}`: any identifier the contact is known by
/// (phone, BSUID, LID, username) finds it; one not known yet is taken as given.
pub(crate) async fn contact_of(
    state: &AppState,
    bot_id: Uuid,
    path: &std::collections::HashMap<String, String>,
) -> Result<String, ApiError> {
    let contact = path.get("contact").map(String::as_str).unwrap_or_default();
    let id = validate::contact_id("contact", contact)?;
    Ok(match state.store.find_contact(bot_id, &id).await? {
        Some(identity) => identity.contact,
        None => id,
    })
}

pub async fn queue(
    State(state): State<AppState>,
    Query(filter): Query<QueueFilter>,
) -> Result<axum::Json<Vec<MessageRecord>>, ApiError> {
    let bot_id = match &filter.bot {
        Some(bot) => Some(state.store.bot(&BotRef::parse(bot)?).await?.id),
        None => None,
    };
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    let query = QueueQuery {
        bot_id,
        state: filter.state,
        limit,
    };
    Ok(axum::Json(state.store.queue(&query).await?))
}

pub async fn queue_entry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<QueueEntry>, ApiError> {
    let id = message_id(&id)?;
    let mut entry = state.store.queue_entry(id).await?;
    entry.send_attempts = state
        .store
        .attempts(id)
        .await?
        .into_iter()
        .map(|a| dash_core::api::SendAttemptRecord {
            provider: a.provider,
            outcome: a.outcome,
            error_code: a.error_code,
            error: a.error,
            latency_ms: a.latency_ms,
            at: a.at,
        })
        .collect();
    Ok(axum::Json(entry))
}

pub async fn queue_retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<MessageRecord>, ApiError> {
    let record = state
        .store
        .requeue(message_id(&id)?, chrono::Utc::now())
        .await?;
    state.pipeline.outbox_changed();
    tracing::info!(message = %record.id, "message retried by an operator");
    Ok(axum::Json(record))
}

pub async fn queue_cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<MessageRecord>, ApiError> {
    let record = state
        .store
        .cancel(message_id(&id)?, chrono::Utc::now())
        .await?;
    tracing::info!(message = %record.id, "message cancelled by an operator");
    Ok(axum::Json(record))
}

fn message_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ValidationError::new(
            "id",
            format!("{} is not a message id (a UUID)", validate::quoted(id)),
        )
        .into()
    })
}
