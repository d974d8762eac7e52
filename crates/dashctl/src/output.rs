//! Printing results: tables for people, JSON (the admin API's own field names) for
//! scripts, and confirmations before destructive commands. Everything printed for people
//! goes through [`sanitize`], since much of it was written by a tenant or a customer.

use std::io::{BufRead, IsTerminal, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::{CliError, CliResult, Failure};
use crate::sanitize::sanitize;

/// Where and how results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: OutputFormat,
    /// `--yes` was given.
    pub assume_yes: bool,
}

impl Output {
    /// Prints `value` as JSON, or the human rendering `human` builds, sanitised.
    pub fn print<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> CliResult {
        // Cells are sanitised when the table is built (so widths are right); this catches
        // every other piece of text, whoever built it.
        self.write(value, || sanitize(&human()).into_owned())
    }

    /// Like [`Output::print`] for a document meant to be saved and read back (a flow's
    /// source): sanitised on a terminal, byte for byte when stdout is a file or a pipe,
    /// where no terminal interprets it and changing it would break the round trip.
    pub fn print_document<T: Serialize>(&self, value: &T, text: String) -> CliResult {
        if std::io::stdout().is_terminal() {
            self.print(value, || text)
        } else {
            self.write(value, || text)
        }
    }

    fn write<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> CliResult {
        let text = match self.format {
            OutputFormat::Json => serde_json::to_string_pretty(value).map_err(|err| {
                CliError::new(Failure::Daemon, format!("cannot print JSON: {err}"))
            })?,
            OutputFormat::Table => human(),
        };
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`dashctl ... | head`) is not an error worth reporting.
        let _ = writeln!(stdout, "{}", text.trim_end());
        Ok(())
    }

    /// Prints a list: a table, a hint on stderr when empty, or a JSON array.
    pub fn print_list<T: Serialize>(
        &self,
        items: &[T],
        empty_hint: &str,
        table: impl FnOnce() -> Table,
    ) -> CliResult {
        if items.is_empty() && self.format == OutputFormat::Table {
            eprintln!("{empty_hint}");
            return Ok(());
        }
        self.print(&items, || table().trim_fmt())
    }

    /// Asks before a destructive action: `--yes` skips the question; without a terminal
    /// the action is refused.
    pub fn confirm(&self, question: &str) -> CliResult {
        if self.assume_yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            return Err(CliError::new(
                Failure::Invalid,
                format!(
                    "{question} Not confirmed: stdin is not a terminal, pass --yes to go ahead"
                ),
            ));
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|err| {
                CliError::new(Failure::Invalid, format!("cannot read the answer: {err}"))
            })?;
        if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            Ok(())
        } else {
            Err(CliError::new(
                Failure::Invalid,
                "aborted: nothing was changed",
            ))
        }
    }
}

/// A borderless table with a header row, in the style of `kubectl get`.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    tidy(&mut table);
    table
}

/// A table row with its cells sanitised (see [`crate::sanitize`]).
pub fn cells<S: AsRef<str>>(cells: impl IntoIterator<Item = S>) -> Vec<String> {
    cells
        .into_iter()
        .map(|cell| sanitize(cell.as_ref()).into_owned())
        .collect()
}

/// A two-column FIELD / VALUE table for one record.
pub fn details(rows: &[(&str, String)]) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic);
    for (field, value) in rows {
        table.add_row(vec![format!("{field}:"), sanitize(value).into_owned()]);
    }
    tidy(&mut table);
    table.trim_fmt()
}

/// Left-aligns columns with two spaces between them and none before the first.
fn tidy(table: &mut Table) {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
}

/// A timestamp as people read it: UTC, to the second.
pub fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration in seconds as `3d 4h`, `5m 2s`...
pub fn uptime(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_naturally() {
        assert_eq!(uptime(5), "5s");
        assert_eq!(uptime(125), "2m 5s");
        assert_eq!(uptime(3 * 3600 + 120), "3h 2m");
        assert_eq!(uptime(2 * 86_400 + 3600), "2d 1h");
    }
}
