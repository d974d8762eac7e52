//! Conversational flows: the document tenants write ([`document`]), its validation and
//! compilation ([`bundle`]), and the engine ([`engine`]): a pure state machine
//! `(state, event, now) -> (state, effects)` that dashd drives.

pub mod bundle;
pub mod document;
pub mod engine;
pub mod hours;
pub mod template;
pub mod text;
pub mod triggers;

pub use bundle::{Bundle, Capabilities};
pub use document::{Document, FlowError, Format};
pub use engine::{
    Context, ConversationState, Effect, Event, Limits, Outcome, Versions, step, step_within,
};
