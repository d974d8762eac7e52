//! Who may use the admin socket. The kernel tells us the peer's uid and gid
//! (`SO_PEERCRED`); root, the user dashd runs as, and members of an optional configured
//! group are let in, everybody else gets 403 on every request.

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::net::UnixListener;
use tracing::Instrument;

use crate::error::ApiError;

/// The credentials of the process on the other end of an admin connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
}

/// Credentials as read when the connection was accepted; `None` when the kernel would not
/// say (then every request is refused).
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo(pub Option<Peer>);

impl Connected<IncomingStream<'_, UnixListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        PeerInfo(stream.io().peer_cred().ok().map(|cred| Peer {
            uid: cred.uid(),
            gid: cred.gid(),
        }))
    }
}

/// A Unix group allowed on the admin socket, resolved at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedGroup {
    pub name: String,
    pub gid: u32,
    /// Supplementary members by user name, as listed in the group database.
    pub members: Vec<String>,
}

/// The admin socket's access policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccess {
    /// The effective uid of dashd itself.
    pub daemon_uid: u32,
    pub group: Option<AllowedGroup>,
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "uid {uid} may not use the dashd admin socket: run dashctl as root or as the dashd user{hint}"
)]
pub struct Denied {
    pub uid: u32,
    hint: String,
}

impl AdminAccess {
    /// Resolves the configured group (if any) from the system's group database.
    pub fn resolve(group: Option<&str>) -> anyhow::Result<Self> {
        let daemon_uid = nix::unistd::geteuid().as_raw();
        let group = match group {
            None => None,
            Some(name) => {
                let found = nix::unistd::Group::from_name(name)
                    .map_err(|err| anyhow::anyhow!("admin.group: cannot look up {name:?}: {err}"))?
                    .ok_or_else(|| anyhow::anyhow!("admin.group: no group named {name:?}"))?;
                Some(AllowedGroup {
                    name: found.name,
                    gid: found.gid.as_raw(),
                    members: found.mem,
                })
            }
        };
        Ok(Self { daemon_uid, group })
    }

    /// Decides whether `peer` may use the admin API. `user_name` looks a uid up in the
    /// user database; it is only called when group membership needs a name.
    pub fn check(
        &self,
        peer: Peer,
        user_name: impl FnOnce(u32) -> Option<String>,
    ) -> Result<(), Denied> {
        if peer.uid == 0 || peer.uid == self.daemon_uid {
            return Ok(());
        }
        if let Some(group) = &self.group {
            if peer.gid == group.gid {
                return Ok(());
            }
            if let Some(name) = user_name(peer.uid)
                && group.members.contains(&name)
            {
                return Ok(());
            }
        }
        Err(Denied {
            uid: peer.uid,
            hint: match &self.group {
                Some(group) => format!(", or as a member of group {}", group.name),
                None => String::new(),
            },
        })
    }
}

/// Looks a user name up by uid (for supplementary group membership).
fn system_user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// Middleware: checks the peer on every request.
pub async fn authorize(
    State(access): State<std::sync::Arc<AdminAccess>>,
    ConnectInfo(PeerInfo(peer)): ConnectInfo<PeerInfo>,
    request: Request,
    next: Next,
) -> Response {
    let Some(peer) = peer else {
        return ApiError::Forbidden("the peer's credentials could not be read".into())
            .into_response();
    };
    match access.check(peer, system_user_name) {
        // Everything the request logs carries who made it: the audit trail of admin actions.
        Ok(()) => {
            let span = tracing::info_span!("admin", peer_uid = peer.uid);
            next.run(request).instrument(span).await
        }
        Err(denied) => {
            tracing::warn!(uid = peer.uid, gid = peer.gid, "admin request refused");
            ApiError::Forbidden(denied.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAEMON: u32 = 990;

    fn policy(group: Option<AllowedGroup>) -> AdminAccess {
        AdminAccess {
            daemon_uid: DAEMON,
            group,
        }
    }

    fn no_lookup(_: u32) -> Option<String> {
        None
    }

    #[test]
    fn root_and_the_daemon_user_are_allowed() {
        let access = policy(None);
        assert!(access.check(Peer { uid: 0, gid: 0 }, no_lookup).is_ok());
        assert!(
            access
                .check(
                    Peer {
                        uid: DAEMON,
                        gid: 5
                    },
                    no_lookup
                )
                .is_ok()
        );
    }

    #[test]
    fn another_uid_is_refused() {
        let access = policy(None);
        let denied = access
            .check(
                Peer {
                    uid: 1000,
                    gid: 1000,
                },
                no_lookup,
            )
            .unwrap_err();
        assert_eq!(denied.uid, 1000);
        assert!(denied.to_string().contains("uid 1000"));
    }

    #[test]
    fn group_members_are_allowed_by_gid_or_membership() {
        let access = policy(Some(AllowedGroup {
            name: "dashadm".into(),
            gid: 4000,
            members: vec!["ana".into()],
        }));
        assert!(
            access
                .check(
                    Peer {
                        uid: 1000,
                        gid: 4000
                    },
                    no_lookup
                )
                .is_ok()
        );
        assert!(
            access
                .check(
                    Peer {
                        uid: 1001,
                        gid: 1001
                    },
                    |_| Some("ana".into())
                )
                .is_ok()
        );
        let denied = access
            .check(
                Peer {
                    uid: 1002,
                    gid: 1002,
                },
                |_| Some("bob".into()),
            )
            .unwrap_err();
        assert!(denied.to_string().contains("group dashadm"));
    }
}
