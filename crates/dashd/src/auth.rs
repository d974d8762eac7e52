//! Credentials of the REST API: bcrypt password hashing off the async runtime, HS256
//! access tokens, opaque refresh tokens and API keys (kept as SHA-256 hashes, compared
//! in constant time), and the limits on failed logins and on each tenant's requests.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use dash_core::access::{Claims, TOKEN_ISSUER, User};
use dash_core::config::ApiConfig;
use dash_core::ratelimit::SlidingWindow;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::adapter::signature::{equal, hex, sha256_hex};

/// bcrypt's work factor for every stored password.
pub const BCRYPT_COST: u32 = 12;

/// What starts every API key, so a leaked one is recognisable (and scannable).
pub const KEY_PREFIX: &str = "dsk_";
/// What starts every refresh token.
const REFRESH_PREFIX: &str = "dsr_";

/// The daemon's credentials machinery; one per daemon, shared by handlers.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
    /// At most this many bcrypt computations at once, on blocking threads: the async
    /// workers keep serving while logins hash.
    hashing: Semaphore,
    /// A real hash to check unknown accounts against, so they take as long to refuse as
    /// a wrong password (made at the first unknown account, not at start-up).
    decoy_hash: tokio::sync::OnceCell<String>,
    logins: Mutex<LoginLimiter>,
    requests: Mutex<HashMap<Uuid, SlidingWindow>>,
    /// When each API key's last use was last written (once a minute is enough).
    key_touches: Mutex<HashMap<Uuid, Instant>>,
    started: Instant,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

/// Where the token-signing key came from.
#[derive(Debug)]
pub struct LoadedSecret {
    pub path: Option<PathBuf>,
    pub generated: bool,
}

impl Auth {
    /// Builds the machinery from the `[api]` section; the signing key is the configured
    /// one or `<data_dir>/jwt.key` (generated, mode 0600, at first start).
    pub fn load(config: &ApiConfig, data_dir: &Path) -> anyhow::Result<(Auth, LoadedSecret)> {
        let (secret, loaded) = match &config.jwt_secret {
            Some(secret) => (
                secret.expose().as_bytes().to_vec(),
                LoadedSecret {
                    path: None,
                    generated: false,
                },
            ),
            None => load_or_generate(&data_dir.join("jwt.key"))?,
        };
        Ok((Auth::with_secret(config, &secret), loaded))
    }

