//! Aggregates kept in memory between commands, verified rather than trusted.
//!
//! A bus built with a cache (`CommandBus::new_cached`) keeps each aggregate it committed or
//! created, with the sequence of its last event, in a bounded LRU map, for a minute at most
//! ([`MAX_AGE`]). The next command on that aggregate takes it from there instead of reading
//! its events, and the kept state is only ever a guess, checked by the write it leads to:
//!
//! - a command that appends is checked by the append itself: its events are numbered after
//!   the kept sequence, and the events' primary key refuses them when another writer (this
//!   instance's other task, another instance) appended meanwhile: the optimistic lock's
//!   conflict, after which the command runs against the stored events;
//! - any other outcome (no events, a refusal by the aggregate or an inline read model, an
//!   error) could be the stale state's doing, which no write checked: the command runs again
//!   against the stored events, as it would have without a cache.
//!
//! So a stale entry costs a second run, never a wrong answer. An entry is taken out while a
//! command uses it and put back (newer only) once that command has committed, so two tasks
//! never share one aggregate's state.
//!
//! Personal data: a member's state holds their address and name, opened from the log with
//! their data key (`store::personal`). Erasure must not leave them in memory: a member's
//! `MemberErased` clears them from the state this instance keeps, and another instance drops
//! what it kept within [`MAX_AGE`]. Licenses (activation addresses, shredded without an event
//! of their own) are not kept.

use std::cell::Cell;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aggregates::cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore,
};
use aggregates::cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use lru::LruCache;

/// How long a kept state may be used: a burst of one subscription's Stripe events, or a
/// member's, takes seconds. It also bounds how long another instance keeps an erased member's
/// data in memory (this one's erasure clears it, see `Member`'s `MemberErased`).
pub(super) const MAX_AGE: Duration = Duration::from_secs(60);

tokio::task_local! {
    /// What the command attempt running on this task may do, and did, with the cache.
    pub(super) static ATTEMPT: Cell<CacheUse>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CacheUse {
    /// May take its aggregate from the cache.
    Allowed,
    /// Took it from the cache: its outcome is trusted only if it appended.
    Used,
    /// Must read the stored events (a re-run after an unverified cached run).
    Bypass,
}

/// An event store that serves aggregates from memory when it may (see the module's text).
pub(super) struct CachingStore<R: PersistedEventRepository, A: Aggregate> {
    inner: PersistedEventStore<R, A>,
    kept: Option<Arc<Kept<A>>>,
}

/// The loaded aggregate, and whether it came from the cache.
pub(super) struct Context<A: Aggregate> {
    inner: EventStoreAggregateContext<A>,
    cached: bool,
}

impl<A: Aggregate> AggregateContext<A> for Context<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.inner.aggregate
    }
}

impl<R: PersistedEventRepository, A: Aggregate> CachingStore<R, A> {
    /// `inner` must keep no snapshots (`PersistedEventStore::new_event_store`): its commit then
    /// reads only the context's id and sequence, and the aggregate is kept here instead.
    pub(super) fn new(inner: PersistedEventStore<R, A>, kept: Option<Arc<Kept<A>>>) -> Self {
        Self { inner, kept }
    }

    /// The kept state of the aggregate, if this attempt may use one and one is kept.
    fn take(&self, aggregate_id: &str) -> Option<Cached<A>> {
        let kept = self.kept.as_ref()?;
        let allowed = ATTEMPT
            .try_with(|attempt| attempt.get() == CacheUse::Allowed)
            .unwrap_or(false);
        if !allowed {
            return None;
        }
        let taken = kept.take(aggregate_id);
        crate::metrics::aggregate_cache(A::TYPE, if taken.is_some() { "hit" } else { "miss" });
        if taken.is_some() {
            ATTEMPT.with(|attempt| attempt.set(CacheUse::Used));
        }
        taken
    }
}

/// Aggregates in memory, the least recently used dropped first, none used once older than
/// `max_age`.
pub(super) struct Kept<A> {
    entries: Mutex<LruCache<String, Cached<A>>>,
    max_age: Duration,
}

struct Cached<A> {
    aggregate: A,
    /// The sequence of its last event.
    sequence: usize,
    kept_at: Instant,
}

