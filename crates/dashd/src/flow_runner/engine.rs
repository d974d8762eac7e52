//! The part both isolation modes share: compiled flow versions kept under a memory
//! budget (least recently used first out), and one engine step run against them with
//! panics turned into errors. A worker process owns one [`BundleCache`]; the in-process
//! mode shares one behind a mutex and compiles outside it.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use dash_core::flow::Versions;
use dash_core::flow::engine::Limits;
use dash_core::flow::engine::step_within;
use dash_core::flow::{
    Bundle, Capabilities, Context, ConversationState, Document, Effect, Event, FlowError,
};

use super::wire::{BrokenFlow, Response};
use super::{FlowKey, StepContext};

/// Cost of an entry besides the bundle's own estimate (and all of a broken one's).
const ENTRY_OVERHEAD: usize = 4096;

/// A flow version compiled from its document, or the count of its errors.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Ready(Arc<Bundle>),
    Broken(usize),
}

/// Compiles the JSON of a flow document as version `key.version`; returns it with the
/// cache entry's estimated size in bytes.
pub(crate) fn compile(key: &FlowKey, document: &str) -> (Compiled, usize) {
    let doc = match serde_json::from_str::<Document>(document) {
        Ok(doc) => doc,
        Err(_) => return (Compiled::Broken(1), ENTRY_OVERHEAD),
    };
    // Running a stored version: its fan-out was checked at import against the caps
    // configured then, and the engine enforces today's caps as it runs.
    let compile = || Bundle::compile_within(doc, key.version, Capabilities::CURRENT, &UNCAPPED);
    match catch_unwind(AssertUnwindSafe(compile)) {
        Ok(Ok(bundle)) => {
            let size = bundle.approx_size_bytes().saturating_add(ENTRY_OVERHEAD);
            (Compiled::Ready(Arc::new(bundle)), size)
        }
        Ok(Err(errors)) => (Compiled::Broken(errors.len()), ENTRY_OVERHEAD),
        Err(_) => (Compiled::Broken(1), ENTRY_OVERHEAD),
    }
}

/// No fan-out cap: what compiling a stored version checks.
const UNCAPPED: Limits = Limits {
    max_messages: u32::MAX,
    max_http: u32::MAX,
    max_steps: u32::MAX,
};

/// Validates the JSON of a flow document: every problem found, none when it compiles.
pub(crate) fn validate(document: &str, limits: &Limits) -> Vec<FlowError> {
    let doc = match serde_json::from_str::<Document>(document) {
        Ok(doc) => doc,
        Err(err) => return vec![FlowError::document(err.to_string())],
    };
    let compile = || Bundle::compile_within(doc, 0, Capabilities::CURRENT, limits);
    match catch_unwind(AssertUnwindSafe(compile)) {
        Ok(Ok(_)) => Vec::new(),
        Ok(Err(errors)) => errors,
        Err(_) => vec![FlowError::document("the flow compiler panicked")],
    }
}

/// Compiled flow versions by key, bounded by the sum of their estimated sizes.
#[derive(Debug)]
pub(crate) struct BundleCache {
    budget: usize,
    used: usize,
    clock: u64,
    entries: HashMap<FlowKey, Entry>,
}

#[derive(Debug)]
struct Entry {
    compiled: Compiled,
    size: usize,
    last_used: u64,
}

impl BundleCache {
    /// An empty cache holding at most `budget` estimated bytes (always at least one entry).
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The entry for `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &FlowKey) -> Option<Compiled> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.get_mut(key)?;
        entry.last_used = clock;
        Some(entry.compiled.clone())
    }

    /// Adds an entry, then drops the least recently used others until within budget.
    pub(crate) fn insert(&mut self, key: FlowKey, compiled: Compiled, size: usize) {
        self.clock += 1;
        let entry = Entry {
            compiled,
            size,
            last_used: self.clock,
        };
        if let Some(old) = self.entries.insert(key.clone(), entry) {
            self.used -= old.size;
        }
        self.used += size;
        while self.used > self.budget && self.entries.len() > 1 {
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = self.entries.remove(&oldest) {
                self.used -= old.size;
            }
        }
    }

    /// Estimated bytes held.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Number of versions held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The versions one step can use: the bot's active one and the conversation's own.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub active: Option<Arc<Bundle>>,
    pub current: Option<Arc<Bundle>>,
    pub broken: Vec<BrokenFlow>,
}

impl Versions for Loaded {
    fn active(&self) -> Option<&Bundle> {
        self.active.as_deref()
    }

    fn get(&self, version: u32) -> Option<&Bundle> {
        [&self.current, &self.active]
            .into_iter()
            .flatten()
            .find(|b| b.version == version)
            .map(|b| b.as_ref())
    }
}

impl Loaded {
    /// Sets `active` (or `current`) from a cache entry.
    pub(crate) fn set(&mut self, key: &FlowKey, compiled: Compiled, active: bool) {
        let slot = if active {
            &mut self.active
        } else {
            &mut self.current
        };
        match compiled {
            Compiled::Ready(bundle) => *slot = Some(bundle),
            Compiled::Broken(errors) => {
                if !self.broken.iter().any(|b| b.version == key.version) {
                    self.broken.push(BrokenFlow {
                        version: key.version,
                        errors,
                    });
                }
            }
        }
    }
}

/// Runs the engine once; a panic (an engine bug) becomes [`Response::Failed`].
pub(crate) fn run(
    versions: Loaded,
    state: ConversationState,
    event: &Event,
    context: &StepContext,
) -> Response<Effect> {
    let ctx = Context {
        now: context.now,
        timezone: context.timezone,
        bot: &context.bot,
        contact: &context.contact,
    };
    let step = || step_within(&versions, state, event, &ctx, &context.limits);
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(outcome) => Response::Done {
            state: outcome.state,
            effects: outcome.effects,
            broken: versions.broken,
        },
        Err(_) => Response::Failed {
            message: "the flow engine panicked".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> FlowKey {
        FlowKey {
            version: n,
            sha256: format!("{n:064x}"),
        }
    }

    #[test]
    fn evicts_least_recently_used_beyond_the_budget() {
        let mut cache = BundleCache::new(3 * ENTRY_OVERHEAD);
        for n in 1..=3 {
            cache.insert(key(n), Compiled::Broken(1), ENTRY_OVERHEAD);
        }
        assert!(cache.get(&key(1)).is_some());
        cache.insert(key(4), Compiled::Broken(1), ENTRY_OVERHEAD);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(2)).is_none(), "2 was least recently used");
        assert!(cache.get(&key(1)).is_some());
        assert_eq!(cache.used(), 3 * ENTRY_OVERHEAD);
        // An entry over the whole budget is still kept, alone.
        cache.insert(key(5), Compiled::Broken(1), 10 * ENTRY_OVERHEAD);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&key(5)).is_some());
    }
}
