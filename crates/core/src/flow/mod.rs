//! Conversational flows: the document tenants write, its validation and compilation, and
//! the engine: a pure state machine `(state, event, now) -> (state, effects)`.

pub mod document;
pub mod hours;
pub mod template;
pub mod text;
pub mod triggers;

pub use document::{Document, FlowError, Format};
