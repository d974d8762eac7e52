//! `dashctl flow validate|import|list|show|export|activate|delete`.

use std::path::Path;

use dash_core::BotRef;
use dash_core::api::{FlowVersionDetail, FlowVersionInfo, ImportFlows};
use dash_core::flow::{Bundle, Capabilities, Document, FlowError, Format};
use serde::Serialize;

use crate::cli::{DocumentFormat, FlowCommand};
use crate::client::Client;
use crate::error::{CliError, CliResult, Failure};
use crate::output::{Output, cells, details, table, time};
use crate::tenant::segment;

pub async fn run(client: &Client, out: Output, command: FlowCommand) -> CliResult {
    match command {
        FlowCommand::Validate { .. } => Ok(()), // handled before connecting, see `validate`
        FlowCommand::Import {
            bot,
            file,
            activate,
        } => {
            let (source, format) = read(&file)?;
            let req = ImportFlows {
                source,
                format: Some(format),
                activate,
            };
            let imported: FlowVersionDetail = client
                .post(&format!("{}/flows", bot_path(&bot)), &req)
                .await
                .map_err(|err| in_file(err, &file))?;
            out.print(&imported, || {
                let state = if imported.info.active {
                    " and activated"
                } else {
                    ""
                };
                format!(
                    "{} imported as version {}{state} of {bot}\n{}",
                    file.display(),
                    imported.info.version,
                    flows_table(&imported.info)
                )
            })
        }
        FlowCommand::List { bot } => {
            let versions: Vec<FlowVersionInfo> =
                client.get(&format!("{}/flows", bot_path(&bot))).await?;
            let hint = format!(
                "No flow versions yet: import one with `dashctl flow import {bot} FILE --activate`."
            );
            out.print_list(&versions, &hint, || {
                let mut t = table(&[
                    "VERSION", "ACTIVE", "FORMAT", "FLOWS", "STEPS", "SIZE", "CREATED",
                ]);
                for v in &versions {
                    let ids: Vec<&str> = v.flows.iter().map(|f| f.id.as_str()).collect();
                    let steps: usize = v.flows.iter().map(|f| f.steps).sum();
                    t.add_row(cells([
                        v.version.to_string(),
                        if v.active { "*".into() } else { String::new() },
                        format_name(v.format).into(),
                        ids.join(", "),
                        steps.to_string(),
                        format!("{} B", v.size_bytes),
                        time(&v.created_at),
                    ]));
                }
                t
            })
        }
        FlowCommand::Show { bot, which } => {
            let detail = fetch(client, &bot, &which).await?;
            out.print(&detail, || {
                let info = &detail.info;
                format!(
                    "{}\n\n{}",
                    details(&[
                        ("bot", bot.to_string()),
                        ("version", info.version.to_string()),
                        (
                            "active",
                            if info.active {
                                "yes".into()
                            } else {
                                "no".into()
                            }
                        ),
                        ("format", format_name(info.format).into()),
                        ("size", format!("{} B", info.size_bytes)),
                        ("created", time(&info.created_at)),
                    ]),
                    flows_table(info)
                )
            })
        }
        FlowCommand::Export {
            bot,
            which,
            canonical,
            format,
        } => {
            let detail = fetch(client, &bot, &which).await?;
            let text = if canonical {
                let doc: Document =
                    serde_json::from_value(detail.document.clone()).map_err(|err| {
                        CliError::new(
                            Failure::Daemon,
                            format!("dashd sent a document this dashctl cannot read: {err}"),
                        )
                    })?;
                match format {
                    DocumentFormat::Toml => doc
                        .to_toml()
                        .map_err(|err| CliError::new(Failure::Daemon, err))?,
                    DocumentFormat::Json => serde_json::to_string_pretty(&doc)
                        .map_err(|err| CliError::new(Failure::Daemon, err.to_string()))?,
                }
            } else {
                detail.source.clone()
            };
            out.print_document(&detail, text)
        }
        FlowCommand::Activate {
            bot,
            number: version,
        } => {
            let info: FlowVersionInfo = client
                .post(
                    &format!("{}/flows/{version}/activate", bot_path(&bot)),
                    &serde_json::json!({}),
                )
                .await?;
            out.print(&info, || {
                format!("version {} of {bot} is now active", info.version)
            })
        }
        FlowCommand::Delete {
            bot,
            number: version,
        } => {
            out.confirm(&format!("Delete flow version {version} of {bot}?"))?;
            let info: FlowVersionInfo = client
                .delete(&format!("{}/flows/{version}", bot_path(&bot)))
                .await?;
            out.print(&info, || {
                format!("version {} of {bot} deleted", info.version)
            })
        }
    }
}

