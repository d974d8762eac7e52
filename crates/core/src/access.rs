//! Who may do what through the REST API: roles of users, scopes of API keys, and the
//! permission every route requires. Pure: the gateway asks [`Role::grants`] and
//! [`Scope`]'s set before running a handler; the store filters by tenant on its own.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ValidationError;

/// A user's role. `admin` is platform-wide (no tenant); the others belong to one tenant.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The platform's operator: every tenant.
    Admin,
    /// Everything in its tenant, including users and API keys.
    Owner,
    /// Conversations and handoffs, sending messages, reading catalogue and orders.
    Agent,
    /// Reads only.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Owner, Role::Agent, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Owner => "owner",
            Role::Agent => "agent",
            Role::Viewer => "viewer",
        }
    }

    /// Whether this role may use a route that requires `scope`.
    pub fn grants(self, scope: Scope) -> bool {
        use Scope::*;
        match self {
            Role::Admin => true,
            Role::Owner => scope != TenantsManage,
            Role::Agent => matches!(
                scope,
                BotsRead
                    | MessagesSend
                    | ConversationsRead
                    | ConversationsWrite
                    | ProductsRead
                    | CustomersRead
                    | OrdersRead
                    | SellersRead
                    | EventsRead
            ),
            Role::Viewer => scope.is_read(),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == value)
            .ok_or_else(|| format!("unknown role {value:?}: use admin, owner, agent or viewer"))
    }
}

/// What a route requires, and what an API key may be granted. Names are
/// `resource:action`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Scope {
    #[serde(rename = "bots:read")]
    BotsRead,
    /// Bots, their chains, provider settings and flows.
    #[serde(rename = "bots:write")]
    BotsWrite,
    #[serde(rename = "messages:send")]
    MessagesSend,
    #[serde(rename = "conversations:read")]
    ConversationsRead,
    /// Taking, answering and resuming conversations (human handoff).
    #[serde(rename = "conversations:write")]
    ConversationsWrite,
    #[serde(rename = "products:read")]
    ProductsRead,
    #[serde(rename = "products:write")]
    ProductsWrite,
    #[serde(rename = "customers:read")]
    CustomersRead,
    #[serde(rename = "customers:write")]
    CustomersWrite,
    #[serde(rename = "orders:read")]
    OrdersRead,
    #[serde(rename = "orders:write")]
    OrdersWrite,
    #[serde(rename = "sellers:read")]
    SellersRead,
    #[serde(rename = "sellers:write")]
    SellersWrite,
    /// The live event stream.
    #[serde(rename = "events:read")]
    EventsRead,
    /// The tenant's users and API keys: owners only, never granted to a key.
    #[serde(rename = "team:manage")]
    TeamManage,
    /// Tenants themselves: platform admins only, never granted to a key.
    #[serde(rename = "tenants:manage")]
    TenantsManage,
}

