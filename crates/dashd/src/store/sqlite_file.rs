//! The SQLite database file itself: the single-instance lock and the identity check.
//!
//! The lock is an exclusive `flock` on the database file, so a cleaner deleting stray
//! files cannot take it away, and a second `dashd` on the same file is refused. SQLite
//! locks with POSIX `fcntl` byte-range locks, which are independent of `flock` on local
//! file systems, so the two do not interfere (on NFS, where Linux emulates `flock` with
//! `fcntl`, they would; SQLite does not support NFS anyway). One rule follows from POSIX
//! locks: closing any descriptor of the file drops every `fcntl` lock this process holds
//! on it, so the descriptor opened here stays open for as long as the store's
//! connections do.
//!
//! The identity check compares the path's device and inode with those of the file
//! opened at start-up. A database replaced or deleted under the daemon is a fatal fault:
//! writes would land in an unlinked inode and vanish at the next start.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

use super::{StoreError, StoreResult};

/// How often the file's identity is checked when nothing writes.
pub(crate) const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The open, locked database file.
#[derive(Debug)]
pub(crate) struct DatabaseFile {
    path: PathBuf,
    /// Held until the store closes; see the module comment before releasing it earlier.
    lock: std::sync::Mutex<Option<nix::fcntl::Flock<std::fs::File>>>,
    identity: (u64, u64),
    /// Set once, when the file is found replaced or deleted.
    lost: OnceLock<String>,
    fatal: CancellationToken,
}

impl DatabaseFile {
    /// Opens (creating, owner-only) and locks the file at `path`. An empty file is an
    /// empty SQLite database, so creating it before SQLite does is harmless. The lock
    /// needs no write access, so an existing file is opened read-only.
    pub(crate) fn lock(path: &Path) -> StoreResult<Self> {
        let cannot = |what: &str, err: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("cannot {what} {}: {err}", path.display()))
        };
        let file = match std::fs::File::open(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path),
            opened => opened,
        }
        .map_err(|err| cannot("open", &err))?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    StoreError::Unavailable(format!(
                        "another dashd is already running with database {} (see `dashctl status`): stop it first, or give this one another data_dir or database.url",
                        path.display()
                    ))
                } else {
                    cannot("lock", &errno)
                }
            })?;
        let meta = file.metadata().map_err(|err| cannot("inspect", &err))?;
        Ok(Self {
            path: path.to_owned(),
            lock: std::sync::Mutex::new(Some(file)),
            identity: (meta.dev(), meta.ino()),
            lost: OnceLock::new(),
            fatal: CancellationToken::new(),
        })
    }

    /// Fails with the reason once the file at the path is no longer the one opened.
    /// Costs one `stat`; never opens the file (see the module comment).
    pub(crate) fn check(&self) -> StoreResult<()> {
        if let Some(reason) = self.lost.get() {
            return Err(StoreError::Unavailable(reason.clone()));
        }
        let problem = match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => return Ok(()),
            Ok(_) => "was replaced by another file",
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => "was deleted",
            // Anything else (a permission change on a parent, say) does not prove the
            // file changed; the next check tries again.
            Err(_) => return Ok(()),
        };
        let reason = format!(
            "the database file {} {problem} while dashd was running: writes are refused; restore the file and restart dashd",
            self.path.display()
        );
        if self.lost.set(reason.clone()).is_ok() {
            tracing::error!(path = %self.path.display(), "{reason}");
            self.fatal.cancel();
        }
        Err(StoreError::Unavailable(reason))
    }

    /// Releases the lock, so another store (a restarted daemon) may open the file. Only
    /// once every connection is closed: closing this descriptor earlier would drop
    /// SQLite's own locks (see the module comment).
    pub(crate) fn release(&self) {
        let lock = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(lock);
    }

    /// Cancelled when the file is found replaced or deleted.
    pub(crate) fn fatal(&self) -> CancellationToken {
        self.fatal.clone()
    }

    /// Checks the file every [`CHECK_EVERY`] until it is lost or the store is dropped,
    /// so that a daemon with nothing to write still notices.
    pub(crate) fn watch(file: &std::sync::Arc<Self>) {
        let file = std::sync::Arc::downgrade(file);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CHECK_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(file) = file.upgrade() else { return };
                if file.check().is_err() {
                    return;
                }
            }
        });
    }
}

/// The file a SQLite connection opens, or `None` for an in-memory database.
pub(crate) fn on_disk(options: &sqlx::sqlite::SqliteConnectOptions) -> Option<&Path> {
    use sqlx::ConnectOptions;
    let in_memory = options
        .to_url_lossy()
        .query_pairs()
        .any(|(key, value)| key == "mode" && value == "memory");
    let name = options.get_filename();
    let text = name.to_string_lossy();
    (!in_memory && text != ":memory:" && !text.starts_with("file:")).then_some(name)
}
