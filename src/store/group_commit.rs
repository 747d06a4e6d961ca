//! Group commit for creations: commands that create new aggregates and arrive while another
//! creation is being committed wait for the next transaction and share it.
//!
//! A creation costs about six round trips (BEGIN, the insert, an inline projection or three,
//! COMMIT) and a WAL flush, whatever it carries. Under load those are most of its cost, and
//! PostgreSQL spends them per transaction, not per row: sixteen sign-ups at once are one
//! multi-row insert and one flush here instead of sixteen. Nothing waits for a batch to fill:
//! a worker takes whatever is queued the moment it is free, so a creation on an idle server
//! is committed at once, alone, and batches grow only while transactions are in flight.
//!
//! Each creation is answered as if it had run alone. A command its aggregate refuses is
//! answered before the append and takes no part in it. A transaction refused as a whole (an
//! address taken, by another member or by another creation of the same batch; an id taken
//! after all; the database) is run again one creation at a time, so that each gets its own
//! answer: refusals roll back whole transactions, so the others' events were not written.

use std::sync::Weak;

use aggregates::cqrs_es::{Aggregate, AggregateError, EventEnvelope};
use tokio::sync::{mpsc, oneshot};

use super::{handle_new, outcome, push_new, CommandBus, EventMetadata};
use crate::eventlog::LogPosition;

type Answer<A> = Result<Option<LogPosition>, AggregateError<<A as Aggregate>::Error>>;

/// A creation waiting for its transaction.
pub(super) struct Creation<A: Aggregate> {
    aggregate_id: String,
    command: A::Command,
    metadata: EventMetadata,
    answer: oneshot::Sender<Answer<A>>,
}

/// Where creations wait. Unbounded: each waiting creation is a request awaiting its answer,
/// so the requests in flight bound it.
pub(super) type Queue<A> = mpsc::UnboundedSender<Creation<A>>;

/// The most creations one transaction carries.
const MAX_BATCH: usize = 128;

/// Transactions in flight at once: while one commits (its WAL flush), the next is built.
const WORKERS: usize = 2;

/// Starts the workers of `bus`'s queue. They stop when the bus is dropped (with it, the
/// queue's sender).
pub(super) fn start<A>(bus: Weak<CommandBus<A>>) -> Queue<A>
where
    A: Aggregate<Services = ()> + 'static,
    A::Command: Clone + Send + Sync,
    A::Error: Send,
{
    crate::batch_queue::start(WORKERS, MAX_BATCH, move |batch| {
        let bus = bus.clone();
        async move {
            if let Some(bus) = bus.upgrade() {
                bus.commit_creations(batch).await;
            }
        }
    })
}

/// A creation no worker took, given back: its aggregate id, command and metadata.
pub(super) type Untaken<A> = (String, <A as Aggregate>::Command, EventMetadata);

/// Queues a creation; its answer comes on the receiver. Gives the command back when no
/// worker is left to take it.
pub(super) fn submit<A: Aggregate>(
    queue: &Queue<A>,
    aggregate_id: String,
    command: A::Command,
    metadata: EventMetadata,
) -> Result<oneshot::Receiver<Answer<A>>, Untaken<A>> {
    let (answer, answered) = oneshot::channel();
    queue
        .send(Creation {
            aggregate_id,
            command,
            metadata,
            answer,
        })
        .map(|()| answered)
        .map_err(|refused| {
            let creation = refused.0;
            (creation.aggregate_id, creation.command, creation.metadata)
        })
}

impl<A> CommandBus<A>
where
    A: Aggregate<Services = ()> + 'static,
    A::Command: Clone + Send + Sync,
    A::Error: Send,
{
    /// Commits `batch` in one transaction, or each alone when that one is refused.
    async fn commit_creations(&self, mut batch: Vec<Creation<A>>) {
        if batch.len() == 1 {
            let Creation {
                aggregate_id,
                command,
                metadata,
                answer,
            } = batch.remove(0);
            let _ = answer.send(
                self.execute_new_alone(&aggregate_id, command, metadata)
                    .await,
            );
            return;
        }
        let started = std::time::Instant::now();
        let mut envelopes: Vec<EventEnvelope<A>> = Vec::new();
        // Each accepted creation with the index of its last event in `envelopes`.
        let mut accepted: Vec<(Creation<A>, Option<usize>)> = Vec::with_capacity(batch.len());
        let mut created = Vec::with_capacity(batch.len());
        for creation in batch {
            match handle_new::<A>(creation.command.clone()).await {
                Ok((aggregate, events)) => {
                    created.push((creation.aggregate_id.clone(), aggregate, events.len()));
                    let metadata = creation.metadata.clone().into_map();
                    let before = envelopes.len();
                    push_new(
                        &mut envelopes,
                        creation.aggregate_id.clone(),
                        events,
                        &metadata,
                    );
                    // A command that made no event appended nothing: no position.
                    let last = (envelopes.len() > before).then(|| envelopes.len() - 1);
                    accepted.push((creation, last));
                }
                Err(refused) => {
                    let answer: Answer<A> = Err(refused);
                    crate::metrics::command(A::TYPE, outcome(&answer), started.elapsed());
                    let _ = creation.answer.send(answer);
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        match self.append_new(&envelopes, created).await {
            Ok(positions) => {
                for (creation, last) in accepted {
                    let answer: Answer<A> = Ok(last.and_then(|i| positions.get(i).copied()));
                    crate::metrics::command(A::TYPE, outcome(&answer), started.elapsed());
                    let _ = creation.answer.send(answer);
                }
            }
            Err(err) => {
                tracing::debug!(
                    error = %err,
                    creations = accepted.len(),
                    "a shared creation transaction was refused; committing its creations one at a time"
                );
                for (creation, _) in accepted {
                    crate::metrics::command_retry(A::TYPE);
                    let answer = self
                        .execute_new_alone(
                            &creation.aggregate_id,
                            creation.command,
                            creation.metadata,
                        )
                        .await;
                    let _ = creation.answer.send(answer);
                }
            }
        }
    }
}
