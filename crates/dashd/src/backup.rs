//! `dashd backup` and `dashd restore`: one archive with the database and the rest of the
//! data directory, except the master key.
//!
//! The archive is a gzip-compressed tar file:
//!
//! - `dashoffice-backup.json`: the manifest ([`Manifest`]);
//! - `dashd.db`: an online, consistent copy of the SQLite database, taken through SQLite's
//!   backup API in one step (one read transaction: in WAL mode the daemon keeps writing
//!   meanwhile, and the copy is the database as of one commit);
//! - `data/...`: the other files of the data directory (the JWT signing key, ...).
//!
//! The master key is left out on purpose: it decrypts every provider secret in the
//! database, so it is backed up separately, and a stolen backup alone opens nothing. On
//! PostgreSQL the database is the server's to dump: the archive holds the data directory's
//! files and the command prints the `pg_dump` command to run.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use dash_core::config::{Backend, Config};
use serde::{Deserialize, Serialize};

/// The manifest's name in the archive.
const MANIFEST: &str = "dashoffice-backup.json";
/// The database's name in the archive.
const DATABASE: &str = "dashd.db";
/// The folder holding the data directory's other files in the archive.
const DATA: &str = "data";
/// The archive format this dashd writes and reads.
const FORMAT: u32 = 1;

/// What an archive holds, written first in it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub dashd_version: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The database's schema version (SQLite), or `None` when the database is not in the
    /// archive (PostgreSQL).
    pub schema_version: Option<i64>,
    /// The data directory's files, relative to it, under `data/` in the archive.
    pub files: Vec<String>,
}

/// What [`backup`] wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub bytes: u64,
    /// For PostgreSQL: the command that dumps the database.
    pub pg_dump: Option<String>,
}

/// Writes the archive to `out` (through a temporary file beside it, renamed at the end,
/// mode 0600: it holds every tenant's data).
pub fn backup(config: &Config, out: &Path) -> anyhow::Result<BackupReport> {
    let backend = config.backend()?;
    let database = match backend {
        Backend::Sqlite => Some(sqlite_path(config)?),
        Backend::Postgres => None,
    };
    if let Some(db) = &database
        && !db.is_file()
    {
        bail!("no database at {}: nothing to back up", db.display());
    }
    // Inside the data directory, the archive would be data: archived by the next backup,
    // restored as a file of the data directory.
    if let (Some(target), Ok(data)) = (canonical(out), std::fs::canonicalize(&config.data_dir))
        && target.starts_with(&data)
    {
        bail!(
            "{} is inside the data directory {}: write the backup elsewhere",
            out.display(),
            config.data_dir.display()
        );
    }
    let partial = with_suffix(out, ".partial");
    // A stale partial file (or a link planted in its place) goes; the new one is created
    // afresh, never followed or reused with another mode.
    match std::fs::remove_file(&partial) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("cannot remove {}", partial.display()));
        }
        _ => {}
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let written = (|| {
        let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::default(),
        ));
        let files = data_files(config, database.as_deref())?;
        let mut schema_version = None;
        // The copy goes to a private temporary directory first: the backup API writes a
        // database file, and tar needs its size before its bytes.
        let scratch = tempfile::Builder::new()
            .prefix(".dashd-backup-")
            .tempdir_in(parent_of(out))
            .context("cannot create a temporary directory beside the output file")?;
        if let Some(db) = &database {
            let copy = scratch.path().join(DATABASE);
            schema_version = Some(copy_database(db, &copy)?);
            archive
                .append_path_with_name(&copy, DATABASE)
                .context("cannot add the database to the archive")?;
        }
        let manifest = Manifest {
            format: FORMAT,
            dashd_version: dash_core::VERSION.to_owned(),
            created_at: chrono::Utc::now(),
            backend: backend.as_str().to_owned(),
            schema_version,
            files: files.iter().map(|f| f.display().to_string()).collect(),
        };
        let json = serde_json::to_vec_pretty(&manifest)?;
        append_bytes(&mut archive, MANIFEST, &json, 0o600)?;
        for relative in &files {
            archive
                .append_path_with_name(
                    config.data_dir.join(relative),
                    Path::new(DATA).join(relative),
                )
                .with_context(|| format!("cannot add {} to the archive", relative.display()))?;
        }
        let file = archive.into_inner()?.finish()?;
        file.sync_all()?;
        Ok::<_, anyhow::Error>(manifest)
    })();
    let manifest = match written {
        Ok(manifest) => manifest,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            return Err(err);
        }
    };
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
    let bytes = std::fs::metadata(out)?.len();
    let pg_dump = (backend == Backend::Postgres).then(|| {
        format!(
            "pg_dump --format=custom --file={}.pgdump '{}'",
            out.display(),
            without_password(&config.database_url())
        )
    });
    Ok(BackupReport {
        manifest,
        bytes,
        pg_dump,
    })
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct RestoreReport {
    pub manifest: Manifest,
    /// What was there before and was replaced, kept beside under a new name.
    pub moved_aside: Vec<PathBuf>,
    /// Whether a master key is where the restored daemon will look for it.
    pub master_key_present: bool,
}

