//! The write side: cqrs-es frameworks over our event repository (postgres-es's tables, inline
//! read models written in the appending transaction), and event metadata.

use std::cell::Cell;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock, Weak};

use aggregates::cqrs_es::persist::{EventUpcaster, PersistedEventStore, SerializedEvent};
use aggregates::cqrs_es::{
    Aggregate, AggregateError, CqrsFramework, DomainEvent, EventEnvelope, Query,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::eventlog::{LogPosition, Wakeups};

mod appender;
mod cache;
mod group_commit;
pub mod personal;
mod repository;

pub use appender::Appender;
use cache::{CacheUse, CachingStore, Kept, ATTEMPT};
pub use repository::InlineRefusal;
use repository::{EventRepository, APPENDED};

/// Who or what caused a command.
#[derive(Debug, Clone)]
pub enum Actor {
    Admin,
    Member(Uuid),
    Stripe,
    System,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Member(id) => write!(f, "member:{id}"),
            Self::Stripe => f.write_str("stripe"),
            Self::System => f.write_str("system"),
        }
    }
}

/// Metadata stored with every event.
#[derive(Debug, Clone)]
pub struct EventMetadata {
    /// Ties together everything that one outside request set off.
    pub correlation_id: String,
    /// What directly caused the command: an HTTP request id, a Stripe event id, an event.
    pub causation_id: String,
    pub actor: Actor,
}

impl EventMetadata {
    /// Metadata for a command caused by one HTTP request.
    pub fn for_request(request_id: &str, actor: Actor) -> Self {
        Self {
            correlation_id: request_id.to_owned(),
            causation_id: request_id.to_owned(),
            actor,
        }
    }

    fn into_map(self) -> HashMap<String, String> {
        HashMap::from([
            ("correlation_id".to_owned(), self.correlation_id),
            ("causation_id".to_owned(), self.causation_id),
            ("actor".to_owned(), self.actor.to_string()),
        ])
    }
}

type Framework<A> = CqrsFramework<A, CachingStore<EventRepository, A>>;

/// Runs commands against aggregates stored in PostgreSQL; each command's events and the inline
/// read models they change commit in one transaction.
pub struct CommandBus<A: Aggregate> {
    framework: Framework<A>,
    /// A second handle on the same store, for reading an aggregate's state.
    store: PersistedEventStore<EventRepository, A>,
    /// The same tables once more, for appends of new aggregates ([`Self::execute_new`],
    /// alone or grouped, and [`Self::execute_new_batch`]): cqrs-es's store commits one
    /// aggregate at a time.
    repository: EventRepository,
    wakeups: Arc<Wakeups>,
    /// The aggregates kept in memory between commands, for a cached bus (`cache`): the
    /// framework's store reads and keeps them; creations keep theirs here.
    kept: Option<Arc<Kept<A>>>,
    /// Creations waiting for a transaction to share ([`Self::execute_new`]); its workers
    /// start on first use.
    creations: OnceLock<group_commit::Queue<A>>,
    /// This bus, for the group commit's workers (which must not keep it alive).
    this: Weak<Self>,
}

/// How often a command is retried when another writer appended to the same aggregate first.
const CONFLICT_RETRIES: usize = 3;