    fn with_secret(config: &ApiConfig, secret: &[u8]) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 0;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl: Duration::from_secs(config.access_token_ttl_s),
            refresh_ttl: Duration::from_secs(config.refresh_token_ttl_s),
            hashing: Semaphore::new(cores.max(2) / 2),
            decoy_hash: tokio::sync::OnceCell::new(),
            logins: Mutex::new(LoginLimiter::new(
                config.login_attempts,
                Duration::from_secs(config.login_window_s),
            )),
            requests: Mutex::new(HashMap::new()),
            key_touches: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// Hashes a password with bcrypt on a blocking thread.
    pub async fn hash_password(&self, password: &str) -> anyhow::Result<String> {
        let _permit = self.hashing.acquire().await?;
        let password = password.to_owned();
        Ok(tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST)).await??)
    }

    /// Checks a password against a stored hash (or, for an unknown account, against the
    /// decoy, returning false) on a blocking thread.
    pub async fn verify_password(&self, password: &str, hash: Option<&str>) -> bool {
        let known = hash.is_some();
        let hash = match hash {
            Some(hash) => hash.to_owned(),
            None => match self
                .decoy_hash
                .get_or_try_init(|| self.hash_password("decoy password for unknown accounts"))
                .await
            {
                Ok(decoy) => decoy.clone(),
                Err(_) => return false,
            },
        };
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        let matched = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        known && matched
    }

    /// Seconds an access token lives.
    pub fn access_ttl_s(&self) -> u64 {
        self.access_ttl.as_secs()
    }

    /// When a refresh token issued now expires.
    pub fn refresh_expiry(&self) -> DateTime<Utc> {
        Utc::now() + self.refresh_ttl
    }

    /// Signs an access token for `user` in login session `session`.
    pub fn access_token(&self, user: &User, session: Uuid) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.id,
            tenant: user.tenant_id,
            role: user.role,
            jti: session,
            iat: now,
            exp: now + i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iss: TOKEN_ISSUER.to_owned(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The claims of a valid access token: HS256 only, signature, issuer and expiry
    /// checked. Whether its session is still live is the caller's next question.
    pub fn check_access_token(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }

    /// Whether a login for `account` from `address` may be tried now; otherwise the
    /// seconds to wait.
    pub fn login_allowed(&self, account: &str, address: Option<IpAddr>) -> Result<(), u64> {
        let now = self.started.elapsed();
        lock(&self.logins).allowed(account, address, now)
    }

    /// Records a failed login for both the account and the address.
    pub fn login_failed(&self, account: &str, address: Option<IpAddr>) {
        let now = self.started.elapsed();
        lock(&self.logins).failed(account, address, now);
    }

    /// Takes one request from `tenant`'s budget of `limit` a minute: `Ok(remaining, reset
    /// seconds)`, or `Err(retry after seconds)`.
    pub fn take_request(&self, tenant: Uuid, limit: u32) -> Result<(u32, u64), u64> {
        let now = self.started.elapsed();
        let mut requests = lock(&self.requests);
        if requests.len() > 100_000 {
            // Forget windows that are over; a flood of ids cannot grow the map for ever.
            requests.retain(|_, window| window.len_at(now) > 0);
        }
        let window = requests
            .entry(tenant)
            .or_insert_with(|| SlidingWindow::new(limit, Duration::from_secs(60)));
        window.set_limit(limit);
        match window.next_allowed(now) {
            Some(at) if at <= now => {
                window.record(now);
                let used = u32::try_from(window.len_at(now)).unwrap_or(u32::MAX);
                let reset = window.oldest().map_or(60, |oldest| {
                    (oldest + Duration::from_secs(60) - now).as_secs()
                });
                Ok((limit.saturating_sub(used), reset.max(1)))
            }
            Some(at) => Err((at - now).as_secs().max(1)),
            None => Err(60),
        }
    }

    /// Whether an API key's last use should be written now (at most once a minute each).
    pub fn should_touch_key(&self, key: Uuid) -> bool {
        let now = Instant::now();
        let mut touches = lock(&self.key_touches);
        match touches.get(&key) {
            Some(last) if now.duration_since(*last) < Duration::from_secs(60) => false,
            _ => {
                if touches.len() > 100_000 {
                    touches.clear();
                }
                touches.insert(key, now);
                true
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A new refresh token and the hash the store keeps.
pub fn new_refresh_token() -> (String, String) {
    let token = format!("{REFRESH_PREFIX}{}", random_text(32));
    let hash = sha256_hex(token.as_bytes());
    (token, hash)
}

/// The hash under which a refresh token is stored.
pub fn refresh_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// A new API key: (the whole key, its public prefix, the hash of its secret).
pub fn new_api_key() -> (String, String, String) {
    let prefix = format!("{KEY_PREFIX}{}", random_alphanumeric(12));
    let secret = random_text(32);
    let hash = sha256_hex(secret.as_bytes());
    (format!("{prefix}_{secret}"), prefix, hash)
}

/// Splits a presented key into its prefix and secret, if it has the shape of one.
pub fn split_api_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_at_checked(12)?;
    let secret = secret.strip_prefix('_')?;
    if id.chars().all(|c| c.is_ascii_alphanumeric()) && !secret.is_empty() {
        Some((&key[..KEY_PREFIX.len() + 12], secret))
    } else {
        None
    }
}

/// Whether a presented key's secret matches the stored hash, in constant time.
pub fn key_matches(secret: &str, stored_hash: &str) -> bool {
    equal(
        sha256_hex(secret.as_bytes()).as_bytes(),
        stored_hash.as_bytes(),
    )
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The operating system's generator only fails on a broken system; a token made of
    // zeros would then be refused as a duplicate by the store's unique keys, never used.
    if getrandom::fill(&mut bytes).is_err() {
        tracing::error!("the operating system's random generator failed");
    }
    bytes
}

fn random_text(bytes: usize) -> String {
    let raw: [u8; 64] = random_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..bytes.min(64)])
}

fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let raw: [u8; 64] = random_bytes();
    raw.iter()
        .take(len.min(64))
        // 256 = 7 × 36 + 4: the bias is under 2 % per character, and the prefix is an
        // identifier, not a secret.
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Reads `<data_dir>/jwt.key`, or writes a new one (32 random bytes as hex, mode 0600).
fn load_or_generate(path: &Path) -> anyhow::Result<(Vec<u8>, LoadedSecret)> {
    use anyhow::Context as _;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().as_bytes().to_vec();
            anyhow::ensure!(
                secret.len() >= 32,
                "{} holds fewer than 32 bytes: delete it to have a new one made (everybody is logged out)",
                path.display()
            );
            Ok((
                secret,
                LoadedSecret {
                    path: Some(path.to_owned()),
                    generated: false,
                },
            ))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let secret = hex(&random_bytes::<32>());
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(format!("{secret}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok((
                secret.into_bytes(),
                LoadedSecret {
                    path: Some(path.to_owned()),
                    generated: true,
                },
            ))
        }
        Err(err) => Err(anyhow::anyhow!("cannot read {}: {err}", path.display())),
    }
}

