//! dashctl's errors and the exit codes scripts can rely on.

use std::process::ExitCode;

/// What kind of failure ended the command; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// dashd failed or answered something unexpected (exit 1).
    Daemon,
    /// The input broke a rule, or confirmation was missing (exit 2).
    Invalid,
    /// dashd could not be reached (exit 3).
    Unreachable,
    /// The named record does not exist (exit 4).
    NotFound,
    /// A uniqueness or dependency rule refused the change (exit 5).
    Conflict,
    /// The admin socket refused this user (exit 6).
    Forbidden,
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Daemon => 1,
            Failure::Invalid => 2,
            Failure::Unreachable => 3,
            Failure::NotFound => 4,
            Failure::Conflict => 5,
            Failure::Forbidden => 6,
        })
    }

    /// The code shown in JSON error output (the API's codes where there is one).
    pub fn code(self) -> &'static str {
        use dash_core::api::codes;
        match self {
            Failure::Daemon => codes::INTERNAL,
            Failure::Invalid => codes::VALIDATION,
            Failure::Unreachable => "unreachable",
            Failure::NotFound => codes::NOT_FOUND,
            Failure::Conflict => codes::CONFLICT,
            Failure::Forbidden => codes::FORBIDDEN,
        }
    }
}

/// A failure with the message to show.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub failure: Failure,
    /// The API's error code when dashd sent one.
    pub code: Option<String>,
    pub message: String,
    /// The offending field, when dashd names one.
    pub field: Option<String>,
    /// Every problem, when there are several (printed one per line).
    pub details: Vec<String>,
}

impl CliError {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self {
            failure,
            code: None,
            message: message.into(),
            field: None,
            details: Vec::new(),
        }
    }
}

/// Result alias for commands.
pub type CliResult<T = ()> = Result<T, CliError>;
