//! The providers whose WhatsApp account is paired by scanning a QR code: the three Node
//! bridges and Evolution instances. One client type over both, so the session supervisor
//! and `dashctl session` treat them alike.

use super::SendError;
use super::bridge::{Bridge, SessionQr, SessionStatus};
use super::evolution::Evolution;

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
}