/// `flow validate`: local, no daemon needed.
pub fn validate(out: Output, files: &[std::path::PathBuf]) -> CliResult {
    #[derive(Serialize)]
    struct Report {
        file: String,
        valid: bool,
        flows: usize,
        steps: usize,
        errors: Vec<FlowError>,
    }
    let mut reports = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let result = read(file).map(|(text, format)| {
            Document::parse(&text, format)
                .map_err(|err| vec![err])
                .and_then(|doc| Bundle::compile(doc, 0, Capabilities::CURRENT))
        });
        let report = match result {
            Ok(Ok(bundle)) => Report {
                file: name,
                valid: true,
                flows: bundle.doc.flows.len(),
                steps: bundle.doc.flows.iter().map(|f| f.steps.len()).sum(),
                errors: Vec::new(),
            },
            Ok(Err(errors)) => Report {
                file: name,
                valid: false,
                flows: 0,
                steps: 0,
                errors,
            },
            Err(err) => Report {
                file: name,
                valid: false,
                flows: 0,
                steps: 0,
                errors: vec![FlowError::document(err.message)],
            },
        };
        reports.push(report);
    }
    let invalid = reports.iter().filter(|r| !r.valid).count();
    out.print(&reports, || {
        let mut lines = Vec::new();
        for r in &reports {
            if r.valid {
                lines.push(format!(
                    "{}: valid ({} flows, {} steps)",
                    r.file, r.flows, r.steps
                ));
            } else {
                for err in &r.errors {
                    eprintln!(
                        "{}: {}",
                        r.file,
                        crate::sanitize::sanitize(&err.to_string())
                    );
                }
            }
        }
        lines.join("\n")
    })?;
    if invalid > 0 {
        let mut err = CliError::new(
            Failure::Invalid,
            format!(
                "{invalid} of {} document{} invalid",
                reports.len(),
                if reports.len() == 1 { " is" } else { "s are" }
            ),
        );
        err.code = Some("invalid_flow".into());
        return Err(err);
    }
    Ok(())
}

async fn fetch(client: &Client, bot: &BotRef, version: &str) -> CliResult<FlowVersionDetail> {
    client
        .get(&format!("{}/flows/{}", bot_path(bot), segment(version)))
        .await
}

fn bot_path(bot: &BotRef) -> String {
    match bot {
        BotRef::Id(id) => format!("/v1/bots/{id}"),
        BotRef::Path { tenant, bot } => {
            format!("/v1/tenants/{}/bots/{}", segment(tenant), segment(bot))
        }
    }
}

/// Reads a document; `.json` files are JSON, `.toml` TOML, others by their first character.
fn read(file: &Path) -> CliResult<(String, Format)> {
    let text = std::fs::read_to_string(file).map_err(|err| {
        CliError::new(
            Failure::Invalid,
            format!("cannot read {}: {err}", file.display()),
        )
    })?;
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("toml") => Format::Toml,
        _ => Format::sniff(&text),
    };
    Ok((text, format))
}

/// Prefixes each problem dashd found with the file it came from.
fn in_file(mut err: CliError, file: &Path) -> CliError {
    for detail in &mut err.details {
        *detail = format!("{}: {detail}", file.display());
    }
    err
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Toml => "toml",
        Format::Json => "json",
    }
}

fn flows_table(info: &FlowVersionInfo) -> String {
    let mut t = table(&["FLOW", "TRIGGERS", "STEPS"]);
    for flow in &info.flows {
        t.add_row(cells([
            flow.id.clone(),
            flow.triggers.to_string(),
            flow.steps.to_string(),
        ]));
    }
    t.trim_fmt()
}
