//! The provider abstraction every WhatsApp provider implements, and the registry the
//! dispatcher sends through. The trait covers what the eight providers of the design
//! need: sending text, media, interactive messages and templates (with an idempotency
//! key where the provider supports one), parsing their signed webhooks into normalised
//! events, health, and session control for the providers that pair a phone (bridges).
//! This release implements `sandbox`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use dash_core::api::MessageBody;
use dash_core::provider::ProviderKind;
use uuid::Uuid;

/// What to send to one contact.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    pub bot_id: Uuid,
    /// E.164 number (or the provider's contact id).
    pub to: String,
    pub content: Content,
    /// Stable across retries of the same outbox entry: a provider that supports
    /// idempotency never delivers it twice.
    pub idempotency_key: String,
}

/// The kinds of message WhatsApp providers send.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Text, optionally with media and menu choices (shown as buttons or a list where the
    /// provider can, numbered text otherwise).
    Message(MessageBody),
    /// A pre-approved template (Cloud API, Twilio).
    Template {
        name: String,
        language: String,
        parameters: Vec<String>,
    },
}

/// A provider accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    pub provider_message_id: String,
}

/// Why a send failed, and whether trying again (or the next provider) can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Network trouble, rate limiting, provider down: retry or fall back.
    #[error("{0}")]
    Retryable(String),
    /// The message itself is refused (bad number, blocked, too long): never retried.
    #[error("{0}")]
    Permanent(String),
}

/// What a provider's webhook reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    Inbound {
        bot_hint: Option<String>,
        contact: String,
        provider_message_id: String,
        body: MessageBody,
        at: DateTime<Utc>,
    },
    Status {
        provider_message_id: String,
        status: dash_core::api::MessageState,
        at: DateTime<Utc>,
    },
}

/// A webhook that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong signature: answered 401.
    #[error("bad signature: {0}")]
    Signature(String),
    /// Not the provider's format: answered 400.
    #[error("malformed webhook: {0}")]
    Malformed(String),
}

/// A provider's own view of its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    Degraded(String),
    Down(String),
}

/// Pairing and session control, for providers that hold a WhatsApp Web session.
#[async_trait]
pub trait Sessions: Send + Sync {
    async fn start(&self, session: &str) -> Result<(), SendError>;
    /// The current QR code to scan, if the session waits for pairing.
    async fn qr(&self, session: &str) -> Result<Option<String>, SendError>;
    async fn status(&self, session: &str) -> Result<String, SendError>;
    async fn logout(&self, session: &str) -> Result<(), SendError>;
}

/// One WhatsApp provider.
#[async_trait]
pub trait WhatsAppProvider: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> ProviderKind;
    /// Sends one message.
    async fn send(&self, request: &SendRequest) -> Result<SendReceipt, SendError>;
    /// Verifies and normalises a webhook delivery (raw body, as signed).
    fn parse_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<ProviderEvent>, WebhookError>;
    async fn health(&self) -> Health;
    /// Session control, for providers that pair a phone.
    fn sessions(&self) -> Option<&dyn Sessions> {
        None
    }
}

/// The providers this dashd can send through, by kind.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    providers: HashMap<ProviderKind, Arc<dyn WhatsAppProvider>>,
}

impl Registry {
    pub fn register(&mut self, provider: Arc<dyn WhatsAppProvider>) {
        self.providers.insert(provider.kind(), provider);
    }

    pub fn get(&self, kind: ProviderKind) -> Option<&Arc<dyn WhatsAppProvider>> {
        self.providers.get(&kind)
    }
}