impl Scope {
    pub const ALL: [Scope; 16] = [
        Scope::BotsRead,
        Scope::BotsWrite,
        Scope::MessagesSend,
        Scope::ConversationsRead,
        Scope::ConversationsWrite,
        Scope::ProductsRead,
        Scope::ProductsWrite,
        Scope::CustomersRead,
        Scope::CustomersWrite,
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::SellersRead,
        Scope::SellersWrite,
        Scope::EventsRead,
        Scope::TeamManage,
        Scope::TenantsManage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::BotsRead => "bots:read",
            Scope::BotsWrite => "bots:write",
            Scope::MessagesSend => "messages:send",
            Scope::ConversationsRead => "conversations:read",
            Scope::ConversationsWrite => "conversations:write",
            Scope::ProductsRead => "products:read",
            Scope::ProductsWrite => "products:write",
            Scope::CustomersRead => "customers:read",
            Scope::CustomersWrite => "customers:write",
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::SellersRead => "sellers:read",
            Scope::SellersWrite => "sellers:write",
            Scope::EventsRead => "events:read",
            Scope::TeamManage => "team:manage",
            Scope::TenantsManage => "tenants:manage",
        }
    }

    /// Whether the scope only reads.
    pub fn is_read(self) -> bool {
        self.as_str().ends_with(":read")
    }

    /// Whether an API key may hold it: managing people and tenants takes a person.
    pub fn grantable_to_keys(self) -> bool {
        !matches!(self, Scope::TeamManage | Scope::TenantsManage)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == value)
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL
                    .iter()
                    .filter(|s| s.grantable_to_keys())
                    .map(|s| s.as_str())
                    .collect();
                format!("unknown scope {value:?}: use {}", known.join(", "))
            })
    }
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted: bcrypt reads 72 bytes, and a longer one would be cut.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Passwords found at the top of every leaked-password list, in lower case. A password
/// whose lower-case form is one of these, or one of these followed by digits or `!`, is
/// refused whatever its length.
const COMMON_PASSWORDS: &[&str] = &[
    "123456",
    "password",
    "12345678",
    "qwerty",
    "123456789",
    "12345",
    "1234",
    "111111",
    "1234567",
    "dragon",
    "123123",
    "baseball",
    "abc123",
    "football",
    "monkey",
    "letmein",
    "shadow",
    "master",
    "666666",
    "qwertyuiop",
    "123321",
    "mustang",
    "1234567890",
    "michael",
    "654321",
    "superman",
    "1qaz2wsx",
    "7777777",
    "121212",
    "000000",
    "qazwsx",
    "123qwe",
    "killer",
    "trustno1",
    "jordan",
    "jennifer",
    "zxcvbnm",
    "asdfgh",
    "hunter",
    "buster",
    "soccer",
    "harley",
    "batman",
    "andrew",
    "tigger",
    "sunshine",
    "iloveyou",
    "2000",
    "charlie",
    "robert",
    "thomas",
    "hockey",
    "ranger",
    "daniel",
    "starwars",
    "klaster",
    "112233",
    "george",
    "computer",
    "michelle",
    "jessica",
    "pepper",
    "1111",
    "zxcvbn",
    "555555",
    "11111111",
    "131313",
    "freedom",
    "777777",
    "pass",
    "maggie",
    "159753",
    "aaaaaa",
    "ginger",
    "princess",
    "joshua",
    "cheese",
    "amanda",
    "summer",
    "love",
    "ashley",
    "nicole",
    "chelsea",
    "biteme",
    "matthew",
    "access",
    "yankees",
    "987654321",
    "dallas",
    "austin",
    "thunder",
    "taylor",
    "matrix",
    "welcome",
    "admin",
    "administrator",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "qwerty123",
    "qwe123",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1q2w3e",
    "asdfghjkl",
    "q1w2e3r4",
    "changeme",
    "secret",
    "contraseña",
    "contrasena",
    "123456a",
    "a123456",
    "senha",
    "teamo",
    "tequiero",
    "whatsapp",
    "dashoffice",
    "default",
    "guest",
    "root",
    "toor",
    "login",
    "hello",
    "hola",
    "mexico",
    "argentina",
    "colombia",
    "brasil",
    "samsung",
    "google",
    "facebook",
    "temp",
    "test",
    "testing",
    "demo",
    "qwertyu",
    "abcdef",
    "abcd1234",
    "abc12345",
    "password1",
    "iloveu",
    "lovely",
    "flower",
    "babygirl",
    "angel",
    "sayang",
];

/// Checks a new password: long enough, not too long for bcrypt, not a common one and not
/// a repetition or the account's own name. `account` is the email (its local part counts).
pub fn check_password(field: &str, password: &str, account: &str) -> Result<(), ValidationError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ValidationError::new(
            field,
            format!("a password has at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ValidationError::new(
            field,
            format!("a password has at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    let lower = password.to_lowercase();
    let stem = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c == '!' || c == '.');
    let local = account.split('@').next().unwrap_or_default().to_lowercase();
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    let common = COMMON_PASSWORDS.contains(&lower.as_str())
        || (!stem.is_empty() && COMMON_PASSWORDS.contains(&stem))
        || stem.is_empty();
    if common || distinct.len() < 4 || (local.len() >= 4 && lower.contains(&local)) {
        return Err(ValidationError::new(
            field,
            "this password is too easy to guess: choose a longer phrase that is not a common password or your account name",
        ));
    }
    Ok(())
}

/// Normalises and checks an email used as a login name.
pub fn email(field: &str, value: &str) -> Result<String, ValidationError> {
    let email = value.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(ValidationError::new(
            field,
            "give an email address, like ana@example.com",
        ))
    }
}

