//! The protocol between dashd and its flow workers: frames of a 4-byte big-endian length
//! followed by that many bytes of JSON, one request and one response at a time.
//!
//! The worker greets with [`Response::Hello`] (protocol number and dashd version, so a
//! worker started from an upgraded executable is refused, not misread). Each
//! [`Request::Step`] names the compiled flow versions it needs by [`FlowKey`]; a worker
//! that does not hold one answers [`Response::Missing`] and the request is sent again
//! with those documents included. Engine types without `Deserialize` cross as the
//! mirror types below, converted exhaustively so that a new variant fails to compile
//! here instead of failing at run time.

use std::io::{self, Read, Write};

use dash_core::flow::document::Media;
use dash_core::flow::engine::Limits;
use dash_core::flow::engine::{
    Choice, EndReason, ExternalAction, HttpOutcome, HttpRequest, Outbound, StartReason, Timer,
};
use dash_core::flow::{ConversationState, Effect, Event, FlowError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{FlowKey, StepContext};

/// Raised when a message changes shape.
pub(crate) const PROTOCOL: u32 = 1;

/// Largest frame either side accepts (a request carries at most two flow documents).
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// What dashd asks a worker.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request {
    Step(Box<StepWire>),
    /// Validate and compile a document (at import), reporting its problems.
    Compile {
        document: String,
        /// The fan-out caps the document must fit (dashd's configuration).
        #[serde(default)]
        limits: Limits,
    },
}

/// [`Request::Compile`] as dashd writes it.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "compile")]
pub(crate) struct CompileOut<'a> {
    pub document: &'a str,
    pub limits: &'a Limits,
}

/// One engine step as the worker reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct StepWire {
    pub active: Option<FlowKey>,
    pub current: Option<FlowKey>,
    #[serde(default)]
    pub documents: Vec<DocumentWire>,
    pub state: ConversationState,
    pub event: EventWire,
    pub context: StepContext,
}

/// A flow document sent along with a step: the JSON of a [`dash_core::flow::Document`].
#[derive(Debug, Deserialize)]
pub(crate) struct DocumentWire {
    pub key: FlowKey,
    pub document: String,
}

/// [`StepWire`] as dashd writes it, borrowing from the caller's request.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "step")]
pub(crate) struct StepOut<'a> {
    pub active: Option<&'a FlowKey>,
    pub current: Option<&'a FlowKey>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<DocumentOut<'a>>,
    pub state: &'a ConversationState,
    pub event: EventWire,
    pub context: &'a StepContext,
}

/// [`DocumentWire`] as dashd writes it.
#[derive(Debug, Serialize)]
pub(crate) struct DocumentOut<'a> {
    pub key: &'a FlowKey,
    pub document: &'a str,
}

/// What a worker answers. `E` is [`Effect`] when written and [`EffectWire`] when read.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Response<E> {
    /// First frame after start.
    Hello { protocol: u32, version: String },
    /// The step ran. `broken` lists versions whose document no longer compiles; the
    /// engine ran without them.
    Done {
        state: ConversationState,
        effects: Vec<E>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        broken: Vec<BrokenFlow>,
    },
    /// The answer to [`Request::Compile`]: empty when the document is valid.
    Compiled { errors: Vec<FlowError> },
    /// The worker does not hold these versions: send again with their documents.
    Missing { keys: Vec<FlowKey> },
    /// The request could not be served (malformed, an unknown time zone, a panic).
    Failed { message: String },
}

/// A flow version whose document did not compile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BrokenFlow {
    pub version: u32,
    pub errors: usize,
}

/// This dashd's version, as exchanged in [`Response::Hello`].
pub(crate) fn dashd_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

// ---- framing ----

