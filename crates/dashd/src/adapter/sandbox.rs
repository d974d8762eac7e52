//! The sandbox provider: a local inbox instead of WhatsApp, for trying bots with
//! `dashctl chat` and for tests. It records every message durably, once per idempotency
//! key, and counts the send calls made with each key (a real provider takes no such key:
//! a call repeated after a crash is a second delivery, and tests count them). It streams
//! what it receives to whoever watches the bot's sandbox.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dash_core::api::{MessageBody, SandboxEvent};
use dash_core::provider::ProviderKind;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{
    Content, OutboundMessage, ProbeReport, ProviderEvent, SendError, SendReceipt, WebhookError,
    WebhookRequest, WhatsAppProvider,
};
use crate::store::Store;

/// Sandbox events of every bot, for the stream endpoint (which filters by bot).
pub type SandboxHub = broadcast::Sender<(Uuid, SandboxEvent)>;

/// The sandbox provider.
#[derive(Debug, Clone)]
pub struct Sandbox {
    store: Arc<dyn Store>,
    hub: SandboxHub,
    delay: Duration,
}

impl Sandbox {
    pub fn new(store: Arc<dyn Store>, hub: SandboxHub, delay: Duration) -> Self {
        Self { store, hub, delay }
    }
}

#[async_trait]
impl WhatsAppProvider for Sandbox {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sandbox
    }

    async fn send(&self, request: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let body = sandbox_body(&request.content);
        let to = request
            .to
            .phone
            .clone()
            .or_else(|| request.to.bsuid.clone())
            .or_else(|| request.to.lid.clone())
            .unwrap_or_default();
        let idempotency_key = request.message_id.to_string();
        let now = chrono::Utc::now();
        let provider_message_id = self
            .store
            .sandbox_record(&idempotency_key, request.bot_id, &to, &body, now)
            .await
            .map_err(|err| SendError::retryable(format!("sandbox inbox: {err}")))?;
        // The message has reached the "provider"; the delay stands for the response's
        // latency, so a dashd killed meanwhile has sent it without knowing (as with a
        // real provider) and the call count shows a second send.
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let message_id = request.message_id;
        // Nobody watching is fine: the message is in the inbox either way.
        let _ = self.hub.send((
            request.bot_id,
            SandboxEvent::Reply {
                contact: to,
                message_id,
                body: Box::new(body),
                at: now,
            },
        ));
        Ok(SendReceipt {
            provider_message_id,
        })
    }

    fn parse_webhook(
        &self,
        _request: &WebhookRequest<'_>,
    ) -> Result<Vec<ProviderEvent>, WebhookError> {
        // Sandbox messages arrive through the admin API, never as webhooks.
        Err(WebhookError::Malformed(
            "the sandbox receives messages through the admin API".into(),
        ))
    }

    async fn probe(&self) -> Result<ProbeReport, SendError> {
        Ok(ProbeReport {
            detail: "the sandbox is always up".into(),
        })
    }
}

/// What the sandbox inbox shows for a content: the message body as the flow wrote it,
/// templates and other kinds as a line of text.
fn sandbox_body(content: &Content) -> MessageBody {
    let text = |text: String| MessageBody {
        text,
        ..MessageBody::default()
    };
    match content {
        Content::Text { body, .. } => text(body.clone()),
        Content::Media {
            kind,
            source,
            caption,
            ..
        } => match source {
            super::MediaSource::Link(url) => MessageBody {
                text: caption.clone().unwrap_or_default(),
                media: Some(dash_core::flow::document::Media {
                    url: url.clone(),
                    kind: *kind,
                    caption: caption.clone(),
                }),
                ..MessageBody::default()
            },
            super::MediaSource::Id(id) => text(format!(
                "[media {id}] {}",
                caption.clone().unwrap_or_default()
            )),
        },
        Content::Menu { body, choices, .. } => MessageBody {
            text: body.clone(),
            choices: choices.clone(),
            ..MessageBody::default()
        },
        Content::Template {
            name,
            language,
            parameters,
        } => text(format!(
            "[template {name} ({language})] {}",
            parameters.join(" | ")
        )),
        Content::Reaction { message_id, emoji } => {
            text(format!("[reaction {emoji} to {message_id}]"))
        }
        Content::Location(location) => MessageBody {
            location: Some(location.clone()),
            ..MessageBody::default()
        },
        Content::MarkRead { message_id } => text(format!("[read {message_id}]")),
    }
}