/// Failed logins per account and per client address, in a sliding window.
#[derive(Debug)]
struct LoginLimiter {
    limit: usize,
    window: Duration,
    failures: HashMap<String, VecDeque<Duration>>,
}

impl LoginLimiter {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit as usize,
            window,
            failures: HashMap::new(),
        }
    }

    fn keys(account: &str, address: Option<IpAddr>) -> Vec<String> {
        let mut keys = vec![format!("account:{account}")];
        if let Some(address) = address {
            keys.push(format!("address:{address}"));
        }
        keys
    }

    fn allowed(
        &mut self,
        account: &str,
        address: Option<IpAddr>,
        now: Duration,
    ) -> Result<(), u64> {
        let mut wait = Duration::ZERO;
        for key in Self::keys(account, address) {
            if let Some(times) = self.failures.get_mut(&key) {
                while times.front().is_some_and(|t| *t + self.window <= now) {
                    times.pop_front();
                }
                if times.len() >= self.limit
                    && let Some(oldest) = times.front()
                {
                    wait = wait.max(*oldest + self.window - now);
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.as_secs().max(1))
        }
    }

    fn failed(&mut self, account: &str, address: Option<IpAddr>, now: Duration) {
        if self.failures.len() > 100_000 {
            let window = self.window;
            self.failures
                .retain(|_, times| times.back().is_some_and(|t| *t + window > now));
        }
        for key in Self::keys(account, address) {
            let times = self.failures.entry(key).or_default();
            times.push_back(now);
            while times.len() > self.limit {
                times.pop_front();
            }
        }
    }
}

/// The shared handle handlers hold.
pub type SharedAuth = Arc<Auth>;

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::with_secret(&ApiConfig::default(), b"0123456789abcdef0123456789abcdef")
    }

    fn user() -> User {
        let now = Utc::now();
        User {
            id: Uuid::now_v7(),
            tenant_id: Some(Uuid::now_v7()),
            tenant: Some("acme".into()),
            email: "ana@example.com".into(),
            name: "Ana".into(),
            role: dash_core::access::Role::Agent,
            status: dash_core::access::UserStatus::Active,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        }
    }

    #[test]
    fn access_tokens_round_trip_and_refuse_tampering() {
        let auth = auth();
        let user = user();
        let session = Uuid::now_v7();
        let token = auth.access_token(&user, session).unwrap();
        let claims = auth.check_access_token(&token).unwrap();
        assert_eq!(
            (claims.sub, claims.jti, claims.tenant),
            (user.id, session, user.tenant_id)
        );
        // Any flipped byte of the signature, header or claims is refused.
        for index in [5, token.len() / 2, token.len() - 3] {
            let mut bytes = token.clone().into_bytes();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(auth.check_access_token(&tampered).is_none(), "{index}");
        }
        // Another key's token is refused.
        let other = Auth::with_secret(&ApiConfig::default(), b"another key that is long enough!!");
        assert!(other.check_access_token(&token).is_none());
    }

    #[test]
    fn api_keys_split_and_match() {
        let (key, prefix, hash) = new_api_key();
        let (found_prefix, secret) = split_api_key(&key).unwrap();
        assert_eq!(found_prefix, prefix);
        assert!(key_matches(secret, &hash));
        assert!(!key_matches("another secret", &hash));
        assert!(split_api_key("dsk_short").is_none());
        assert!(split_api_key("Bearer something").is_none());
        let (one, _) = new_refresh_token();
        let (two, _) = new_refresh_token();
        assert_ne!(one, two);
    }

    #[test]
    fn logins_stop_at_the_limit_per_account_and_per_address() {
        let mut limiter = LoginLimiter::new(5, Duration::from_secs(300));
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        let there: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Duration::from_secs(1000);
        for _ in 0..5 {
            assert!(limiter.allowed("ana", Some(here), t).is_ok());
            limiter.failed("ana", Some(here), t);
        }
        // The sixth: refused for the account from anywhere, and for the address.
        assert!(limiter.allowed("ana", Some(there), t).is_err());
        assert!(limiter.allowed("bob", Some(here), t).is_err());
        assert!(limiter.allowed("bob", Some(there), t).is_ok());
        let later = t + Duration::from_secs(300);
        assert!(limiter.allowed("ana", Some(here), later).is_ok());
    }

    #[test]
    fn tenants_get_their_budget_a_minute() {
        let auth = auth();
        let tenant = Uuid::now_v7();
        for expected in (0..3).rev() {
            assert_eq!(auth.take_request(tenant, 3).unwrap().0, expected);
        }
        assert!(auth.take_request(tenant, 3).is_err());
        assert!(auth.take_request(Uuid::now_v7(), 3).is_ok());
    }
}