impl<A> CommandBus<A>
where
    A: Aggregate + 'static,
    A::Command: Clone,
{
    /// `appender`: where appends go (shared by the process's buses: transactions carry the
    /// events of concurrent commands with the inline projections that handle them);
    /// `wakeups`: where committed appends are announced to the runners.
    pub fn new(
        pool: PgPool,
        appender: Arc<Appender>,
        wakeups: Arc<Wakeups>,
        services: A::Services,
    ) -> Arc<Self> {
        Self::build(pool, appender, wakeups, services, None)
    }

    /// [`Self::new`], keeping up to `capacity` aggregates in memory between commands, each
    /// verified by the command that uses it (see `cache`, and what it says of personal data).
    pub fn new_cached(
        pool: PgPool,
        appender: Arc<Appender>,
        wakeups: Arc<Wakeups>,
        services: A::Services,
        capacity: NonZeroUsize,
    ) -> Arc<Self> {
        Self::build(pool, appender, wakeups, services, Some(capacity))
    }

    fn build(
        pool: PgPool,
        appender: Arc<Appender>,
        wakeups: Arc<Wakeups>,
        services: A::Services,
        capacity: Option<NonZeroUsize>,
    ) -> Arc<Self> {
        let kept = capacity.map(|c| Arc::new(Kept::new(c, cache::MAX_AGE)));
        let store = || {
            PersistedEventStore::new_event_store(EventRepository::new(
                pool.clone(),
                appender.clone(),
            ))
            .with_upcasters(vec![Box::new(Upcaster)])
        };
        Arc::new_cyclic(|this| Self {
            framework: CqrsFramework::new(
                CachingStore::new(store(), kept.clone()),
                vec![Box::new(WakeRunners {
                    wakeups: wakeups.clone(),
                })],
                services,
            ),
            store: store(),
            repository: EventRepository::new(pool.clone(), appender.clone()),
            wakeups,
            kept,
            creations: OnceLock::new(),
            this: this.clone(),
        })
    }

    /// The aggregate's current state (the default state when it has no events).
    pub async fn load(&self, aggregate_id: &str) -> Result<A, AggregateError<A::Error>> {
        use aggregates::cqrs_es::EventStore;
        Ok(self.store.load_aggregate(aggregate_id).await?.aggregate)
    }

    /// Executes `command`, retrying on optimistic-lock conflicts (the command is re-run
    /// against the newer state), and returns the log position of the last event it appended
    /// (`None` when it appended none). When it returns, the inline read models show the events.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: EventMetadata,
    ) -> Result<Option<LogPosition>, AggregateError<A::Error>> {
        let metadata = metadata.into_map();
        let started = std::time::Instant::now();
        let result = APPENDED
            .scope(Cell::new(None), async {
                let mut attempt = 0;
                let mut cache = CacheUse::Allowed;
                loop {
                    let (result, used) = ATTEMPT
                        .scope(Cell::new(cache), async {
                            let result = self
                                .framework
                                .execute_with_metadata(
                                    aggregate_id,
                                    command.clone(),
                                    metadata.clone(),
                                )
                                .await;
                            (result, ATTEMPT.with(Cell::get))
                        })
                        .await;
                    let appended = APPENDED.with(Cell::get);
                    if used == CacheUse::Used && !(result.is_ok() && appended.is_some()) {
                        // The state came from memory and no append checked it: run the
                        // command again against the stored events (not counted as a retry).
                        crate::metrics::aggregate_cache(A::TYPE, "rerun");
                        cache = CacheUse::Bypass;
                        continue;
                    }
                    attempt += 1;
                    match result {
                        Err(AggregateError::AggregateConflict) if attempt <= CONFLICT_RETRIES => {
                            crate::metrics::command_retry(A::TYPE);
                        }
                        Err(err) => return Err(err),
                        Ok(()) => return Ok(appended),
                    }
                }
            })
            .await;
        crate::metrics::command(A::TYPE, outcome(&result), started.elapsed());
        result
    }

    /// Executes commands that each create a new aggregate (ids just minted, as for
    /// [`Self::execute_new`]) and appends all their events in one transaction, the inline
    /// projections applying them as one batch: a thousand imported members are one commit,
    /// not a thousand. All or nothing: when any is refused (by its aggregate, or by an inline
    /// projection, such as an address another member took meanwhile) none is written, and the
    /// caller can run them one by one to tell which.
    pub async fn execute_new_batch(
        &self,
        commands: Vec<(String, A::Command)>,
        metadata: EventMetadata,
    ) -> Result<Option<LogPosition>, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()>,
    {
        let started = std::time::Instant::now();
        let count = commands.len();
        if count == 0 {
            return Ok(None);
        }
        let metadata = metadata.into_map();
        let result = async {
            let mut envelopes: Vec<EventEnvelope<A>> = Vec::with_capacity(count);
            let mut created = Vec::with_capacity(count);
            for (aggregate_id, command) in commands {
                let (aggregate, events) = handle_new::<A>(command).await?;
                created.push((aggregate_id.clone(), aggregate, events.len()));
                push_new(&mut envelopes, aggregate_id, events, &metadata);
            }
            let positions = self.append_new(&envelopes, created).await?;
            Ok(positions.last().copied())
        }
        .await;
        let outcome = outcome(&result);
        for _ in 0..count {
            crate::metrics::command(A::TYPE, outcome, started.elapsed());
        }
        result
    }

    /// Executes `command` on an aggregate that `aggregate_id` was just made for (a UUIDv7
    /// minted by the caller), without reading its events first: there are none. Saves the
    /// load's round trip on every creation. Were the id taken after all, the append would
    /// meet the optimistic lock and the command re-run through [`Self::execute`], against the
    /// stored events, so the guess can cost time but never correctness.
    ///
    /// Creations that arrive while another is being committed share the next transaction
    /// (group commit, see `group_commit`): under load, a few transactions carry many
    /// creations, each answered as if it had run alone.
    pub async fn execute_new(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: EventMetadata,
    ) -> Result<Option<LogPosition>, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()>,
        A::Command: Send + Sync,
        A::Error: Send,
    {
        let queue = self
            .creations
            .get_or_init(|| group_commit::start(self.this.clone()));
        match group_commit::submit(queue, aggregate_id.to_owned(), command, metadata) {
            Ok(answer) => answer.await.unwrap_or_else(|_| {
                Err(AggregateError::UnexpectedError(
                    "the group commit's worker stopped before answering".into(),
                ))
            }),
            // No worker (the runtime that started them has ended): alone, then.
            Err((id, command, metadata)) => self.execute_new_alone(&id, command, metadata).await,
        }
    }

    /// [`Self::execute_new`] in a transaction of its own.
    async fn execute_new_alone(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: EventMetadata,
    ) -> Result<Option<LogPosition>, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()>,
    {
        let started = std::time::Instant::now();
        let first = async {
            let (aggregate, events) = handle_new::<A>(command.clone()).await?;
            let created = vec![(aggregate_id.to_owned(), aggregate, events.len())];
            let mut envelopes = Vec::with_capacity(events.len());
            push_new(
                &mut envelopes,
                aggregate_id.to_owned(),
                events,
                &metadata.clone().into_map(),
            );
            Ok(self.append_new(&envelopes, created).await?.last().copied())
        }
        .await;
        match first {
            Err(AggregateError::AggregateConflict) => {
                crate::metrics::command_retry(A::TYPE);
                self.execute(aggregate_id, command, metadata).await
            }
            result => {
                crate::metrics::command(A::TYPE, outcome(&result), started.elapsed());
                result
            }
        }
    }
}

