//! `dashctl queue list|show|retry|cancel` and `dashctl conversation list|show|resume|reset`.

use dash_core::api::{
    ConversationDetail, ConversationSummary, Direction, MessageRecord, QueueEntry,
};

use crate::chat::bot_path;
use crate::cli::{ConversationCommand, QueueCommand};
use crate::client::Client;
use crate::error::CliResult;
use crate::output::{Output, cells, details, table, time};
use crate::tenant::segment;

pub async fn queue(client: &Client, out: Output, command: QueueCommand) -> CliResult {
    match command {
        QueueCommand::List { bot, state, limit } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(bot) = &bot {
                query.push(format!("bot={}", segment(bot)));
            }
            if let Some(state) = &state {
                query.push(format!("state={}", segment(state)));
            }
            let entries: Vec<MessageRecord> = client
                .get(&format!("/v1/queue?{}", query.join("&")))
                .await?;
            out.print_list(&entries, "The outbox is empty.", || {
                let mut t = table(&["ID", "TO", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "TEXT"]);
                for e in &entries {
                    t.add_row(cells([
                        e.id.to_string(),
                        e.contact.clone(),
                        e.state.to_string(),
                        e.attempts.to_string(),
                        e.next_attempt_at.as_ref().map_or_else(|| "-".into(), time),
                        short(&e.body.text),
                    ]));
                }
                t
            })
        }
        QueueCommand::Show { id } => {
            let entry: QueueEntry = client.get(&format!("/v1/queue/{}", segment(&id))).await?;
            out.print(&entry, || {
                let m = &entry.message;
                let mut history = table(&["AT", "STATE", "DETAIL"]);
                for e in &entry.history {
                    history.add_row(cells([
                        time(&e.at),
                        e.state.to_string(),
                        e.detail.clone().unwrap_or_default(),
                    ]));
                }
                let mut sends = table(&["AT", "PROVIDER", "OUTCOME", "CODE", "LATENCY", "ERROR"]);
                for a in &entry.send_attempts {
                    sends.add_row(cells([
                        time(&a.at),
                        a.provider.clone(),
                        a.outcome.clone(),
                        a.error_code.clone().unwrap_or_else(|| "-".into()),
                        format!("{} ms", a.latency_ms),
                        a.error.clone().unwrap_or_default(),
                    ]));
                }
                let sends = if entry.send_attempts.is_empty() {
                    String::new()
                } else {
                    format!("\n\nsend attempts:\n{}", sends.trim_fmt())
                };
                format!(
                    "{}\n\n{}{sends}",
                    details(&[
                        ("id", m.id.to_string()),
                        ("to", m.contact.clone()),
                        ("state", m.state.to_string()),
                        ("attempts", m.attempts.to_string()),
                        ("provider", m.provider.clone().unwrap_or_else(|| "-".into())),
                        (
                            "provider id",
                            m.provider_message_id.clone().unwrap_or_else(|| "-".into())
                        ),
                        (
                            "next attempt",
                            m.next_attempt_at.as_ref().map_or_else(|| "-".into(), time)
                        ),
                        (
                            "last error",
                            m.last_error.clone().unwrap_or_else(|| "-".into())
                        ),
                        ("text", m.body.text.clone()),
                    ]),
                    history.trim_fmt()
                )
            })
        }
        QueueCommand::Retry { id } => {
            let record: MessageRecord = client
                .post(
                    &format!("/v1/queue/{}/retry", segment(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            out.print(&record, || {
                format!("message {} will be sent again", record.id)
            })
        }
        QueueCommand::Cancel { id } => {
            let record: MessageRecord = client
                .post(
                    &format!("/v1/queue/{}/cancel", segment(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            out.print(&record, || format!("message {} cancelled", record.id))
        }
    }
}

pub async fn conversation(client: &Client, out: Output, command: ConversationCommand) -> CliResult {
    match command {
        ConversationCommand::List { bot } => {
            let list: Vec<ConversationSummary> = client
                .get(&format!("{}/conversations", bot_path(&bot)))
                .await?;
            out.print_list(&list, "No conversations yet.", || {
                let mut t = table(&[
                    "CONTACT",
                    "NAME",
                    "STATUS",
                    "FLOW",
                    "STEP",
                    "VERSION",
                    "LAST MESSAGE",
                ]);
                for c in &list {
                    t.add_row(cells([
                        c.contact.clone(),
                        c.contact_name.clone().unwrap_or_else(|| "-".into()),
                        c.status.clone(),
                        c.flow.clone().unwrap_or_else(|| "-".into()),
                        c.step.clone().unwrap_or_else(|| "-".into()),
                        c.flow_version.map_or_else(|| "-".into(), |v| v.to_string()),
                        c.last_message_at.as_ref().map_or_else(|| "-".into(), time),
                    ]));
                }
                t
            })
        }
        ConversationCommand::Show { bot, contact } => {
            let detail: ConversationDetail = client
                .get(&format!(
                    "{}/conversations/{}",
                    bot_path(&bot),
                    segment(&contact)
                ))
                .await?;
            out.print(&detail, || {
                let s = &detail.summary;
                let mut transcript = String::new();
                for m in &detail.transcript {
                    let arrow = match m.direction {
                        Direction::In => "<",
                        Direction::Out => ">",
                    };
                    let state = match m.direction {
                        Direction::In => String::new(),
                        Direction::Out => format!("  [{}]", m.state),
                    };
                    let text = m.body.text.replace('\n', "\n                          ");
                    transcript
                        .push_str(&format!("{}  {arrow} {text}{state}\n", time(&m.created_at)));
                }
                let vars = detail
                    .state
                    .get("vars")
                    .map(|v| serde_json::to_string(v).unwrap_or_default())
                    .unwrap_or_else(|| "{}".into());
                format!(
                    "{}\n\n{}",
                    details(&[
                        ("contact", s.contact.clone()),
                        ("name", s.contact_name.clone().unwrap_or_else(|| "-".into())),
                        ("status", s.status.clone()),
                        ("flow", s.flow.clone().unwrap_or_else(|| "-".into())),
                        ("step", s.step.clone().unwrap_or_else(|| "-".into())),
                        (
                            "version",
                            s.flow_version.map_or_else(|| "-".into(), |v| v.to_string())
                        ),
                        ("variables", vars),
                    ]),
                    transcript.trim_end()
                )
            })
        }
        ConversationCommand::Resume { bot, contact } => {
            let result: serde_json::Value = client
                .post(
                    &format!(
                        "{}/conversations/{}/resume",
                        bot_path(&bot),
                        segment(&contact)
                    ),
                    &serde_json::json!({}),
                )
                .await?;
            out.print(&result, || format!("the bot answers {contact} again"))
        }
        ConversationCommand::Reset { bot, contact } => {
            out.confirm(&format!(
                "Forget the flow state of {bot}'s conversation with {contact}?"
            ))?;
            let result: serde_json::Value = client
                .post(
                    &format!(
                        "{}/conversations/{}/reset",
                        bot_path(&bot),
                        segment(&contact)
                    ),
                    &serde_json::json!({}),
                )
                .await?;
            out.print(&result, || {
                if result["reset"] == serde_json::Value::Bool(true) {
                    format!("conversation with {contact} reset")
                } else {
                    format!("there was no conversation state with {contact} to reset")
                }
            })
        }
    }
}

fn short(text: &str) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() > 40 {
        format!("{}…", one_line.chars().take(39).collect::<String>())
    } else {
        one_line
    }
}
