//! `dashctl user create|list|show|update|passwd|delete` and `dashctl key
//! create|list|revoke`. Passwords are typed twice without echo, or read from stdin for
//! scripts; they never appear on the command line (where `ps` would show them).

use std::io::{BufRead, IsTerminal};

use dash_core::access::{
    ApiKey, CreateApiKey, CreateUser, CreatedApiKey, SetPassword, UpdateUser, User,
};

use crate::cli::{KeyCommand, UserCommand};
use crate::client::Client;
use crate::error::{CliError, CliResult, Failure};
use crate::output::{Output, cells, details, table, time};

pub async fn run(client: &Client, out: Output, command: UserCommand) -> CliResult {
    match command {
        UserCommand::Create {
            email,
            role,
            tenant,
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let req = CreateUser {
                tenant,
                email,
                name,
                role,
                password,
            };
            // Checked here too, so a weak password is refused before it is typed twice.
            req.validated().map_err(|err| {
                CliError::new(Failure::Invalid, format!("{}: {}", err.field, err.message))
            })?;
            let user: User = client.post("/v1/users", &req).await?;
            out.print(&user, || {
                format!("user {} created\n{}", user.email, show(&user))
            })
        }
        UserCommand::List { tenant } => {
            let path = match &tenant {
                Some(tenant) => format!("/v1/users?tenant={}", encode(tenant)),
                None => "/v1/users".to_owned(),
            };
            let users: Vec<User> = client.get(&path).await?;
            out.print_list(
                &users,
                "No users yet: create the first platform admin with `dashctl user create EMAIL --role admin`.",
                || {
                    let mut t = table(&["EMAIL", "TENANT", "ROLE", "STATUS", "LAST LOGIN"]);
                    for user in &users {
                        t.add_row(cells([
                            user.email.clone(),
                            user.tenant.clone().unwrap_or_else(|| "(platform)".into()),
                            user.role.to_string(),
                            user.status.as_str().to_owned(),
                            user.last_login_at.as_ref().map(time).unwrap_or_else(|| "never".into()),
                        ]));
                    }
                    t
                },
            )
        }
        UserCommand::Show { user } => {
            let user: User = client.get(&user_path(&user)).await?;
            out.print(&user, || show(&user))
        }
        UserCommand::Update {
            user,
            name,
            role,
            status,
        } => {
            let changes = UpdateUser { name, role, status };
            if changes.is_empty() {
                return Err(CliError::new(
                    Failure::Invalid,
                    "nothing to change: give --name, --role or --status",
                ));
            }
            let user: User = client.patch(&user_path(&user), &changes).await?;
            out.print(&user, || {
                format!("user {} updated\n{}", user.email, show(&user))
            })
        }
        UserCommand::Passwd {
            user,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let user: User = client
                .post(
                    &format!("{}/password", user_path(&user)),
                    &SetPassword { password },
                )
                .await?;
            out.print(&user, || {
                format!(
                    "password of {} changed; its sessions have ended",
                    user.email
                )
            })
        }
        UserCommand::Delete { user } => {
            let record: User = client.get(&user_path(&user)).await?;
            out.confirm(&format!("Delete user {} ({})?", record.email, record.role))?;
            let user: User = client.delete(&user_path(&record.id.to_string())).await?;
            out.print(&user, || format!("user {} deleted", user.email))
        }
    }
}

pub async fn keys(client: &Client, out: Output, command: KeyCommand) -> CliResult {
    match command {
        KeyCommand::Create {
            tenant,
            name,
            scopes,
            expires,
        } => {
            let req = CreateApiKey {
                tenant: Some(tenant),
                name,
                scopes,
                expires_at: expires,
            };
            let created: CreatedApiKey = client.post("/v1/keys", &req).await?;
            out.print(&created, || {
                format!(
                    "API key {} created for tenant {}. Copy it now: it cannot be shown again.\n\n  {}\n\n{}",
                    created.record.name,
                    created.record.tenant,
                    created.key,
                    show_key(&created.record)
                )
            })
        }
        KeyCommand::List { tenant } => {
            let path = match &tenant {
                Some(tenant) => format!("/v1/keys?tenant={}", encode(tenant)),
                None => "/v1/keys".to_owned(),
            };
            let keys: Vec<ApiKey> = client.get(&path).await?;
            out.print_list(
                &keys,
                "No API keys: create one with `dashctl key create TENANT --name N --scopes ...`.",
                || {
                    let mut t = table(&[
                        "ID",
                        "TENANT",
                        "NAME",
                        "PREFIX",
                        "SCOPES",
                        "STATE",
                        "LAST USED",
                    ]);
                    for key in &keys {
                        t.add_row(cells([
                            key.id.to_string(),
                            key.tenant.clone(),
                            key.name.clone(),
                            key.prefix.clone(),
                            scopes(key),
                            state(key),
                            key.last_used_at
                                .as_ref()
                                .map(time)
                                .unwrap_or_else(|| "never".into()),
                        ]));
                    }
                    t
                },
            )
        }
        KeyCommand::Revoke { id } => {
            out.confirm(&format!(
                "Revoke API key {id}? Programs using it stop working."
            ))?;
            let key: ApiKey = client.delete(&format!("/v1/keys/{id}")).await?;
            out.print(&key, || {
                format!("API key {} ({}) revoked", key.name, key.prefix)
            })
        }
    }
}

fn user_path(user: &str) -> String {
    format!("/v1/users/{}", encode(user))
}

/// Percent-encodes a path segment (emails hold `@` and `+`).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The new password: from stdin's first line, or typed twice on the terminal.
fn read_password(from_stdin: bool) -> CliResult<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|err| {
                CliError::new(
                    Failure::Invalid,
                    format!("cannot read the password from stdin: {err}"),
                )
            })?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            return Err(CliError::new(Failure::Invalid, "stdin held no password"));
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(
            Failure::Invalid,
            "no terminal to type the password on: pass --password-stdin and write it to stdin",
        ));
    }
    let prompt = |text: &str| {
        rpassword::prompt_password(text).map_err(|err| {
            CliError::new(Failure::Invalid, format!("cannot read the password: {err}"))
        })
    };
    let first = prompt("New password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        return Err(CliError::new(Failure::Invalid, "the two passwords differ"));
    }
    Ok(first)
}

fn show(user: &User) -> String {
    details(&[
        ("id", user.id.to_string()),
        ("email", user.email.clone()),
        ("name", user.name.clone()),
        (
            "tenant",
            user.tenant.clone().unwrap_or_else(|| "(platform)".into()),
        ),
        ("role", user.role.to_string()),
        ("status", user.status.as_str().to_owned()),
        ("created", time(&user.created_at)),
        (
            "last login",
            user.last_login_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "never".into()),
        ),
    ])
}

fn scopes(key: &ApiKey) -> String {
    key.scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn state(key: &ApiKey) -> String {
    if key.revoked_at.is_some() {
        "revoked".into()
    } else if key.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
        "expired".into()
    } else {
        "active".into()
    }
}

fn show_key(key: &ApiKey) -> String {
    details(&[
        ("id", key.id.to_string()),
        ("prefix", key.prefix.clone()),
        ("scopes", scopes(key)),
        (
            "expires",
            key.expires_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "never".into()),
        ),
    ])
}