impl<A: Aggregate> CommandBus<A> {
    /// Appends new aggregates' events (of one or many) in one transaction and wakes the
    /// runners; returns each event's log position, in order. `created`: each new aggregate
    /// with its events applied and their count, kept in memory once committed (a cached bus).
    async fn append_new(
        &self,
        envelopes: &[EventEnvelope<A>],
        created: Vec<(String, A, usize)>,
    ) -> Result<Vec<LogPosition>, AggregateError<A::Error>> {
        let serialized = envelopes
            .iter()
            .map(SerializedEvent::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let positions = self.repository.append(serialized).await?;
        if let Some(kept) = &self.kept {
            for (aggregate_id, aggregate, sequence) in created {
                if sequence > 0 {
                    kept.keep(aggregate_id, aggregate, sequence);
                }
            }
        }
        WakeRunners::announce(&self.wakeups, envelopes).await;
        Ok(positions)
    }
}

/// Adds a new aggregate's events to `envelopes`, numbered from 1.
fn push_new<A: Aggregate>(
    envelopes: &mut Vec<EventEnvelope<A>>,
    aggregate_id: String,
    events: Vec<A::Event>,
    metadata: &HashMap<String, String>,
) {
    for (n, payload) in events.into_iter().enumerate() {
        envelopes.push(EventEnvelope {
            aggregate_id: aggregate_id.clone(),
            sequence: n + 1,
            payload,
            metadata: metadata.clone(),
        });
    }
}

/// The events `command` makes on a new aggregate, and the aggregate once they are applied.
async fn handle_new<A: Aggregate<Services = ()>>(
    command: A::Command,
) -> Result<(A, Vec<A::Event>), AggregateError<A::Error>> {
    use aggregates::cqrs_es::event_sink::EventSink;

    let mut aggregate = A::default();
    let sink = EventSink::default();
    aggregate
        .handle(command, &(), &sink)
        .await
        .map_err(AggregateError::UserError)?;
    Ok((aggregate, sink.collect().await))
}

/// How a command ended, for the metrics: a domain error or an inline refusal (a taken email)
/// is the aggregate saying no; a conflict is one that outlasted the retries.
fn outcome<T, E: std::error::Error>(
    result: &Result<T, AggregateError<E>>,
) -> crate::metrics::CommandOutcome {
    use crate::metrics::CommandOutcome;
    match result {
        Ok(_) => CommandOutcome::Ok,
        Err(AggregateError::UserError(_)) => CommandOutcome::Rejected,
        Err(AggregateError::AggregateConflict) => CommandOutcome::Conflict,
        Err(err) if inline_refusal(err).is_some() => CommandOutcome::Rejected,
        Err(_) => CommandOutcome::Error,
    }
}

/// The inline refusal behind a failed command, if that is why it failed.
pub fn inline_refusal<E: std::error::Error>(err: &AggregateError<E>) -> Option<&InlineRefusal> {
    match err {
        AggregateError::UnexpectedError(source) => source.downcast_ref::<InlineRefusal>(),
        _ => None,
    }
}

/// Wakes the projection runners (of every instance) once a command's events are committed,
/// naming the event types, so that a runner whose projection handles none of them stays
/// asleep. Not a trigger on `events`: a NOTIFY inside the appending transaction would
/// serialise all appends (see migration 20261124000011); the wake-ups of concurrent commands
/// are coalesced (see `Wakeups`).
struct WakeRunners {
    wakeups: Arc<Wakeups>,
}

impl WakeRunners {
    async fn announce<A: Aggregate>(wakeups: &Arc<Wakeups>, events: &[EventEnvelope<A>]) {
        if events.is_empty() {
            return;
        }
        wakeups
            .announce(A::TYPE, events.iter().map(|e| e.payload.event_type()))
            .await;
    }
}

#[async_trait::async_trait]
impl<A: Aggregate> Query<A> for WakeRunners {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<A>]) {
        Self::announce(&self.wakeups, events).await;
    }
}

