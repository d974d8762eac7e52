//! The sandbox provider: a local inbox instead of WhatsApp, for trying bots with
//! `dashctl chat` and for tests. It records every message durably, once per idempotency
//! key, and counts the send calls made with each key (a real provider takes no such key:
//! a call repeated after a crash is a second delivery, and tests count them). It streams
//! what it receives to whoever watches the bot's sandbox.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::HeaderMap;
use dash_core::api::{MessageBody, SandboxEvent};
use dash_core::provider::ProviderKind;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::provider::{
    Content, Health, ProviderEvent, SendError, SendReceipt, SendRequest, WebhookError,
    WhatsAppProvider,
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

    async fn send(&self, request: &SendRequest) -> Result<SendReceipt, SendError> {
        let body = match &request.content {
            Content::Message(body) => body.clone(),
            Content::Template {
                name,
                language,
                parameters,
            } => MessageBody {
                text: format!("[template {name} ({language})] {}", parameters.join(" | ")),
                ..MessageBody::default()
            },
        };
        let now = chrono::Utc::now();
        let provider_message_id = self
            .store
            .sandbox_record(
                &request.idempotency_key,
                request.bot_id,
                &request.to,
                &body,
                now,
            )
            .await
            .map_err(|err| SendError::Retryable(format!("sandbox inbox: {err}")))?;
        // The message has reached the "provider"; the delay stands for the response's
        // latency, so a dashd killed meanwhile has sent it without knowing (as with a
        // real provider) and the call count shows a second send.
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let message_id = Uuid::parse_str(&request.idempotency_key).unwrap_or_default();
        // Nobody watching is fine: the message is in the inbox either way.
        let _ = self.hub.send((
            request.bot_id,
            SandboxEvent::Reply {
                contact: request.to.clone(),
                message_id,
                body,
                at: now,
            },
        ));
        Ok(SendReceipt {
            provider_message_id,
        })
    }

    fn parse_webhook(
        &self,
        _headers: &HeaderMap,
        _body: &[u8],
    ) -> Result<Vec<ProviderEvent>, WebhookError> {
        // Sandbox messages arrive through the admin API, never as webhooks.
        Err(WebhookError::Malformed(
            "the sandbox receives messages through the admin API".into(),
        ))
    }

    async fn health(&self) -> Health {
        Health::Up
    }
}
