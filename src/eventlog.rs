//! The event log as its readers see it: positions in log order, reading a batch after a
//! position, and the wake-up channels. The store, the projection runner, rebuilds and exports
//! all build on this module; it builds on nothing of theirs.
//!
//! Readers must not skip events that commit out of order: a `global_position` is taken at
//! insert, commits happen later. So the log is read by `(transaction_id, global_position)`,
//! only from transactions below the oldest one still in progress (`pg_snapshot_xmin`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use projections::{Handles, StoredEvent};
use sqlx::{PgConnection, PgPool};
use tokio::sync::broadcast;

/// A point in the log, in the order readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogPosition {
    pub transaction_id: i64,
    pub global_position: i64,
}

/// Wakes the projection runners: sent after every command that appended events.
pub const EVENTS_APPENDED: &str = "events_appended";
/// Wakes the Stripe inbox workers: sent after a Stripe event is stored or set to retry.
pub const STRIPE_EVENT_RECEIVED: &str = "stripe_event_received";

/// Columns of `events` in the shape of [`StoredEvent`]. `payload` and `metadata` are read as
/// the `json` they are stored as: a cast to `jsonb` would make PostgreSQL parse every payload
/// (four times the cost of reading the log), and serde parses the text anyway.
pub const EVENT_COLUMNS: &str = "global_position, transaction_id::text::bigint AS transaction_id, \
     aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
     recorded_at";

/// How far the log can be read: every transaction below this id has finished, so no event
/// positioned before a readable one can still commit (the snapshot's xmin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// Events of transactions below this id.
    Below(i64),
    /// Every committed event: the caller holds [`lock_appends`], so none is in flight.
    Unbounded,
}

impl Horizon {
    /// The horizon now. Taken once and passed to several reads, they all see the same events.
    pub async fn now(conn: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let xmin: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(conn)
                .await?;
        Ok(Self::Below(xmin))
    }

    fn bound(self) -> i64 {
        match self {
            Self::Below(xmin) => xmin,
            Self::Unbounded => i64::MAX,
        }
    }
}

/// Which events a reader wants: those some of `handles` match (every event when `None`).
fn filter_arrays(handles: Option<&[Handles]>) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let Some(handles) = handles else {
        return (None, None);
    };
    let all = handles
        .iter()
        .filter(|h| h.event_types.is_empty())
        .map(|h| h.aggregate_type.to_owned())
        .collect();
    let some = handles
        .iter()
        .flat_map(|h| {
            h.event_types
                .iter()
                .map(move |t| format!("{}/{t}", h.aggregate_type))
        })
        .collect();
    (Some(all), Some(some))
}

/// Up to `limit` events after `after` that `handles` match (all when `None`), in log order,
/// below `horizon`, upcast to their current versions.
pub async fn read_after(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
    handles: Option<&[Handles]>,
    horizon: Horizon,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let (all_of, some_of) = filter_arrays(handles);
    let mut events: Vec<StoredEvent> = sqlx::query_as(&format!(
        // Qualified: a bare `transaction_id` in ORDER BY would name the bigint output column,
        // and the sort would not use the (transaction_id, global_position) index.
        "SELECT {EVENT_COLUMNS} FROM events e
         WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
           AND e.transaction_id < $3::text::xid8
           AND ($5::text[] IS NULL OR e.aggregate_type = ANY($5)
                OR e.aggregate_type || '/' || e.event_type = ANY($6))
         ORDER BY e.transaction_id, e.global_position
         LIMIT $4"
    ))
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(horizon.bound().to_string())
    .bind(limit)
    .bind(all_of)
    .bind(some_of)
    .fetch_all(&mut *conn)
    .await?;
    crate::store::personal::open_events(&mut *conn, &mut events).await?;
    for event in &mut events {
        event.event_version = aggregates::upcast::upcast(
            &event.aggregate_type,
            &event.event_type,
            &event.event_version,
            std::sync::Arc::make_mut(&mut event.payload),
        );
    }
    Ok(events)
}