/// Reads one frame; `None` at a clean end of input. A frame over [`MAX_FRAME`] is
/// skipped and reported as [`FrameError::TooLarge`].
pub(crate) fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(FrameError::Io(err)),
    }
    let len = frame_len(len);
    if len > MAX_FRAME {
        io::copy(&mut input.take(len as u64), &mut io::sink()).map_err(FrameError::Io)?;
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).map_err(FrameError::Io)?;
    Ok(Some(body))
}

/// Writes one frame and flushes it.
pub(crate) fn write_frame(output: &mut impl Write, body: &[u8]) -> io::Result<()> {
    output.write_all(&frame_header(body.len())?)?;
    output.write_all(body)?;
    output.flush()
}

/// Reads one frame; `None` when the other side closed before a frame began.
pub(crate) async fn read_frame_async(
    input: &mut (impl AsyncRead + Unpin),
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len).await {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(FrameError::Io(err)),
    }
    let len = frame_len(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).await.map_err(FrameError::Io)?;
    Ok(Some(body))
}

/// Writes one frame and flushes it.
pub(crate) async fn write_frame_async(
    output: &mut (impl AsyncWrite + Unpin),
    body: &[u8],
) -> io::Result<()> {
    output.write_all(&frame_header(body.len())?).await?;
    output.write_all(body).await?;
    output.flush().await
}

fn frame_len(header: [u8; 4]) -> usize {
    // u32 always fits in usize on the 32- and 64-bit targets dashd supports.
    usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX)
}

fn frame_header(len: usize) -> io::Result<[u8; 4]> {
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("{0}")]
    Io(io::Error),
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
}

// ---- mirrors of engine types ----

/// [`Event`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum EventWire {
    Message {
        text: String,
        reply_id: Option<String>,
    },
    Timer {
        id: u64,
    },
    Http {
        request_id: u64,
        outcome: HttpOutcomeWire,
    },
    Resume,
    Takeover,
}

/// [`HttpOutcome`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum HttpOutcomeWire {
    Response { status: u16, body: Value },
    Failed { error: String },
}

impl From<&Event> for EventWire {
    fn from(event: &Event) -> Self {
        match event {
            Event::Message { text, reply_id } => EventWire::Message {
                text: text.clone(),
                reply_id: reply_id.clone(),
            },
            Event::Timer { id } => EventWire::Timer { id: *id },
            Event::Http {
                request_id,
                outcome,
            } => EventWire::Http {
                request_id: *request_id,
                outcome: match outcome {
                    HttpOutcome::Response { status, body } => HttpOutcomeWire::Response {
                        status: *status,
                        body: body.clone(),
                    },
                    HttpOutcome::Failed { error } => HttpOutcomeWire::Failed {
                        error: error.clone(),
                    },
                },
            },
            Event::Resume => EventWire::Resume,
            Event::Takeover => EventWire::Takeover,
        }
    }
}

impl From<EventWire> for Event {
    fn from(event: EventWire) -> Self {
        match event {
            EventWire::Message { text, reply_id } => Event::Message { text, reply_id },
            EventWire::Timer { id } => Event::Timer { id },
            EventWire::Http {
                request_id,
                outcome,
            } => Event::Http {
                request_id,
                outcome: match outcome {
                    HttpOutcomeWire::Response { status, body } => {
                        HttpOutcome::Response { status, body }
                    }
                    HttpOutcomeWire::Failed { error } => HttpOutcome::Failed { error },
                },
            },
            EventWire::Resume => Event::Resume,
            EventWire::Takeover => Event::Takeover,
        }
    }
}

/// [`Effect`] as read back from its own `Serialize` output.
#[derive(Debug, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub(crate) enum EffectWire {
    Send(OutboundWire),
    ScheduleTimer(Timer),
    CancelTimer {
        id: u64,
    },
    Http(HttpRequestWire),
    Handoff {
        flow: String,
        step: String,
    },
    ConversationStarted {
        flow: String,
        version: u32,
        reason: StartReasonWire,
    },
    ConversationEnded {
        reason: EndReasonWire,
    },
    Action {
        action: ExternalActionWire,
        payload: Value,
        flow: String,
        step: String,
        #[serde(default)]
        vars: serde_json::Map<String, Value>,
    },
    Warning {
        message: String,
    },
}