/// Restores an archive into the configured data directory. Refuses while a dashd runs on
/// it, and refuses to replace anything (the database, or a file the archive holds) unless
/// `replace` is set; then what was there is kept beside it, renamed
/// `NAME.before-restore-TIME`. Everything is checked and staged before the first rename,
/// so a failure leaves the data as it was, or says where the old files went. Restored
/// files get the data directory's owner, so a restore run as root leaves files the
/// daemon's user can open.
pub fn restore(config: &Config, archive: &Path, replace: bool) -> anyhow::Result<RestoreReport> {
    let backend = config.backend()?;
    crate::create_private_dir(&config.data_dir)?;
    let owner = std::fs::metadata(&config.data_dir)?;
    let (uid, gid) = (owner.uid(), owner.gid());
    let database = match backend {
        Backend::Sqlite => Some(sqlite_path(config)?),
        Backend::Postgres => None,
    };

    // A running daemon holds the database file's lock (SQLite) or dashd.lock (PostgreSQL).
    let lock_path = match &database {
        Some(db) => db.clone(),
        None => config.data_dir.join("dashd.lock"),
    };
    let _lock = lock_if_present(&lock_path)?;

    let staging = tempfile::Builder::new()
        .prefix(".dashd-restore-")
        .tempdir_in(&config.data_dir)
        .context("cannot create a temporary directory in the data directory")?;
    let manifest = unpack(archive, staging.path())?;
    if manifest.backend != backend.as_str() {
        bail!(
            "the archive holds a {} backup and this configuration uses {}",
            manifest.backend,
            backend.as_str()
        );
    }
    let files = manifest
        .files
        .iter()
        .map(|f| safe_relative(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if database.is_some() {
        check_database(&staging.path().join(DATABASE), manifest.schema_version)?;
    }

    // What would be replaced: all of it is known before anything moves.
    let mut existing: Vec<PathBuf> = Vec::new();
    if let Some(db) = &database
        && std::fs::metadata(db).is_ok_and(|m| m.len() > 0)
    {
        existing.push(db.clone());
    }
    existing.extend(
        files
            .iter()
            .map(|f| config.data_dir.join(f))
            .filter(|p| p.exists()),
    );
    if !existing.is_empty() && !replace {
        bail!(
            "{} already exist(s): pass --force to replace (what is there is kept beside, renamed)",
            existing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // Staged beside their targets, so each final step is a rename within one directory.
    let incoming = match &database {
        Some(db) => {
            if let Some(dir) = db.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let incoming = with_suffix(db, ".restoring");
            move_file(&staging.path().join(DATABASE), &incoming)?;
            own_privately(&incoming, uid, gid)?;
            Some(incoming)
        }
        None => None,
    };
    for relative in &files {
        own_privately(&staging.path().join(DATA).join(relative), uid, gid)?;
    }

    let stamp = format!(
        ".before-restore-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let mut moved_aside = Vec::new();
    let mut set_aside = |path: &Path| -> anyhow::Result<()> {
        if std::fs::symlink_metadata(path).is_ok() {
            let aside = with_suffix(path, &stamp);
            std::fs::rename(path, &aside)
                .with_context(|| format!("cannot move {} aside", path.display()))?;
            moved_aside.push(aside);
        }
        Ok(())
    };
    let done = (|| -> anyhow::Result<()> {
        if let (Some(db), Some(incoming)) = (&database, &incoming) {
            // The old log files go too: SQLite would replay a stale WAL onto the new file.
            for suffix in ["", "-wal", "-shm"] {
                set_aside(&with_suffix(db, suffix))?;
            }
            std::fs::rename(incoming, db).with_context(|| {
                format!("cannot move the restored database to {}", db.display())
            })?;
        }
        for relative in &files {
            let to = config.data_dir.join(relative);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir)?;
            }
            set_aside(&to)?;
            std::fs::rename(staging.path().join(DATA).join(relative), &to)
                .with_context(|| format!("cannot restore {}", to.display()))?;
        }
        Ok(())
    })();
    if let Err(err) = done {
        if let Some(incoming) = &incoming {
            let _ = std::fs::remove_file(incoming);
        }
        return Err(err.context(format!(
            "the restore stopped half-way; what it replaced is kept with the suffix {stamp}: {}",
            if moved_aside.is_empty() {
                "nothing yet".to_owned()
            } else {
                moved_aside
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    let master_key_present = master_key_path(config).is_file();
    Ok(RestoreReport {
        manifest,
        moved_aside,
        master_key_present,
    })
}

/// Where the daemon reads its master key.
pub fn master_key_path(config: &Config) -> PathBuf {
    match &config.secrets.master_key_file {
        Some(path) => path.clone(),
        None => config.data_dir.join("master.key"),
    }
}

/// The SQLite database's path from the configuration.
pub fn sqlite_path(config: &Config) -> anyhow::Result<PathBuf> {
    crate::store::sqlite_path(config).map_err(|err| anyhow::anyhow!("database.url: {err}"))
}

/// Copies the live database to `to` through SQLite's backup API, in one step, then checks
/// the copy. Returns its schema version.
fn copy_database(from: &Path, to: &Path) -> anyhow::Result<i64> {
    use rusqlite::OpenFlags;
    // Read-only: a backup run as root must not create root-owned WAL files the daemon's
    // user could not open afterwards.
    let source = rusqlite::Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", from.display()))?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    let mut copy = rusqlite::Connection::open(to)?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        // All pages in one step: one read transaction, so the copy is one commit's state
        // even while the daemon writes (a step-by-step copy restarts at each write).
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => continue,
                _ => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
    // A self-contained file: no WAL beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    let version = check_connection(&copy)?;
    copy.close().map_err(|(_, err)| err)?;
    Ok(version)
}

/// Checks a restored database file: readable, intact, and not newer than this binary.
fn check_database(path: &Path, expected: Option<i64>) -> anyhow::Result<()> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("the archive's database cannot be opened")?;
    let version = check_connection(&conn)?;
    if expected.is_some_and(|e| e != version) {
        bail!(
            "the archive's database is at schema version {version}, its manifest says otherwise: the archive is damaged"
        );
    }
    let known = crate::store::latest_migration();
    if version > known {
        bail!(
            "the archive's database is at schema version {version}, newer than this dashd understands ({known}): restore it with a newer dashd"
        );
    }
    Ok(())
}

/// `PRAGMA integrity_check`, then the schema version.
fn check_connection(conn: &rusqlite::Connection) -> anyhow::Result<i64> {
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
    if integrity != "ok" {
        bail!("the database copy fails SQLite's integrity check: {integrity}");
    }
    let version: Option<i64> = conn
        .query_row("SELECT max(version) FROM _sqlx_migrations", [], |row| {
            row.get(0)
        })
        .context("the database has no migration history: not a dashd database")?;
    Ok(version.unwrap_or(0))
}

/// The data directory's regular files to archive, relative to it: everything but the
/// database and its WAL files, the master key, sockets, the lock file, and what restores
/// set aside (`*.before-restore-*`).
fn data_files(config: &Config, database: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let mut skip: Vec<PathBuf> = vec![
        config.data_dir.join("master.key"),
        config.data_dir.join("dashd.lock"),
    ];
    if let Some(db) = database {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            skip.push(with_suffix(db, suffix));
        }
    }
    skip.push(master_key_path(config));
    let mut found = Vec::new();
    if !config.data_dir.is_dir() {
        return Ok(found);
    }
    let mut pending = vec![config.data_dir.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let hidden_scratch = name.starts_with(".dashd-") || name.contains(".before-restore-");
            if kind.is_dir() && !hidden_scratch {
                pending.push(path);
            } else if kind.is_file()
                && !hidden_scratch
                && !skip.contains(&path)
                && let Ok(relative) = path.strip_prefix(&config.data_dir)
            {
                found.push(relative.to_owned());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Unpacks the archive into `into`, refusing entries outside it, and returns its manifest.
fn unpack(archive: &Path, into: &Path) -> anyhow::Result<Manifest> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut manifest = None;
    for entry in tar
        .entries()
        .context("not a dashd backup (not a .tar.gz)")?
    {
        let mut entry = entry.context("the archive is damaged")?;
        let name = entry.path()?.into_owned();
        let relative = safe_relative(&name.to_string_lossy())?;
        if relative == Path::new(MANIFEST) {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            manifest = Some(
                serde_json::from_str::<Manifest>(&text)
                    .context("the archive's manifest is damaged")?,
            );
            continue;
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let to = into.join(&relative);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)?;
        std::io::copy(&mut entry, &mut out).context("the archive is damaged")?;
        out.flush()?;
        out.sync_all()?;
    }
    let manifest =
        manifest.context("not a dashd backup: no dashoffice-backup.json in the archive")?;
    if manifest.format != FORMAT {
        bail!(
            "backup format {} is not one this dashd reads (format {FORMAT})",
            manifest.format
        );
    }
    if manifest.backend == Backend::Sqlite.as_str() && !into.join(DATABASE).is_file() {
        bail!("the archive has no database: it is damaged");
    }
    for file in &manifest.files {
        let relative = safe_relative(file)?;
        if !into.join(DATA).join(relative).is_file() {
            bail!("the archive lacks {file}, which its manifest lists: it is damaged");
        }
    }
    Ok(manifest)
}

/// A relative path with no `..`, root or prefix: an archive cannot write outside its folder.
fn safe_relative(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(name);
    if name.is_empty()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("the archive holds an unsafe path {name:?}: refused");
    }
    Ok(path.components().collect())
}

/// Locks an existing file the way the daemon does; a lock held elsewhere means a dashd
/// is running.
fn lock_if_present(path: &Path) -> anyhow::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot open {}", path.display())),
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "a dashd is running on {}: stop it first (systemctl stop dashd)",
            path.display()
        ),
        Err((_, errno)) => bail!("cannot lock {}: {errno}", path.display()),
    }
}

fn append_bytes<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    header.set_cksum();
    archive.append_data(&mut header, name, bytes)?;
    Ok(())
}

/// Gives `path` to `uid:gid` when they differ from its owner (a no-op unless run as root
/// for another user), mode 0600.
fn own_privately(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)?;
    if (meta.uid(), meta.gid()) != (uid, gid) {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Moves a file, also across file systems (copied and synced, then removed).
fn move_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    match std::fs::rename(from, to) {
        Err(err) if err.kind() == std::io::ErrorKind::CrossesDevices => std::fs::copy(from, to)
            .and_then(|_| std::fs::File::open(to)?.sync_all())
            .and_then(|()| std::fs::remove_file(from))
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display())),
        moved => {
            moved.with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
        }
    }
}

/// The path with `.`/`..` and links resolved: of the file, or of its folder when the file
/// does not exist yet.
fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok().or_else(|| {
        let name = path.file_name()?;
        Some(std::fs::canonicalize(parent_of(path)).ok()?.join(name))
    })
}

/// A database URL for a command line: the password removed (the tool asks, or reads
/// PGPASSWORD or ~/.pgpass), never replaced by a mask the tool would take literally.
fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => dash_core::config::redact_url(url),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_database_url_has_no_password_at_all() {
        assert_eq!(
            without_password("postgres://dashd:s3cret@db.example.com:5432/dashd"),
            "postgres://dashd@db.example.com:5432/dashd"
        );
        assert_eq!(
            without_password("postgres://dashd@127.0.0.1/dashd"),
            "postgres://dashd@127.0.0.1/dashd"
        );
    }

    #[test]
    fn archive_paths_cannot_leave_their_folder() {
        assert!(safe_relative("data/jwt.key").is_ok());
        assert!(safe_relative("./dashd.db").is_ok());
        for bad in ["../etc/passwd", "/etc/passwd", "data/../../x", ""] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
    }
}