/// Brings old event payloads to their current shape when aggregates load (see
/// `aggregates::upcast`, which projections and exports use too).
struct Upcaster;

impl EventUpcaster for Upcaster {
    fn can_upcast(&self, _event_type: &str, _event_version: &str) -> bool {
        // The aggregate type is not passed here; `upcast` checks it and does nothing otherwise.
        true
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.event_version = aggregates::upcast::upcast(
            &event.aggregate_type,
            &event.event_type,
            &event.event_version,
            &mut event.payload,
        );
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CommandOutcome;

    type Result = std::result::Result<(), AggregateError<std::io::Error>>;

    #[test]
    fn a_command_outcome_names_refusals_conflicts_and_errors_apart() {
        let refused = std::io::Error::other("no");
        assert_eq!(outcome(&Result::Ok(())), CommandOutcome::Ok);
        assert_eq!(
            outcome(&Result::Err(AggregateError::UserError(refused))),
            CommandOutcome::Rejected
        );
        let taken = InlineRefusal {
            projection: "member_emails",
            reason: "email-taken",
        };
        assert_eq!(
            outcome(&Result::Err(AggregateError::UnexpectedError(Box::new(
                taken
            )))),
            CommandOutcome::Rejected
        );
        assert_eq!(
            outcome(&Result::Err(AggregateError::AggregateConflict)),
            CommandOutcome::Conflict
        );
        assert_eq!(
            outcome(&Result::Err(AggregateError::UnexpectedError(Box::new(
                std::io::Error::other("bug")
            )))),
            CommandOutcome::Error
        );
    }
}
