//! Group commit for every append: the events of commands that finish while another command's
//! events are being committed wait for the next transaction and share it.
//!
//! An append costs about six round trips (BEGIN, the insert, an inline projection's read and
//! writes, COMMIT) and a WAL flush, however few events it carries, and each Stripe event runs
//! one or two commands, each policy reaction another. Here the appends of concurrent commands,
//! of any aggregate type, are one multi-row insert, one run of each inline projection over
//! all their events, and one commit. Nothing waits for a batch to fill: a worker takes
//! whatever is queued the moment it is free, so on an idle server an append is committed at
//! once, alone, and batches grow only while transactions are in flight (as `group_commit`
//! does for creations, whose batches come here as one append).
//!
//! Each append is answered as if it had committed alone. A shared transaction refused as a
//! whole (one command lost the optimistic lock, an inline read model refused one command's
//! events, a deadlock between the two workers' transactions) is run again one append at a
//! time, so each gets its own answer; a refusal rolls the whole transaction back, so nothing of
//! the others was written. A transaction that found no database (an outage, the pool
//! exhausted) is answered the same to every append at once.

use std::sync::{Arc, OnceLock};

use aggregates::cqrs_es::persist::{PersistenceError, SerializedEvent};
use projections::Projection;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::repository::append_in_one;
use crate::eventlog::LogPosition;

type Answer = Result<Vec<LogPosition>, PersistenceError>;

/// One command's events, waiting for their transaction.
struct Append {
    events: Vec<SerializedEvent>,
    answer: oneshot::Sender<Answer>,
}

/// The most appends one transaction carries.
const MAX_BATCH: usize = 64;

/// Transactions in flight at once: while one commits (its WAL flush), the next is built.
const WORKERS: usize = 2;

/// Where every command bus of a process appends (see the module docs).
pub struct Appender {
    pool: PgPool,
    /// Every inline projection; each transaction applies those that handle its events.
    inline: Arc<[Arc<dyn Projection>]>,
    /// Started on the first append (which runs on a Tokio runtime); the workers stop when
    /// the appender, and with it the sender, is dropped.
    queue: OnceLock<mpsc::UnboundedSender<Append>>,
}

impl Appender {
    pub fn new(pool: PgPool, inline: Arc<[Arc<dyn Projection>]>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            inline,
            queue: OnceLock::new(),
        })
    }

    /// Appends one command's events (of one or many aggregates) with the inline projections
    /// that handle them, in a transaction it may share; returns where each one is in the log,
    /// in order. When it returns `Ok`, they are committed.
    pub async fn append(&self, events: Vec<SerializedEvent>) -> Answer {
        let queue = self.queue.get_or_init(|| {
            let (pool, inline) = (self.pool.clone(), self.inline.clone());
            crate::batch_queue::start(WORKERS, MAX_BATCH, move |batch| {
                let (pool, inline) = (pool.clone(), inline.clone());
                async move { commit(&pool, &inline, batch).await }
            })
        });
        let (answer, answered) = oneshot::channel();
        match queue.send(Append { events, answer }) {
            Ok(()) => answered.await.unwrap_or_else(|_| {
                Err(PersistenceError::UnknownError(
                    "the appender's worker stopped before answering".into(),
                ))
            }),
            // No worker left (the runtime that started them has ended): alone, then.
            Err(mpsc::error::SendError(append)) => {
                append_in_one(&self.pool, &self.inline, &append.events).await
            }
        }
    }
}

/// Commits `batch` in one transaction, or each append alone when that one is refused.
async fn commit(pool: &PgPool, inline: &[Arc<dyn Projection>], batch: Vec<Append>) {
    if let [_] = batch.as_slice() {
        for Append { events, answer } in batch {
            let _ = answer.send(append_in_one(pool, inline, &events).await);
        }
        return;
    }
    let counts: Vec<usize> = batch.iter().map(|a| a.events.len()).collect();
    let mut all = Vec::with_capacity(counts.iter().sum());
    let mut answers = Vec::with_capacity(batch.len());
    for Append { events, answer } in batch {
        all.extend(events);
        answers.push(answer);
    }
    let err = match append_in_one(pool, inline, &all).await {
        Ok(positions) => {
            let mut rest = positions.as_slice();
            for (answer, n) in answers.into_iter().zip(counts) {
                let (mine, others) = rest.split_at(n.min(rest.len()));
                rest = others;
                let _ = answer.send(Ok(mine.to_vec()));
            }
            return;
        }
        Err(err) => err,
    };
    if let Some(gone) = lost(&err) {
        for answer in answers {
            let _ = answer.send(Err(gone.copy()));
        }
        return;
    }
    tracing::debug!(
        error = %err,
        appends = answers.len(),
        "a shared append transaction was refused; committing its appends one at a time"
    );
    let mut events = all.into_iter();
    let mut gone: Option<Lost> = None;
    for (answer, n) in answers.into_iter().zip(counts) {
        let mine: Vec<SerializedEvent> = events.by_ref().take(n).collect();
        let result = match &gone {
            // The database went away meanwhile: not one pool timeout per append.
            Some(gone) => Err(gone.copy()),
            None => append_in_one(pool, inline, &mine).await,
        };
        if let Err(err) = &result {
            gone = gone.or_else(|| lost(err));
        }
        let _ = answer.send(result);
    }
}

/// A transaction that found no database, as each of its appends is answered.
enum Lost {
    PoolTimedOut,
    PoolClosed,
    Other(String),
}

impl Lost {
    fn copy(&self) -> PersistenceError {
        let err = match self {
            Self::PoolTimedOut => sqlx::Error::PoolTimedOut,
            Self::PoolClosed => sqlx::Error::PoolClosed,
            Self::Other(message) => sqlx::Error::Io(std::io::Error::other(message.clone())),
        };
        PersistenceError::ConnectionError(Box::new(err))
    }
}

/// Whether `err` says the database could not be reached, rather than that it refused the
/// transaction (an error it answered, a deadlock or a statement timeout included: those are
/// run again one append at a time).
fn lost(err: &PersistenceError) -> Option<Lost> {
    let PersistenceError::ConnectionError(source) = err else {
        return None;
    };
    match source.downcast_ref::<sqlx::Error>()? {
        sqlx::Error::Database(_) => None,
        sqlx::Error::PoolTimedOut => Some(Lost::PoolTimedOut),
        sqlx::Error::PoolClosed => Some(Lost::PoolClosed),
        other => Some(Lost::Other(other.to_string())),
    }
}