/// Whether a committed event after `after` matches `handles` (at any horizon). Reads no
/// payload and opens no personal field: a runner asks it after every batch that drained.
pub async fn any_after(
    conn: &mut PgConnection,
    after: LogPosition,
    handles: &[Handles],
) -> Result<bool, sqlx::Error> {
    let (all_of, some_of) = filter_arrays(Some(handles));
    // Not `EXISTS (...)`: PostgreSQL drops the ORDER BY and LIMIT inside an EXISTS, and the
    // generic plan then scans the whole log. Ordered and limited, it walks the log-order index
    // from `after`.
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT e.global_position FROM events e
         WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
           AND (e.aggregate_type = ANY($3) OR e.aggregate_type || '/' || e.event_type = ANY($4))
         ORDER BY e.transaction_id, e.global_position
         LIMIT 1",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(all_of)
    .bind(some_of)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// How far [`backlog`] counts: a backlog this long is reported as this long. Counting every
/// event of a million-event catch-up would make each `/readyz` and `/metrics` call, made
/// every few seconds by load balancers and scrapers, as heavy as the catch-up's own reads.
pub const BACKLOG_COUNTED_UP_TO: i64 = 10_000;

/// How many events after `after` that `handles` match, counted up to
/// [`BACKLOG_COUNTED_UP_TO`], and the age of the oldest of those counted, in ms (the oldest
/// of all but for a transaction that appended after a long wait: the log is in commit order).
pub async fn backlog(
    pool: &PgPool,
    after: LogPosition,
    handles: &[Handles],
) -> Result<(i64, Option<f64>), sqlx::Error> {
    let (all_of, some_of) = filter_arrays(Some(handles));
    sqlx::query_as(
        "SELECT count(*), (extract(epoch FROM now() - min(recorded_at)) * 1000)::float8
         FROM (SELECT e.recorded_at FROM events e
               WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
                 AND (e.aggregate_type = ANY($3) OR e.aggregate_type || '/' || e.event_type = ANY($4))
               ORDER BY e.transaction_id, e.global_position
               LIMIT $5) AS counted",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(all_of)
    .bind(some_of)
    .bind(BACKLOG_COUNTED_UP_TO)
    .fetch_one(pool)
    .await
}

/// The newest event below `horizon` (whatever its type): how far a reader that found nothing
/// more to apply below it has read.
pub async fn last_below(
    conn: &mut PgConnection,
    horizon: Horizon,
) -> Result<Option<LogPosition>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT e.transaction_id::text::bigint, e.global_position FROM events e
         WHERE e.transaction_id < $1::text::xid8
         ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1",
    )
    .bind(horizon.bound().to_string())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(transaction_id, global_position)| LogPosition {
        transaction_id,
        global_position,
    }))
}

/// Blocks appends until the end of the caller's transaction, after waiting for the appends in
/// flight to finish: then every event is committed and can be read with
/// [`Horizon::Unbounded`]. Commands wait meanwhile; they do not fail. Inline projections are
/// caught up and swapped in under it.
pub async fn lock_appends(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(conn)
        .await?;
    Ok(())
}

/// The lock a runner holds (per transaction) while it applies a batch, and a rebuild while it
/// swaps tables in: they never overlap.
pub fn apply_lock_key(name: &str) -> String {
    format!("memberledger.projection.apply.{name}")
}

