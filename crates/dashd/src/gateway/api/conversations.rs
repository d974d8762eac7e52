//! A bot's conversations through the REST API, and human handoff: an agent searches the
//! conversations (by status, flow, contact, time), reads one with its transcript, takes
//! it over (the bot goes silent for that contact), answers from the API, and resumes the
//! bot. Each step is an event on the tenant's stream.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use dash_core::api::{ConversationDetail, ConversationSummary, MessageRecord, SendMessage};
use serde::Deserialize;

use super::bots::ScopedBot;
use super::{Caller, Page, PageQuery, Principal};
use crate::admin::messages::{contact_of, operator_error, queue_text};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;
use crate::store::conversations::ConversationFilter;

/// `GET .../conversations` query: a page and the filters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    flow: Option<String>,
    #[serde(default)]
    contact: Option<String>,
    #[serde(default)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    until: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn list(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Query(query): Query<ConversationQuery>,
) -> Result<axum::Json<Page<ConversationSummary>>, ApiError> {
    let limit = PageQuery {
        cursor: None,
        limit: query.limit,
    }
    .limit()?;
    if let Some(status) = &query.status
        && !["idle", "active", "handoff", "waiting_http"].contains(&status.as_str())
    {
        return Err(dash_core::ValidationError::new(
            "status",
            "a conversation is idle, active, handoff or waiting_http",
        )
        .into());
    }
    let filter = ConversationFilter {
        status: query.status,
        flow: query.flow,
        contact: query.contact,
        since: query.since,
        until: query.until,
    };
    let mut items = state
        .store
        .conversations_page(bot.id, &filter, query.cursor.as_deref(), limit + 1)
        .await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|c| c.contact.clone()))
        .flatten();
    Ok(axum::Json(Page {
        data: items,
        next_cursor,
    }))
}

pub async fn show(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Path(path): Path<HashMap<String, String>>,
) -> Result<axum::Json<ConversationDetail>, ApiError> {
    let contact = contact_of(&state, bot.id, &path).await?;
    state
        .store
        .conversation(bot.id, &contact)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound(format!("conversation with {contact} not found")))
}

/// Who did it, for the events.
fn actor(caller: &Caller) -> serde_json::Value {
    match &caller.principal {
        Principal::User { user, .. } => {
            serde_json::json!({"user_id": user.id, "email": user.email})
        }
        Principal::Key(key) => serde_json::json!({"key": key.prefix}),
    }
}

/// `POST .../conversations/{contact}/take`: the bot goes silent for the contact.
pub async fn take(
    State(state): State<AppState>,
    caller: Caller,
    ScopedBot(bot): ScopedBot,
    Path(path): Path<HashMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let contact = contact_of(&state, bot.id, &path).await?;
    let taken = state
        .pipeline
        .take_over(bot.id, &contact)
        .await
        .map_err(operator_error)?;
    if !taken {
        return Err(ApiError::Conflict {
            message: format!(
                "bot {} has no active flow: there is nothing to silence",
                bot.path()
            ),
            field: None,
        });
    }
    state
        .store
        .record_event(
            bot.tenant_id,
            "handoff.taken",
            &serde_json::json!({"bot_id": bot.id, "contact": contact, "by": actor(&caller)}),
        )
        .await?;
    tracing::info!(bot = %bot.path(), "conversation taken over by a person");
    Ok(axum::Json(
        serde_json::json!({"contact": contact, "handoff": true}),
    ))
}

/// `POST .../conversations/{contact}/messages` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub text: String,
}

/// An agent's answer to the contact, through the bot's provider chain.
pub async fn reply(
    State(state): State<AppState>,
    ScopedBot(bot): ScopedBot,
    Path(path): Path<HashMap<String, String>>,
    Json(reply): Json<Reply>,
) -> Result<(StatusCode, axum::Json<MessageRecord>), ApiError> {
    let contact = contact_of(&state, bot.id, &path).await?;
    let request = SendMessage {
        to: contact,
        text: reply.text,
        ..SendMessage::default()
    };
    let (record, _) = queue_text(&state, &bot, request, None).await?;
    Ok((StatusCode::CREATED, axum::Json(record)))
}

/// `POST .../conversations/{contact}/resume`: the bot answers again.
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ScopedBot(bot): ScopedBot,
    Path(path): Path<HashMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let contact = contact_of(&state, bot.id, &path).await?;
    let resumed = state
        .pipeline
        .resume(bot.id, &contact)
        .await
        .map_err(operator_error)?;
    if !resumed {
        return Err(ApiError::Conflict {
            message: format!("the conversation with {contact} is not handed off to a person"),
            field: None,
        });
    }
    state
        .store
        .record_event(
            bot.tenant_id,
            "handoff.resumed",
            &serde_json::json!({"bot_id": bot.id, "contact": contact, "by": actor(&caller)}),
        )
        .await?;
    Ok(axum::Json(
        serde_json::json!({"contact": contact, "resumed": true}),
    ))
}
