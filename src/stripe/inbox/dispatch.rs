//! The dispatcher: claims groups ahead of its free slots, runs each in a task, writes their
//! outcomes.
//! The protocol and why it is safe: the module docs of [`super`].

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::claim::{claim_groups, finish, release, unlock, Finished, Group};
use super::ClaimedEvent;
use crate::config::StripeSettings;
use crate::eventlog::{next_local, STRIPE_EVENT_RECEIVED};
use crate::stripe::translate::{
    group_checkouts, Outcome, Translator, GROUP_CHECKOUTS, GROUP_MEMBER,
};

const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Most events of one customer claimed at once (the rest in the next claim).
const PER_GROUP: usize = 32;
/// How long a stopping dispatcher waits for its running groups, at most (their leases
/// cover them otherwise).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Starts the dispatcher (and the listener that wakes it). `settings.workers` bounds how many
/// customers' groups run at once; 0 only stores events.
pub fn spawn(
    pool: PgPool,
    translator: Arc<Translator>,
    settings: StripeSettings,
    local: broadcast::Receiver<String>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    if settings.workers == 0 {
        return Vec::new();
    }
    let (wake_tx, wake_rx) = watch::channel(0u64);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher {
        pool: pool.clone(),
        translator,
        settings,
        wake: wake_rx,
        shutdown: shutdown.clone(),
        in_flight: HashSet::new(),
        queued: VecDeque::new(),
        running: 0,
        done_tx,
        done_rx,
        finished: Vec::new(),
    };
    vec![
        tokio::spawn(listen(pool, local, wake_tx, shutdown)),
        tokio::spawn(dispatcher.run()),
    ]
}

/// Wakes the dispatcher for events stored by this instance (at once) and by any instance
/// (`NOTIFY`); reconnects after errors.
async fn listen(
    pool: PgPool,
    local: broadcast::Receiver<String>,
    wake: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut local = Some(local);
    while !shutdown.is_cancelled() {
        let result: Result<(), sqlx::Error> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(STRIPE_EVENT_RECEIVED).await?;
            wake.send_modify(|n| *n += 1);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    n = listener.recv() => { n?; wake.send_modify(|n| *n += 1); }
                    _ = next_local(&mut local) => wake.send_modify(|n| *n += 1),
                }
            }
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "stripe inbox listener failed; reconnecting");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// A group's events and how each ended.
#[derive(Debug)]
struct GroupDone {
    customer_id: Option<String>,
    events: Vec<Finished>,
}

struct Dispatcher {
    pool: PgPool,
    translator: Arc<Translator>,
    settings: StripeSettings,
    wake: watch::Receiver<u64>,
    shutdown: CancellationToken,
    /// Customers whose group is running or queued (their locks are held on the claiming
    /// connection).
    in_flight: HashSet<String>,
    /// Groups claimed and not started yet, oldest first.
    queued: VecDeque<Group>,
    /// Groups running.
    running: usize,
    done_tx: mpsc::UnboundedSender<GroupDone>,
    done_rx: mpsc::UnboundedReceiver<GroupDone>,
    /// Groups done whose outcomes are not written yet (kept across a reconnect).
    finished: Vec<GroupDone>,
}

