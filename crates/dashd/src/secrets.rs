//! Provider secrets at rest: sealed with AES-256-GCM under a master key that never enters
//! the database. The key comes from `secrets.master_key_file` (e.g. a systemd
//! credential) or, on the embedded default with none configured, from
//! `<data_dir>/master.key`, generated (mode 0600) at first start.
//!
//! Each sealed value is bound to where it belongs (the bot and provider, as associated
//! data), so a sealed blob copied onto another row does not open. The database keeps a
//! check value sealed at first use: a dashd started with another key stops at start-up
//! with a clear error instead of failing on every send.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use chrono::Utc;

use crate::adapter::Secret;
use crate::store::Store;

/// Bytes of a key.
const KEY_LEN: usize = 32;
/// Bytes of a nonce, before the ciphertext in a sealed value.
const NONCE_LEN: usize = 12;
/// Version prefix of a sealed value.
const PREFIX: &str = "v1:";
/// What the check value seals.
const CHECK_PLAINTEXT: &[u8] = b"dashd master key check";
const CHECK_CONTEXT: &str = "secret-check";

/// The master key. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey(Key<Aes256Gcm>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// A secret that cannot be opened or a key that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Key(String),
    /// Wrong key, or a value altered or moved to another row.
    #[error("a stored secret cannot be decrypted with this master key")]
    Open,
}

impl MasterKey {
    /// A key from its text form: 64 hex digits or base64 of 32 bytes (whitespace
    /// around it ignored).
    pub fn parse(text: &str) -> Result<MasterKey, SecretError> {
        let text = text.trim();
        let bytes = crate::adapter::signature::unhex(text)
            .filter(|b| b.len() == KEY_LEN)
            .or_else(|| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .filter(|b| b.len() == KEY_LEN)
            })
            .ok_or_else(|| {
                SecretError::Key(
                    "a master key is 32 bytes written as 64 hex digits or in base64".into(),
                )
            })?;
        let key = Key::<Aes256Gcm>::try_from(bytes.as_slice())
            .map_err(|_| SecretError::Key("a master key is 32 bytes".into()))?;
        Ok(MasterKey(key))
    }

    /// A new random key.
    pub fn generate() -> MasterKey {
        MasterKey(Key::<Aes256Gcm>::generate())
    }

    fn to_hex(&self) -> String {
        crate::adapter::signature::hex(self.0.as_slice())
    }

    /// Seals `plaintext` for `context` (what it belongs to).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Nonce::generate();
        // Encryption with a valid key and a fresh nonce cannot fail for inputs under
        // GCM's 64 GiB bound; an empty value stands for a failure that cannot happen.
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|bytes| bytes.len() > NONCE_LEN)
            .ok_or(SecretError::Open)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| SecretError::Open)?;
        Aes256Gcm::new(&self.0)
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)
    }

    /// Seals a set of named secrets for one bot's provider entry.
    pub fn seal_map(&self, context: &str, secrets: &BTreeMap<String, Secret>) -> String {
        let plain: BTreeMap<&str, &str> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        // A map of strings always serialises.
        let json = serde_json::to_vec(&plain).unwrap_or_default();
        self.seal(context, &json)
    }

    /// Opens what [`MasterKey::seal_map`] sealed.
    pub fn open_map(
        &self,
        context: &str,
        sealed: &str,
    ) -> Result<BTreeMap<String, Secret>, SecretError> {
        let json = self.open(context, sealed)?;
        let plain: BTreeMap<String, String> =
            serde_json::from_slice(&json).map_err(|_| SecretError::Open)?;
        Ok(plain
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect())
    }
}

/// Where the master key comes from, and whether it was just made.
#[derive(Debug)]
pub struct LoadedKey {
    pub key: MasterKey,
    pub path: PathBuf,
    pub generated: bool,
}

/// Loads the configured key file, or `<data_dir>/master.key`, generating the latter
/// (0600) if it does not exist. A configured file that is missing is an error: it is
/// never generated in someone else's place.
pub fn load_key(configured: Option<&Path>, data_dir: &Path) -> Result<LoadedKey, SecretError> {
    if let Some(path) = configured {
        let text = std::fs::read_to_string(path).map_err(|err| {
            SecretError::Key(format!(
                "cannot read secrets.master_key_file {}: {err}",
                path.display()
            ))
        })?;
        let key = MasterKey::parse(&text)
            .map_err(|err| SecretError::Key(format!("{}: {err}", path.display())))?;
        return Ok(LoadedKey {
            key,
            path: path.to_owned(),
            generated: false,
        });
    }
    let path = data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = MasterKey::parse(&text)
                .map_err(|err| SecretError::Key(format!("{}: {err}", path.display())))?;
            Ok(LoadedKey {
                key,
                path,
                generated: false,
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate();
            write_new_key(&path, &key)?;
            Ok(LoadedKey {
                key,
                path,
                generated: true,
            })
        }
        Err(err) => Err(SecretError::Key(format!(
            "cannot read {}: {err}",
            path.display()
        ))),
    }
}

fn write_new_key(path: &Path, key: &MasterKey) -> Result<(), SecretError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |err: std::io::Error| {
        SecretError::Key(format!(
            "cannot create the master key {}: {err}",
            path.display()
        ))
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Checks the key against the database's check value, storing one at first use.
pub async fn check_key(store: &dyn Store, key: &MasterKey) -> anyhow::Result<()> {
    let stored = match store.secret_check().await? {
        Some(stored) => stored,
        None => {
            store
                .init_secret_check(&key.seal(CHECK_CONTEXT, CHECK_PLAINTEXT), Utc::now())
                .await?
        }
    };
    match key.open(CHECK_CONTEXT, &stored) {
        Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
        _ => anyhow::bail!(
            "the master key does not match the one this database's provider secrets were encrypted with: \
             start dashd with the original key (secrets.master_key_file, or <data_dir>/master.key)"
        ),
    }
}

/// The associated data binding a bot's provider secrets to their row.
pub fn provider_context(bot_id: uuid::Uuid, provider: &str) -> String {
    format!("bot-provider:{bot_id}:{provider}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = MasterKey::generate();
        let sealed = key.seal("a", b"token-123");
        assert!(!sealed.contains("token-123"));
        assert_eq!(key.open("a", &sealed).unwrap(), b"token-123");
        assert!(key.open("b", &sealed).is_err(), "moved to another row");
        assert!(MasterKey::generate().open("a", &sealed).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            key.open("a", &String::from_utf8(tampered).unwrap())
                .is_err()
        );
        // Two seals of the same value differ (fresh nonces).
        assert_ne!(key.seal("a", b"x"), key.seal("a", b"x"));
    }

    #[test]
    fn keys_load_from_files_and_are_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_key(None, dir.path()).unwrap();
        assert!(first.generated);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_key(None, dir.path()).unwrap();
        assert!(!again.generated);
        let sealed = first.key.seal("c", b"v");
        assert_eq!(again.key.open("c", &sealed).unwrap(), b"v");
        // A configured file that is missing is an error, not a new key.
        assert!(load_key(Some(&dir.path().join("nope")), dir.path()).is_err());
        let b64 = dir.path().join("b64");
        std::fs::write(
            &b64,
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )
        .unwrap();
        assert!(load_key(Some(&b64), dir.path()).is_ok());
        std::fs::write(&b64, "short").unwrap();
        assert!(load_key(Some(&b64), dir.path()).is_err());
        assert_eq!(format!("{:?}", first.key), "MasterKey(***)");
    }
}
