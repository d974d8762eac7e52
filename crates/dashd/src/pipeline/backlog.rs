//! The bound on the work in the pipeline: inbound messages accepted and not yet handled,
//! plus the replies they caused that are not yet sent. Intake reserves a place before it
//! stores a message; handling it gives that place back and takes one per reply, and each
//! reply gives its place back when it is sent (or dead). Past the bound, for all bots or
//! for one bot, intake answers "busy, retry later" (503 with `Retry-After`): providers and
//! bridges retry, so the time from a customer's message to its reply stays bounded
//! instead of growing to minutes, and nothing accepted is ever dropped. The counts are
//! re-read from the database periodically, which also covers what operators queue or
//! cancel by hand.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use super::IngestError;

/// Counts of accepted messages not handled yet.
#[derive(Debug)]
pub struct Backlog {
    max_total: u32,
    max_per_bot: u32,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_bot: HashMap<Uuid, u32>,
}

/// A place taken in the backlog; given back on drop unless kept.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    backlog: &'a Backlog,
    bot_id: Uuid,
    kept: bool,
}

impl Reservation<'_> {
    /// The message was stored: the place stays taken until the message is handled.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.backlog.release(self.bot_id);
        }
    }
}

impl Backlog {
    /// A bound of `max_total` messages for all bots, `max_per_bot` for each.
    pub fn new(max_total: u32, max_per_bot: u32) -> Self {
        Self {
            max_total,
            max_per_bot,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Takes a place for one message of `bot_id`, or says how long to wait.
    pub(crate) fn reserve(&self, bot_id: Uuid) -> Result<Reservation<'_>, IngestError> {
        let mut counts = self.lock();
        let bot = counts.per_bot.get(&bot_id).copied().unwrap_or(0);
        if counts.total >= self.max_total {
            return Err(IngestError::Busy {
                reason: format!(
                    "dashd is busy: {} messages are waiting to be handled",
                    counts.total
                ),
                retry_after_s: retry_after(counts.total),
            });
        }
        if bot >= self.max_per_bot {
            return Err(IngestError::Busy {
                reason: format!(
                    "this bot is busy: {bot} of its messages are waiting to be handled"
                ),
                retry_after_s: retry_after(bot),
            });
        }
        counts.total += 1;
        counts.per_bot.insert(bot_id, bot + 1);
        Ok(Reservation {
            backlog: self,
            bot_id,
            kept: false,
        })
    }

    /// `count` replies of `bot_id` were queued.
    pub(crate) fn add(&self, bot_id: Uuid, count: usize) {
        if count == 0 {
            return;
        }
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let mut counts = self.lock();
        let bot = counts.per_bot.entry(bot_id).or_insert(0);
        *bot = bot.saturating_add(count);
        counts.total = counts.total.saturating_add(count);
    }

    /// A message of `bot_id` left the pipeline: handled (or failed for good), or sent
    /// (or dead).
    pub(crate) fn release(&self, bot_id: Uuid) {
        let mut counts = self.lock();
        if let Some(bot) = counts.per_bot.get_mut(&bot_id) {
            *bot = bot.saturating_sub(1);
            if *bot == 0 {
                counts.per_bot.remove(&bot_id);
            }
            counts.total = counts.total.saturating_sub(1);
        }
    }

    /// Replaces the counts with the database's (at start-up, and periodically, so a
    /// count can never drift for long).
    pub(crate) fn resync(&self, per_bot: Vec<(Uuid, u64)>) {
        let mut counts = self.lock();
        counts.per_bot = per_bot
            .into_iter()
            .map(|(bot, n)| (bot, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect();
        counts.total = counts
            .per_bot
            .values()
            .fold(0u32, |sum, n| sum.saturating_add(*n));
    }

    /// (all bots, the fullest bot).
    pub fn depth(&self) -> (u32, u32) {
        let counts = self.lock();
        let fullest = counts.per_bot.values().copied().max().unwrap_or(0);
        (counts.total, fullest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counts stay consistent even if a holder panicked (no await inside).
        match self.counts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Seconds a sender should wait. Room comes back as soon as messages drain (hundreds a
/// second), so one second; a bound several times exceeded (counts just re-read after a
/// provider outage) asks for longer, up to 30.
fn retry_after(depth: u32) -> u64 {
    u64::from(depth / 10_000).clamp(1, 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_apply_in_total_and_per_bot() {
        let backlog = Backlog::new(3, 2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        backlog.reserve(a).unwrap().keep();
        backlog.reserve(a).unwrap().keep();
        assert!(matches!(backlog.reserve(a), Err(IngestError::Busy { .. })));
        backlog.reserve(b).unwrap().keep();
        // Total reached: another bot is refused too.
        assert!(matches!(backlog.reserve(c), Err(IngestError::Busy { .. })));
        assert_eq!(backlog.depth(), (3, 2));
        backlog.release(a);
        backlog.reserve(c).unwrap().keep();
        assert_eq!(backlog.depth(), (3, 1));
    }

    #[test]
    fn a_reservation_not_kept_is_given_back() {
        let backlog = Backlog::new(1, 1);
        let bot = Uuid::new_v4();
        drop(backlog.reserve(bot).unwrap());
        backlog.reserve(bot).unwrap().keep();
        assert!(backlog.reserve(bot).is_err());
        // Releasing more than was taken never underflows.
        backlog.release(bot);
        backlog.release(bot);
        assert_eq!(backlog.depth(), (0, 0));
        backlog.resync(vec![(bot, 1)]);
        assert!(backlog.reserve(bot).is_err());
    }
}
