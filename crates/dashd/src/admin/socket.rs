//! Binding the admin socket safely: a live daemon already listening makes us refuse to
//! start; a stale socket file left by a crash is replaced; anything else at that path is
//! left alone. The socket is made `0600` (`0660` with a configured group).

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use tokio::net::UnixListener;

/// Binds the admin socket at `path`.
pub fn bind(path: &Path, group_gid: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another dashd is already running on {} (see `dashctl status`): stop it first, or give this one another data_dir or admin.socket",
                    path.display()
                ),
                Err(err) if err.kind() == ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale admin socket");
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot remove stale socket {}", path.display())
                    })?;
                }
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("cannot tell whether {} is in use", path.display())
                    });
                }
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it (set admin.socket to another path)",
            path.display()
        ),
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot inspect {}", path.display()));
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on admin socket {}", path.display()))?;
    // Until this chmod the socket has the umask's mode, which never grants write (and
    // thus connect) to others with the usual 022/027 umasks; the uid check applies anyway.
    let mode = match group_gid {
        Some(gid) => {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
                .with_context(|| format!("cannot give {} to gid {gid}", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_socket_is_refused_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let live = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = bind(&path, None).unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
        drop(live); // the file stays behind, as after a crash
        assert!(path.exists());
        bind(&path, None).unwrap();
    }

    #[tokio::test]
    async fn a_regular_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, "precious").unwrap();
        let err = bind(&path, None).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }
}