/// A user of the REST API (never with its password hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    /// The tenant's id; absent for platform admins.
    pub tenant_id: Option<Uuid>,
    /// The tenant's slug; absent for platform admins.
    pub tenant: Option<String>,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// `active`, or `disabled` (cannot log in; its sessions end).
    pub status: UserStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// Whether a user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for UserStatus {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(format!(
                "unknown user status {other:?}: use active or disabled"
            )),
        }
    }
}

/// Creating a user (`dashctl user create`, `POST /api/v1/users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The tenant (id or slug); must be absent for `admin`, present for the others. The
    /// REST API fills it with the caller's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: Role,
    pub password: String,
}

impl CreateUser {
    /// Checks every field and returns the normalised request.
    pub fn validated(&self) -> Result<CreateUser, ValidationError> {
        let email = email("email", &self.email)?;
        match (self.role, &self.tenant) {
            (Role::Admin, Some(_)) => {
                return Err(ValidationError::new(
                    "tenant",
                    "a platform admin belongs to no tenant: leave the tenant out",
                ));
            }
            (role, None) if role != Role::Admin => {
                return Err(ValidationError::new(
                    "tenant",
                    format!("a user with role {role} belongs to a tenant: name it"),
                ));
            }
            _ => {}
        }
        check_password("password", &self.password, &email)?;
        let name = match &self.name {
            Some(name) => crate::validate::display_name("name", name)?,
            None => email.split('@').next().unwrap_or_default().to_owned(),
        };
        Ok(CreateUser {
            tenant: self.tenant.clone(),
            email,
            name: Some(name),
            role: self.role,
            password: self.password.clone(),
        })
    }
}

/// Changing a user: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
}

impl UpdateUser {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.role.is_none() && self.status.is_none()
    }

    pub fn validated(&self) -> Result<UpdateUser, ValidationError> {
        let name = self
            .name
            .as_deref()
            .map(|name| crate::validate::display_name("name", name))
            .transpose()?;
        Ok(UpdateUser {
            name,
            ..self.clone()
        })
    }
}

/// Setting a user's password (`dashctl user passwd`, `POST /api/v1/users/{id}/password`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub password: String,
}

/// `POST /api/auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
}

/// `POST /api/auth/register` (when self-service sign-up is on): a tenant and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The new tenant's slug.
    pub tenant: String,
    #[serde(default)]
    pub tenant_name: Option<String>,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    pub password: String,
}

/// `POST /api/auth/refresh` and `POST /api/auth/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// What a login or a refresh returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    /// The JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Opaque, single use: trade it at `/api/auth/refresh` for a new pair.
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub user: User,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// The user's tenant; absent for platform admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Uuid>,
    pub role: Role,
    /// The token id: the login session it belongs to (logout revokes it).
    pub jti: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// Issuer written into and required of every access token.
pub const TOKEN_ISSUER: &str = "dashd";

/// A tenant's API key as listed (its secret is shown once, at creation, and never kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant: String,
    pub name: String,
    /// The key's public part (`dsk_` and 12 characters), to recognise it in a list.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Creating an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// The tenant (id or slug): required on the admin socket, the caller's own on the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// When it stops working; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreateApiKey {
    pub fn validated(&self, now: DateTime<Utc>) -> Result<CreateApiKey, ValidationError> {
        let name = crate::validate::display_name("name", &self.name)?;
        if self.scopes.is_empty() {
            return Err(ValidationError::new(
                "scopes",
                "give at least one scope, e.g. messages:send",
            ));
        }
        if let Some(scope) = self.scopes.iter().find(|s| !s.grantable_to_keys()) {
            return Err(ValidationError::new(
                "scopes",
                format!("{scope} is never granted to an API key: it takes a person's login"),
            ));
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(ValidationError::new(
                "expires_at",
                "the expiry is in the past",
            ));
        }
        let mut scopes = self.scopes.clone();
        scopes.sort_unstable();
        scopes.dedup();
        Ok(CreateApiKey {
            tenant: self.tenant.clone(),
            name,
            scopes,
            expires_at: self.expires_at,
        })
    }
}