impl Dispatcher {
    async fn run(mut self) {
        loop {
            match self.work().await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "stripe inbox dispatcher failed; reconnecting");
                    // Their locks went with the connection; their leases bring them back.
                    for group in self.queued.drain(..) {
                        if let Some(customer) = group.customer_id {
                            self.in_flight.remove(&customer);
                        }
                    }
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Claims, starts and finishes groups on one connection until shutdown or a database
    /// error. The connection is detached from the pool: it holds advisory locks, and after an
    /// error it is closed (releasing them) rather than handed to someone else.
    async fn work(&mut self) -> Result<(), sqlx::Error> {
        let mut conn: PgConnection =
            crate::db::acquire(&self.pool, crate::db::PoolName::Background)
                .await?
                .detach();
        // Every statement of the inbox reaches its rows by an index (the claim walks
        // `stripe_events_due`, outcomes go by primary key). During a burst the table outgrows
        // its last ANALYZE, and the planner, costing it at a few pages, chose sequential scans
        // of every event ever received: 2.6 ms an outcome statement at 6,500 events, the
        // inbox's largest cost. This connection is the inbox's own (detached), so the setting
        // reaches nothing else.
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut conn)
            .await?;
        loop {
            while let Ok(done) = self.done_rx.try_recv() {
                self.finished.push(done);
            }
            self.write_finished(&mut conn).await?;
            if self.shutdown.is_cancelled() {
                self.release_queued(&mut conn).await?;
                if self.running == 0 {
                    return Ok(());
                }
                match tokio::time::timeout(
                    SHUTDOWN_GRACE.min(self.settings.lease),
                    self.done_rx.recv(),
                )
                .await
                {
                    Ok(Some(done)) => self.finished.push(done),
                    _ => return Ok(()),
                }
                continue;
            }
            // Claims only once at most `workers` groups are held, and then enough for two
            // rounds: a claim's cost is its scan of the due events, so each one should fetch
            // many groups, not the one a finished group freed.
            let workers = self.settings.workers;
            let held = self.running + self.queued.len();
            if held <= workers {
                self.wake.borrow_and_update();
                let busy: Vec<String> = self.in_flight.iter().cloned().collect();
                let groups = claim_groups(
                    &mut conn,
                    &busy,
                    2 * workers - held,
                    PER_GROUP,
                    self.settings.lease,
                )
                .await?;
                for group in groups {
                    if let Some(customer) = &group.customer_id {
                        self.in_flight.insert(customer.clone());
                    }
                    self.queued.push_back(group);
                }
            }
            while self.running < workers {
                let Some(group) = self.queued.pop_front() else {
                    break;
                };
                self.start(group);
            }
            tokio::select! {
                () = self.shutdown.cancelled() => {}
                done = self.done_rx.recv() => self.finished.extend(done),
                changed = self.wake.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Writes the outcomes of the groups done, in one statement, then releases their customers.
    async fn write_finished(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.finished.is_empty() {
            return Ok(());
        }
        let events: Vec<&Finished> = self.finished.iter().flat_map(|g| &g.events).collect();
        let woken = finish(conn, &events, &self.settings).await?;
        if woken > 0 {
            tracing::debug!(woken, "deferred stripe events due again");
        }
        let customers: Vec<String> = self
            .finished
            .iter()
            .filter_map(|g| g.customer_id.clone())
            .collect();
        unlock(conn, &customers).await?;
        for customer in &customers {
            self.in_flight.remove(customer);
        }
        self.running = self.running.saturating_sub(self.finished.len());
        self.finished.clear();
        Ok(())
    }

    /// Gives the claimed groups not started back: due again at once, the attempt uncounted.
    async fn release_queued(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let groups: Vec<Group> = self.queued.drain(..).collect();
        let ids: Vec<String> = groups
            .iter()
            .flat_map(|g| g.events.iter().map(|e| e.id.clone()))
            .collect();
        let customers: Vec<String> = groups.into_iter().filter_map(|g| g.customer_id).collect();
        release(conn, &ids).await?;
        unlock(conn, &customers).await?;
        for customer in &customers {
            self.in_flight.remove(customer);
        }
        Ok(())
    }

    fn start(&mut self, group: Group) {
        self.running += 1;
        let translator = self.translator.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let customer_id = group.customer_id.clone();
            let claimed: Vec<(String, i32)> = group
                .events
                .iter()
                .map(|e| (e.id.clone(), e.attempts))
                .collect();
            // In a task of its own, so that a panic still frees the slot and the customer.
            let result = tokio::spawn(run_group(translator, group)).await;
            let events = result.unwrap_or_else(|err| {
                tracing::error!(error = %err, "a stripe inbox task panicked");
                claimed
                    .into_iter()
                    .map(|(id, attempts)| Finished {
                        id,
                        customer_id: customer_id.clone(),
                        attempts,
                        outcome: Err(format!("processing panicked: {err}")),
                    })
                    .collect()
            });
            // The dispatcher is gone only at shutdown; the leases cover the events then.
            let _ = done.send(GroupDone {
                customer_id,
                events,
            });
        });
    }
}

/// Runs a customer's events in order. An event deferred for want of another event of the
/// customer is run again each time a later one is processed, until it goes through or
/// nothing more does.
async fn run_group(translator: Arc<Translator>, group: Group) -> Vec<Finished> {
    let checkouts = group_checkouts(group.customer_id.as_deref(), &group.events);
    let run = GROUP_CHECKOUTS.scope(checkouts, run_in_order(translator, group.events));
    GROUP_MEMBER.scope(RefCell::new(None), run).await
}

async fn run_in_order(translator: Arc<Translator>, events: Vec<ClaimedEvent>) -> Vec<Finished> {
    let mut attempts: Vec<i32> = events.iter().map(|e| e.attempts).collect();
    let mut outcomes: Vec<Result<Outcome, String>> = Vec::with_capacity(events.len());
    let mut waiting: Vec<usize> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let outcome = run_one(&translator, event, attempts[i]).await;
        let processed = outcome == Ok(Outcome::Processed);
        if matches!(outcome, Ok(Outcome::Deferred(_))) {
            waiting.push(i);
        }
        outcomes.push(outcome);
        while processed && !waiting.is_empty() {
            let mut progressed = false;
            for w in std::mem::take(&mut waiting) {
                attempts[w] += 1;
                let outcome = run_one(&translator, &events[w], attempts[w]).await;
                match outcome {
                    Ok(Outcome::Deferred(_)) => waiting.push(w),
                    Ok(Outcome::Processed) => progressed = true,
                    _ => {}
                }
                outcomes[w] = outcome;
            }
            if !progressed {
                break;
            }
        }
    }
    events
        .into_iter()
        .zip(attempts)
        .zip(outcomes)
        .map(|((event, attempts), outcome)| Finished {
            id: event.id,
            customer_id: event.customer_id,
            attempts,
            outcome,
        })
        .collect()
}

fn outcome_label(result: &Result<Outcome, String>) -> &'static str {
    match result {
        Ok(Outcome::Processed) => "processed",
        Ok(Outcome::Ignored(_)) => "ignored",
        Ok(Outcome::Deferred(_)) => "deferred",
        Err(_) => "failed",
    }
}

async fn run_one(
    translator: &Translator,
    event: &ClaimedEvent,
    attempt: i32,
) -> Result<Outcome, String> {
    let span = tracing::info_span!("stripe_event", event_id = %event.id, event_type = %event.event_type, attempt);
    let started = std::time::Instant::now();
    let result = tracing::Instrument::instrument(translator.handle(event), span.clone())
        .await
        .map_err(|err| format!("{err:#}"));
    crate::metrics::stripe_event(outcome_label(&result), started.elapsed());
    span.in_scope(|| match &result {
        Ok(Outcome::Processed) => tracing::info!("stripe event processed"),
        Ok(Outcome::Ignored(reason)) => tracing::info!(reason = %reason, "stripe event ignored"),
        Ok(Outcome::Deferred(reason)) => {
            tracing::info!(reason = %reason, "stripe event deferred until its customer's next event");
        }
        Err(err) => tracing::warn!(error = %err, "stripe event failed; will retry"),
    });
    result
}