/// Runs an outbox's `drain` until `shutdown`: again at once while it reports more due work,
/// otherwise when `channel` is notified or `poll` has passed (a notice missed while the
/// listener was down is caught by the poll; the listener reconnects). `what` names the outbox
/// in the warning logged when `drain` fails. The mailer and the webhook deliverer run this.
pub async fn drain_on_notice<F, Fut, E>(
    pool: &PgPool,
    channel: &str,
    poll: std::time::Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    what: &str,
    mut drain: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, E>>,
    E: std::fmt::Display,
{
    let mut listener = None;
    while !shutdown.is_cancelled() {
        if listener.is_none() {
            listener = match sqlx::postgres::PgListener::connect_with(pool).await {
                Ok(mut l) => l.listen(channel).await.ok().map(|()| l),
                Err(_) => None,
            };
        }
        match drain().await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "{what} could not read its outbox"),
        }
        let wait = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = wait => if result.is_err() { listener = None; },
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// `NOTIFY channel`, sent after the change it announces has committed, in a transaction of its
/// own that does not wait for its WAL flush (losing a wake-up is harmless: listeners also
/// poll). A failure is logged, not returned: the change itself is done.
pub async fn notify(pool: &PgPool, channel: &str) {
    notify_with(pool, channel, "").await;
}

/// [`notify`] with a payload.
pub async fn notify_with(pool: &PgPool, channel: &str, payload: &str) {
    let sent =
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(pool)
            .await;
    if let Err(err) = sent {
        tracing::warn!(channel, error = %err, "could not send a wake-up; listeners will poll");
    }
}

/// The payload of an [`EVENTS_APPENDED`] wake-up: groups `Aggregate:EventType,EventType`
/// joined by `;`.
pub fn appended_payload<'a>(
    groups: impl IntoIterator<Item = (&'a str, &'a BTreeSet<String>)>,
) -> String {
    groups
        .into_iter()
        .map(|(aggregate_type, event_types)| {
            let types: Vec<&str> = event_types.iter().map(String::as_str).collect();
            format!("{aggregate_type}:{}", types.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Whether a runner whose projection handles `handles` should wake for this
/// [`EVENTS_APPENDED`] payload. A payload it cannot read wakes it.
pub fn wakes(handles: &[Handles], payload: &str) -> bool {
    payload.split(';').any(|group| {
        let Some((aggregate_type, event_types)) = group.split_once(':') else {
            return true;
        };
        event_types.split(',').any(|event_type| {
            handles
                .iter()
                .any(|h| h.matches(aggregate_type, event_type))
        })
    })
}

/// The next payload announced in this process on `local` (see [`Wakeups::subscribe`]);
/// `None` when some were missed (the receiver lagged behind: wake everyone). Pends forever
/// once no sender is left.
pub async fn next_local(local: &mut Option<broadcast::Receiver<String>>) -> Option<String> {
    loop {
        let Some(receiver) = local.as_mut() else {
            return std::future::pending().await;
        };
        match receiver.recv().await {
            Ok(payload) => return Some(payload),
            Err(broadcast::error::RecvError::Lagged(_)) => return None,
            Err(broadcast::error::RecvError::Closed) => *local = None,
        }
    }
}

/// Wake-ups on one channel, coalesced. Each change says what it concerns
/// ([`Wakeups::announce`]: for `events_appended`, an aggregate type and the event types
/// appended); listeners in this process hear of it at once, other instances through a
/// `NOTIFY` carrying whatever accumulated since the previous one, at most one per
/// [`NOTIFY_SPACING`]. Under load many changes share one notifying transaction instead of
/// paying one each (a `NOTIFY` is a transaction, and a round trip).
pub struct Wakeups {
    pool: PgPool,
    channel: &'static str,
    /// Event types appended and not announced yet, by aggregate type.
    pending: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Whether a caller or task is sending (it sends what others add meanwhile).
    sending: AtomicBool,
    /// When the last `NOTIFY` was sent.
    last_sent: Mutex<Option<tokio::time::Instant>>,
    local: broadcast::Sender<String>,
}

/// The least time between two `NOTIFY`s of one channel from one instance: what other
/// instances' listeners may wait longer than this one's. At 1,000 webhooks a second it is
/// the difference between a notifying transaction for most of them and one per five
/// milliseconds.
pub const NOTIFY_SPACING: std::time::Duration = std::time::Duration::from_millis(5);

impl Wakeups {
    pub fn new(pool: PgPool, channel: &'static str) -> Arc<Self> {
        Arc::new(Self {
            pool,
            channel,
            pending: Mutex::new(BTreeMap::new()),
            sending: AtomicBool::new(false),
            last_sent: Mutex::new(None),
            local: broadcast::channel(256).0,
        })
    }

    /// Payloads as this instance's changes are announced (see [`wakes`]).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.local.subscribe()
    }

    /// Announces a committed change of `group` (for appends: events of these types of the
    /// aggregate type `group`). Listeners in this process hear of it now; the `NOTIFY` is sent
    /// by this caller when none was sent within [`NOTIFY_SPACING`], otherwise by a task once
    /// the spacing has passed, so no caller waits for it longer than one round trip.
    pub async fn announce(
        self: &Arc<Self>,
        group: &str,
        event_types: impl IntoIterator<Item = String>,
    ) {
        let event_types: BTreeSet<String> = event_types.into_iter().collect();
        // No receiver (no runner in this process) is fine.
        let _ = self.local.send(appended_payload([(group, &event_types)]));
        lock(&self.pending)
            .entry(group.to_owned())
            .or_default()
            .extend(event_types);
        if !self.take_sending() {
            // Another sender sends ours with what it takes next.
            return;
        }
        let wait = self.until_next_send();
        if wait.is_zero() {
            self.send_pending().await;
            self.let_go();
        } else {
            self.send_later(wait);
        }
    }

    fn take_sending(&self) -> bool {
        self.sending
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// How long until a `NOTIFY` may be sent.
    fn until_next_send(&self) -> std::time::Duration {
        lock(&self.last_sent).map_or(std::time::Duration::ZERO, |at| {
            (at + NOTIFY_SPACING).saturating_duration_since(tokio::time::Instant::now())
        })
    }

    /// Sends everything pending in one `NOTIFY`.
    async fn send_pending(&self) {
        let batch = std::mem::take(&mut *lock(&self.pending));
        if batch.is_empty() {
            return;
        }
        let payload = appended_payload(batch.iter().map(|(a, t)| (a.as_str(), t)));
        *lock(&self.last_sent) = Some(tokio::time::Instant::now());
        notify_with(&self.pool, self.channel, &payload).await;
    }

    /// Stops sending; what was added meanwhile (its callers left it to the sender) goes to a
    /// task that sends it once the spacing has passed.
    fn let_go(self: &Arc<Self>) {
        self.sending.store(false, Ordering::Release);
        if !lock(&self.pending).is_empty() && self.take_sending() {
            self.send_later(self.until_next_send());
        }
    }

    fn send_later(self: &Arc<Self>, wait: std::time::Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            this.send_pending().await;
            this.let_go();
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMELINE: &[Handles] = &[Handles::all("Member"), Handles::all("Subscription")];
    const STATUS: &[Handles] = &[Handles::only("Member", &["MemberStatusChanged"])];

    #[test]
    fn a_payload_names_each_aggregate_type_and_its_event_types() {
        let member: BTreeSet<String> = ["MemberUpdated".into(), "MemberCreated".into()].into();
        let license: BTreeSet<String> = ["LicenseIssued".into()].into();
        let payload = appended_payload([("Member", &member), ("License", &license)]);
        assert_eq!(
            payload,
            "Member:MemberCreated,MemberUpdated;License:LicenseIssued"
        );
    }

    #[test]
    fn a_runner_wakes_only_for_the_events_its_projection_handles() {
        let payload = "License:LicenseIssued;Member:MemberCreated";
        assert!(wakes(TIMELINE, payload));
        assert!(!wakes(STATUS, payload));
        assert!(wakes(STATUS, "Member:MemberCreated,MemberStatusChanged"));
        assert!(!wakes(TIMELINE, "License:LicenseIssued"));
        // A payload it cannot read (an older or newer instance) wakes it.
        assert!(wakes(STATUS, "garbled"));
    }
}
