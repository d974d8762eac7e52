//! The providers whose WhatsApp account is paired by scanning a QR code: the three Node
//! bridges and Evolution instances. One client type over both, so the session supervisor
//! and `dashctl session` treat them alike.

use chrono::{DateTime, Utc};
use dash_core::provider::ProviderKind;
use uuid::Uuid;

use super::bridge::{Bridge, SessionQr, SessionStatus};
use super::evolution::Evolution;
use super::{SendError, SessionState};
use crate::store::sessions::SessionReport;

/// Whether a call failed because the bridge (`session_not_found`) or Evolution (404)
/// does not know the session.
pub fn is_unknown_session(err: &SendError) -> bool {
    matches!(err.code.as_deref(), Some("session_not_found" | "404"))
}

/// A paired session's client.
#[derive(Debug, Clone)]
pub enum SessionClient {
    Bridge(Bridge),
    Evolution(Evolution),
}

impl SessionClient {
    /// The session's name on its bridge, or the Evolution instance's name.
    pub fn session(&self) -> &str {
        match self {
            SessionClient::Bridge(bridge) => bridge.session(),
            SessionClient::Evolution(evolution) => evolution.instance(),
        }
    }

    /// Starts (or resumes) the session; with a phone number (digits), pairing goes by a
    /// code typed on the phone instead of a QR where the library can.
    pub async fn start(&self, pairing_phone: Option<&str>) -> Result<SessionStatus, SendError> {
        match self {
            SessionClient::Bridge(bridge) => bridge.start_session(pairing_phone).await,
            SessionClient::Evolution(evolution) => evolution.start_session(pairing_phone).await,
        }
    }

    /// Drops the connection and connects again, credentials kept (no new pairing).
    pub async fn restart(&self) -> Result<SessionStatus, SendError> {
        match self {
            SessionClient::Bridge(bridge) => bridge.restart_session(None).await,
            SessionClient::Evolution(evolution) => evolution.restart_session().await,
        }
    }

    /// The session's state now; an unknown session fails with code `session_not_found`
    /// (bridges) or `404` (Evolution).
    pub async fn status(&self) -> Result<SessionStatus, SendError> {
        match self {
            SessionClient::Bridge(bridge) => bridge.status().await,
            SessionClient::Evolution(evolution) => evolution.session_status().await,
        }
    }

    /// The QR code waiting to be scanned, if any.
    pub async fn qr(&self) -> Result<Option<SessionQr>, SendError> {
        match self {
            SessionClient::Bridge(bridge) => bridge.qr().await,
            SessionClient::Evolution(evolution) => evolution.qr().await,
        }
    }

    /// Unpairs the phone; the session needs a new pairing to send again.
    pub async fn logout(&self) -> Result<(), SendError> {
        match self {
            SessionClient::Bridge(bridge) => bridge.logout().await,
            SessionClient::Evolution(evolution) => evolution.logout().await,
        }
    }

    /// What to record of a status: with the QR (and its expiry) fetched while one waits
    /// to be scanned, and the pairing code from the status or the QR answer.
    pub async fn report(
        &self,
        bot_id: Uuid,
        provider: ProviderKind,
        status: SessionStatus,
        at: DateTime<Utc>,
    ) -> SessionReport {
        let qr = if status.state == SessionState::Qr {
            self.qr().await.ok().flatten()
        } else {
            None
        };
        SessionReport {
            bot_id,
            provider: provider.as_str().to_owned(),
            session: self.session().to_owned(),
            state: crate::pipeline::session_state_name(status.state).to_owned(),
            reason: status.reason,
            phone: status.phone,
            pairing_code: status
                .pairing_code
                .or_else(|| qr.as_ref().and_then(|q| q.pairing_code.clone())),
            qr_expires_at: qr.as_ref().and_then(|q| q.expires_at),
            qr: qr.map(|q| q.qr),
            at,
        }
    }
}