/// [`Outbound`] on the wire.
#[derive(Debug, Deserialize)]
pub(crate) struct OutboundWire {
    text: String,
    #[serde(default)]
    media: Option<Media>,
    delay_ms: u64,
    #[serde(default)]
    choices: Vec<ChoiceWire>,
}

/// [`Choice`] on the wire.
#[derive(Debug, Deserialize)]
pub(crate) struct ChoiceWire {
    id: String,
    label: String,
}

/// [`HttpRequest`] on the wire.
#[derive(Debug, Deserialize)]
pub(crate) struct HttpRequestWire {
    request_id: u64,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    timeout_ms: u64,
}

/// [`StartReason`] on the wire.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StartReasonWire {
    Trigger,
    Default,
    OutOfHours,
    Command,
}

/// [`EndReason`] on the wire.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EndReasonWire {
    Completed,
    Command,
    RetriesExhausted,
    Idle,
    Expired,
    HttpFailed,
    Resumed,
    VersionRemoved,
    Error,
}

/// [`ExternalAction`] on the wire.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExternalActionWire {
    CreateOrder,
    Notify,
    Llm,
}

impl From<EffectWire> for Effect {
    fn from(effect: EffectWire) -> Self {
        match effect {
            EffectWire::Send(out) => Effect::Send(Outbound {
                text: out.text,
                media: out.media,
                delay_ms: out.delay_ms,
                choices: out
                    .choices
                    .into_iter()
                    .map(|c| Choice {
                        id: c.id,
                        label: c.label,
                    })
                    .collect(),
            }),
            EffectWire::ScheduleTimer(timer) => Effect::ScheduleTimer(timer),
            EffectWire::CancelTimer { id } => Effect::CancelTimer { id },
            EffectWire::Http(req) => Effect::Http(HttpRequest {
                request_id: req.request_id,
                method: req.method,
                url: req.url,
                headers: req.headers,
                body: req.body,
                timeout_ms: req.timeout_ms,
            }),
            EffectWire::Handoff { flow, step } => Effect::Handoff { flow, step },
            EffectWire::ConversationStarted {
                flow,
                version,
                reason,
            } => Effect::ConversationStarted {
                flow,
                version,
                reason: match reason {
                    StartReasonWire::Trigger => StartReason::Trigger,
                    StartReasonWire::Default => StartReason::Default,
                    StartReasonWire::OutOfHours => StartReason::OutOfHours,
                    StartReasonWire::Command => StartReason::Command,
                },
            },
            EffectWire::ConversationEnded { reason } => Effect::ConversationEnded {
                reason: match reason {
                    EndReasonWire::Completed => EndReason::Completed,
                    EndReasonWire::Command => EndReason::Command,
                    EndReasonWire::RetriesExhausted => EndReason::RetriesExhausted,
                    EndReasonWire::Idle => EndReason::Idle,
                    EndReasonWire::Expired => EndReason::Expired,
                    EndReasonWire::HttpFailed => EndReason::HttpFailed,
                    EndReasonWire::Resumed => EndReason::Resumed,
                    EndReasonWire::VersionRemoved => EndReason::VersionRemoved,
                    EndReasonWire::Error => EndReason::Error,
                },
            },
            EffectWire::Action {
                action,
                payload,
                flow,
                step,
                vars,
            } => Effect::Action {
                action: match action {
                    ExternalActionWire::CreateOrder => ExternalAction::CreateOrder,
                    ExternalActionWire::Notify => ExternalAction::Notify,
                    ExternalActionWire::Llm => ExternalAction::Llm,
                },
                payload,
                flow,
                step,
                vars,
            },
            EffectWire::Warning { message } => Effect::Warning { message },
        }
    }
}