/// The answer to creating a key: the key itself, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    /// The whole key, for `Authorization: Bearer`. It cannot be shown again.
    pub key: String,
    #[serde(flatten)]
    pub record: ApiKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_issue_says() {
        for scope in Scope::ALL {
            assert!(Role::Admin.grants(scope));
            assert_eq!(Role::Owner.grants(scope), scope != Scope::TenantsManage);
            assert_eq!(Role::Viewer.grants(scope), scope.is_read());
        }
        assert!(Role::Agent.grants(Scope::ConversationsWrite));
        assert!(Role::Agent.grants(Scope::MessagesSend));
        assert!(Role::Agent.grants(Scope::OrdersRead));
        assert!(!Role::Agent.grants(Scope::OrdersWrite));
        assert!(!Role::Agent.grants(Scope::BotsWrite));
        assert!(!Role::Agent.grants(Scope::TeamManage));
    }

    #[test]
    fn scopes_round_trip_through_their_names() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{scope}\""));
        }
        assert!("bots:delete".parse::<Scope>().is_err());
    }

    #[test]
    fn weak_passwords_are_refused() {
        for weak in [
            "short",
            "password123",
            "Password1!",
            "qwertyuiop",
            "1234567890",
            "aaaaaaaaaaaa",
            "abababababab",
            "ana.garcia2026",
        ] {
            assert!(
                check_password("password", weak, "ana.garcia@example.com").is_err(),
                "{weak}"
            );
        }
        assert!(check_password("password", &"x".repeat(73), "a@b.co").is_err());
        for strong in ["correct horse battery", "Tienda-Lunes-42", "zq8!Lm3#pW9v"] {
            assert!(
                check_password("password", strong, "ana@example.com").is_ok(),
                "{strong}"
            );
        }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            email("email", " Ana@Example.COM ").unwrap(),
            "ana@example.com"
        );
        for bad in [
            "",
            "ana",
            "@example.com",
            "ana@",
            "ana@example",
            "a b@example.com",
        ] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_and_keys_are_checked() {
        let admin = CreateUser {
            tenant: None,
            email: "root@example.com".into(),
            name: None,
            role: Role::Admin,
            password: "a long passphrase".into(),
        };
        assert_eq!(admin.validated().unwrap().name.as_deref(), Some("root"));
        let tenantless_owner = CreateUser {
            role: Role::Owner,
            ..admin.clone()
        };
        assert_eq!(tenantless_owner.validated().unwrap_err().field, "tenant");
        let admin_in_tenant = CreateUser {
            tenant: Some("acme".into()),
            ..admin
        };
        assert_eq!(admin_in_tenant.validated().unwrap_err().field, "tenant");

        let now = Utc::now();
        let key = CreateApiKey {
            tenant: None,
            name: "erp".into(),
            scopes: vec![Scope::OrdersRead, Scope::MessagesSend, Scope::OrdersRead],
            expires_at: None,
        };
        assert_eq!(key.validated(now).unwrap().scopes.len(), 2);
        let team = CreateApiKey {
            scopes: vec![Scope::TeamManage],
            ..key.clone()
        };
        assert!(team.validated(now).is_err());
        let none = CreateApiKey {
            scopes: vec![],
            ..key.clone()
        };
        assert!(none.validated(now).is_err());
        let past = CreateApiKey {
            expires_at: Some(now - chrono::Duration::seconds(1)),
            ..key
        };
        assert!(past.validated(now).is_err());
    }
}
