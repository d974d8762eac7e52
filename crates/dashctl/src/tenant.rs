//! `dashctl tenant create|list|show|update|delete`.

use dash_core::Tenant;
use dash_core::api::{CreateTenant, TenantDeleted, UpdateTenant};

use crate::cli::TenantCommand;
use crate::client::Client;
use crate::error::{CliError, CliResult, Failure};
use crate::output::{Output, cells, details, table, time};

pub async fn run(client: &Client, out: Output, command: TenantCommand) -> CliResult {
    match command {
        TenantCommand::Create { slug, name } => {
            let tenant: Tenant = client
                .post("/v1/tenants", &CreateTenant { slug, name })
                .await?;
            out.print(&tenant, || {
                format!("tenant {} created\n{}", tenant.slug, show(&tenant))
            })
        }
        TenantCommand::List => {
            let tenants: Vec<Tenant> = client.get("/v1/tenants").await?;
            out.print_list(
                &tenants,
                "No tenants yet: create one with `dashctl tenant create SLUG`.",
                || {
                    let mut t = table(&["SLUG", "NAME", "STATUS", "CREATED"]);
                    for tenant in &tenants {
                        t.add_row(cells([
                            tenant.slug.clone(),
                            tenant.name.clone(),
                            tenant.status.to_string(),
                            time(&tenant.created_at),
                        ]));
                    }
                    t
                },
            )
        }
        TenantCommand::Show { tenant } => {
            let tenant: Tenant = client.get(&path(&tenant)).await?;
            out.print(&tenant, || show(&tenant))
        }
        TenantCommand::Update {
            tenant,
            name,
            status,
            api_rate,
        } => {
            let changes = UpdateTenant {
                name,
                status,
                api_rate_per_minute: api_rate,
            };
            if changes.is_empty() {
                return Err(CliError::new(
                    Failure::Invalid,
                    "nothing to change: give --name, --status or --api-rate",
                ));
            }
            let tenant: Tenant = client.patch(&path(&tenant), &changes).await?;
            out.print(&tenant, || {
                format!("tenant {} updated\n{}", tenant.slug, show(&tenant))
            })
        }
        TenantCommand::Delete { tenant, force } => {
            let record: Tenant = client.get(&path(&tenant)).await?;
            let bots: Vec<dash_core::Bot> = client
                .get(&format!("{}/bots", path(&record.id.to_string())))
                .await?;
            if !force && !bots.is_empty() {
                // Refuse before asking: the answer would not matter.
                return Err(CliError::new(
                    Failure::Conflict,
                    format!(
                        "tenant {} still has {} bot(s): delete them first, or pass --force to delete them with it",
                        record.slug,
                        bots.len()
                    ),
                ));
            }
            let question = match bots.len() {
                0 => format!("Delete tenant {} ({})?", record.slug, record.name),
                n => format!(
                    "Delete tenant {} ({}) and its {n} bot(s), with their flows?",
                    record.slug, record.name
                ),
            };
            out.confirm(&question)?;
            let url = format!("{}?force={force}", path(&record.id.to_string()));
            let deleted: TenantDeleted = client.delete(&url).await?;
            out.print(&deleted, || match deleted.bots_deleted {
                0 => format!("tenant {} deleted", deleted.tenant.slug),
                n => format!("tenant {} deleted with its {n} bot(s)", deleted.tenant.slug),
            })
        }
    }
}

fn path(tenant: &str) -> String {
    format!("/v1/tenants/{}", segment(tenant))
}

/// Keeps a user-typed value inside one URL path segment.
pub fn segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn show(tenant: &Tenant) -> String {
    details(&[
        ("slug", tenant.slug.clone()),
        ("name", tenant.name.clone()),
        ("status", tenant.status.to_string()),
        (
            "api rate",
            tenant
                .api_rate_per_minute
                .map_or_else(|| "server default".to_owned(), |rate| format!("{rate}/min")),
        ),
        ("id", tenant.id.to_string()),
        ("created", time(&tenant.created_at)),
        ("updated", time(&tenant.updated_at)),
    ])
}