impl<A> Kept<A> {
    pub(super) fn new(capacity: NonZeroUsize, max_age: Duration) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            max_age,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, LruCache<String, Cached<A>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `aggregate` as of `sequence`, unless a newer state of it is kept already (two
    /// commands that read it from the log can commit in either order).
    pub(super) fn keep(&self, aggregate_id: String, aggregate: A, sequence: usize) {
        let mut entries = self.entries();
        if entries
            .peek(&aggregate_id)
            .is_some_and(|kept| kept.sequence >= sequence)
        {
            return;
        }
        entries.put(
            aggregate_id,
            Cached {
                aggregate,
                sequence,
                kept_at: Instant::now(),
            },
        );
    }

    /// Takes the aggregate out: while a command uses it, nobody else does.
    fn take(&self, aggregate_id: &str) -> Option<Cached<A>> {
        let taken = self.entries().pop(aggregate_id)?;
        (taken.kept_at.elapsed() <= self.max_age).then_some(taken)
    }
}

impl<R, A> EventStore<A> for CachingStore<R, A>
where
    R: PersistedEventRepository,
    A: Aggregate,
{
    type AC = Context<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.inner.load_events(aggregate_id).await
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Context<A>, AggregateError<A::Error>> {
        if let Some(kept) = self.take(aggregate_id) {
            return Ok(Context {
                inner: EventStoreAggregateContext {
                    aggregate_id: aggregate_id.to_owned(),
                    aggregate: kept.aggregate,
                    current_sequence: kept.sequence,
                    current_snapshot: None,
                },
                cached: true,
            });
        }
        Ok(Context {
            inner: self.inner.load_aggregate(aggregate_id).await?,
            cached: false,
        })
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        mut context: Context<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let Some(kept) = &self.kept else {
            return self.inner.commit(events, context.inner, metadata).await;
        };
        let aggregate_id = context.inner.aggregate_id.clone();
        if events.is_empty() {
            // Nothing to write. A state just read from the log is verified: keep it. A cached
            // one is not, and the bus runs the command again against the log.
            if !context.cached {
                kept.keep(
                    aggregate_id,
                    context.inner.aggregate,
                    context.inner.current_sequence,
                );
            }
            return Ok(Vec::new());
        }
        // The events are applied to it already (cqrs-es's sink applies what it is given).
        let aggregate = std::mem::take(&mut context.inner.aggregate);
        let sequence = context.inner.current_sequence + events.len();
        let committed = self.inner.commit(events, context.inner, metadata).await?;
        kept.keep(aggregate_id, aggregate, sequence);
        Ok(committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(capacity: usize) -> Kept<&'static str> {
        Kept::new(
            NonZeroUsize::new(capacity).expect("not zero"),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_kept_state_is_replaced_only_by_a_newer_one() {
        let kept = kept(8);
        kept.keep("a".into(), "third", 3);
        kept.keep("a".into(), "second", 2);
        let taken = kept.take("a").expect("kept");
        assert_eq!((taken.aggregate, taken.sequence), ("third", 3));
        kept.keep("a".into(), "fourth", 4);
        assert_eq!(kept.take("a").map(|c| c.aggregate), Some("fourth"));
    }

    #[test]
    fn a_taken_state_is_gone_until_kept_again_and_the_least_recent_goes_first() {
        let kept = kept(2);
        kept.keep("a".into(), "a1", 1);
        kept.keep("b".into(), "b1", 1);
        assert!(kept.take("a").is_some());
        assert!(
            kept.take("a").is_none(),
            "one command at a time uses a state"
        );
        kept.keep("a".into(), "a2", 2);
        kept.keep("c".into(), "c1", 1);
        assert!(kept.take("b").is_none(), "b was used least recently");
        assert!(kept.take("a").is_some() && kept.take("c").is_some());
    }

    #[test]
    fn a_state_older_than_the_age_limit_is_not_used() {
        let kept = Kept::new(NonZeroUsize::new(4).expect("not zero"), Duration::ZERO);
        kept.keep("a".into(), "a1", 1);
        std::thread::sleep(Duration::from_millis(2));
        assert!(kept.take("a").is_none());
    }
}
