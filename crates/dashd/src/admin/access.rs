//! Who may use the admin socket. The kernel tells us the peer's uid, gid and pid
//! (`SO_PEERCRED`); root, the user dashd runs as, and members of an optional configured
//! group are let in, everybody else gets 403 on every request. Group membership is
//! decided for each connection from the peer's own supplementary groups (read when the
//! connection is accepted), or from the group database as it is at that moment: a user
//! removed from the group loses access without a restart of dashd.

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use crate::error::ApiError;

/// The credentials of the process on the other end of an admin connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// The peer process's supplementary groups when the connection was accepted; `None`
    /// when they could not be read (then the group database decides).
    pub groups: Option<Vec<u32>>,
}

impl Peer {
    /// A peer known by uid and gid only.
    pub fn new(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            groups: None,
        }
    }
}

/// Credentials as read when the connection was accepted; `None` when the kernel would not
/// say (then every request is refused).
#[derive(Debug, Clone)]
pub struct PeerInfo(pub Option<Peer>);

impl PeerInfo {
    /// Reads the credentials of the process connected through `stream`.
    pub fn of(stream: &UnixStream) -> Self {
        PeerInfo(stream.peer_cred().ok().map(|cred| {
            Peer {
                uid: cred.uid(),
                gid: cred.gid(),
                groups: cred
                    .pid()
                    .and_then(|pid| supplementary_groups(pid, cred.uid())),
            }
        }))
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        PeerInfo::of(stream.io())
    }
}

/// The supplementary groups of process `pid`, from the `Groups:` line of
/// `/proc/<pid>/status` (Linux), provided the process still runs as `uid` (its effective
/// uid, the second field of `Uid:`): a pid reused by another process since the
/// connection was made is not believed, and the group database decides instead.
fn supplementary_groups(pid: i32, uid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let effective: u32 = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    if effective != uid {
        return None;
    }
    parse_groups_line(&status)
}

fn parse_groups_line(status: &str) -> Option<Vec<u32>> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))?;
    line.split_whitespace()
        .map(|gid| gid.parse::<u32>().ok())
        .collect()
}

/// A Unix group allowed on the admin socket. Its members are looked up per connection,
/// never cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedGroup {
    pub name: String,
    pub gid: u32,
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
    /// Resolves the configured group (if any) from the system's group database: it must
    /// exist at start-up. Who belongs to it is decided per connection.
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
                })
            }
        };
        Ok(Self { daemon_uid, group })
    }

    /// Decides whether `peer` may use the admin API. The peer's own groups decide when
    /// known; otherwise `listed_member(uid, group)` asks the group database, as it is
    /// now, whether the user is a listed member.
    pub fn check(
        &self,
        peer: &Peer,
        listed_member: impl FnOnce(u32, &AllowedGroup) -> bool,
    ) -> Result<(), Denied> {
        if peer.uid == 0 || peer.uid == self.daemon_uid {
            return Ok(());
        }
        if let Some(group) = &self.group {
            let member = peer.gid == group.gid
                || match &peer.groups {
                    Some(groups) => groups.contains(&group.gid),
                    None => listed_member(peer.uid, group),
                };
            if member {
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

/// Whether the user `uid` is listed as a member of `group` in the group database, read
/// now.
fn system_listed_member(uid: u32, group: &AllowedGroup) -> bool {
    let Some(user) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
    else {
        return false;
    };
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(group.gid))
        .ok()
        .flatten()
        .is_some_and(|found| found.mem.contains(&user.name))
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
    match access.check(&peer, system_listed_member) {
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
    use std::sync::Mutex;

    use super::*;

    const DAEMON: u32 = 990;

    fn policy(group: Option<AllowedGroup>) -> AdminAccess {
        AdminAccess {
            daemon_uid: DAEMON,
            group,
        }
    }

    fn dashadm() -> Option<AllowedGroup> {
        Some(AllowedGroup {
            name: "dashadm".into(),
            gid: 4000,
        })
    }

    fn no_lookup(_: u32, _: &AllowedGroup) -> bool {
        false
    }

    #[test]
    fn root_and_the_daemon_user_are_allowed() {
        let access = policy(None);
        assert!(access.check(&Peer::new(0, 0), no_lookup).is_ok());
        assert!(access.check(&Peer::new(DAEMON, 5), no_lookup).is_ok());
    }

    #[test]
    fn another_uid_is_refused() {
        let access = policy(None);
        let denied = access.check(&Peer::new(1000, 1000), no_lookup).unwrap_err();
        assert_eq!(denied.uid, 1000);
        assert!(denied.to_string().contains("uid 1000"));
    }

    #[test]
    fn group_members_are_allowed_by_gid_groups_or_listing() {
        let access = policy(dashadm());
        assert!(access.check(&Peer::new(1000, 4000), no_lookup).is_ok());
        let with_groups = |groups: Vec<u32>| Peer {
            uid: 1001,
            gid: 1001,
            groups: Some(groups),
        };
        assert!(
            access
                .check(&with_groups(vec![27, 4000]), no_lookup)
                .is_ok()
        );
        // The kernel's list is the truth when known: the database is not asked.
        assert!(
            access
                .check(&with_groups(vec![27]), |_, _| panic!("asked the database"))
                .is_err()
        );
        assert!(access.check(&Peer::new(1001, 1001), |_, _| true).is_ok());
        let denied = access.check(&Peer::new(1002, 1002), no_lookup).unwrap_err();
        assert!(denied.to_string().contains("group dashadm"));
    }

    #[test]
    fn membership_is_decided_per_connection_not_at_start() {
        // The group database as the test changes it after the policy was resolved.
        let members: Mutex<Vec<u32>> = Mutex::new(vec![1001]);
        let lookup = |uid: u32, group: &AllowedGroup| {
            assert_eq!(group.gid, 4000);
            members.lock().unwrap().contains(&uid)
        };
        let access = policy(dashadm());
        let peer = Peer::new(1001, 1001);
        assert!(access.check(&peer, lookup).is_ok());
        members.lock().unwrap().clear();
        assert!(access.check(&peer, lookup).is_err());
        members.lock().unwrap().push(1001);
        assert!(access.check(&peer, lookup).is_ok());
    }

    #[test]
    fn the_groups_line_is_parsed() {
        let status = "Name:\tdashctl\nUid:\t1001\t1001\t1001\t1001\nGroups:\t27 4000 \nNgid:\t0\n";
        assert_eq!(parse_groups_line(status), Some(vec![27, 4000]));
        assert_eq!(parse_groups_line("Groups:\n"), Some(vec![]));
        assert_eq!(parse_groups_line("Groups:\tx\n"), None);
        assert_eq!(parse_groups_line("Uid:\t1\n"), None);
        let me = nix::unistd::geteuid().as_raw();
        let own = supplementary_groups(std::process::id() as i32, me).unwrap();
        // Another uid than the process runs as: not believed.
        assert_eq!(
            supplementary_groups(std::process::id() as i32, me.wrapping_add(1)),
            None
        );
        let expected: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|gid| gid.as_raw())
            .collect();
        assert_eq!(own, expected);
    }
}
