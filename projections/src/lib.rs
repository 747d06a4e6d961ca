//! Read models. Each projection owns plain SQL tables an analyst can query, declares which
//! events it handles and says how they change its tables. An inline projection is written in
//! the transaction that appends the events (the command's answer and its next request read
//! it); an asynchronous one is applied by the server's runner in log order, its checkpoint in
//! the same transaction as the batch.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::PgConnection;

/// One field of every row, as the array a multi-row statement binds for `unnest`.
macro_rules! column {
    ($rows:expr, $field:ident) => {
        $rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
    };
}
pub(crate) use column;

pub mod email_suppressions;
pub mod member_comps;
pub mod member_emails;
pub mod member_licenses;
pub mod member_list;
pub mod member_status;
pub mod member_subscriptions;
pub mod member_timeline;
pub mod members_created;
pub mod newsletters;
pub mod offers;
pub mod paid_subscriptions;
pub mod payments;
pub mod tiers;

pub use email_suppressions::MemberEmailSuppressions;
pub use member_comps::MemberComps;
pub use member_emails::MemberEmails;
pub use member_licenses::MemberLicenses;
pub use member_list::MemberList;
pub use member_status::MembersStatusEvents;
pub use member_subscriptions::MemberSubscriptions;
pub use member_timeline::MemberTimeline;
pub use members_created::MembersCreatedEvents;
pub use newsletters::{MembersLoginEvents, Newsletters};
pub use offers::Offers;
pub use paid_subscriptions::MembersPaidSubscriptionEvents;
pub use payments::MembersPaymentEvents;
pub use tiers::Tiers;

/// One row of the event log, as projections and exports read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    pub transaction_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// Shared, not owned: a batch is handed to every projection that handles some of it, and
    /// those that handle only some take copies of their events (see [`handled`]); a copy of an
    /// event then copies no JSON tree.
    #[sqlx(try_from = "serde_json::Value")]
    pub payload: Arc<serde_json::Value>,
    #[sqlx(try_from = "serde_json::Value")]
    pub metadata: Arc<serde_json::Value>,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// Decodes the payload into the aggregate's event enum.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, ProjectionError> {
        // From a reference: a batch decodes thousands of payloads, none needs copying.
        E::deserialize(&*self.payload).map_err(|source| ProjectionError::Decode {
            position: self.global_position,
            event_type: self.event_type.clone(),
            source,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("event at position {position} ({event_type}) could not be decoded")]
    Decode {
        position: i64,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("event at position {position} refers to a malformed aggregate id {aggregate_id:?}")]
    BadAggregateId { position: i64, aggregate_id: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A policy's command failed (it is retried; commands are idempotent).
    #[error("command failed: {0}")]
    Command(String),
    /// An inline read model refuses the events (a rule it enforces, such as one member per
    /// email): the command's transaction rolls back, events included.
    #[error("{projection} refuses the events: {reason}")]
    Refused {
        projection: &'static str,
        reason: &'static str,
    },
}

/// Events a projection handles: those of `aggregate_type` whose type is one of `event_types`,
/// or every event of that aggregate type when `event_types` is empty.
#[derive(Debug, Clone, Copy)]
pub struct Handles {
    pub aggregate_type: &'static str,
    pub event_types: &'static [&'static str],
}

impl Handles {
    /// Every event of `aggregate_type`.
    pub const fn all(aggregate_type: &'static str) -> Self {
        Self {
            aggregate_type,
            event_types: &[],
        }
    }

    /// Only these events of `aggregate_type`.
    pub const fn only(aggregate_type: &'static str, event_types: &'static [&'static str]) -> Self {
        Self {
            aggregate_type,
            event_types,
        }
    }

    pub fn matches(&self, aggregate_type: &str, event_type: &str) -> bool {
        self.aggregate_type == aggregate_type
            && (self.event_types.is_empty() || self.event_types.contains(&event_type))
    }
}

/// Where a projection is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the appending transaction: a command's events and these rows commit together.
    Inline,
    /// By the runner, after the append, in log order.
    Async,
}

#[async_trait]
pub trait Projection: Send + Sync {
    /// Stable name, also the checkpoint key.
    fn name(&self) -> &'static str;
    /// Bumped whenever the tables or the way events change them change: a projection whose
    /// stored version differs is rebuilt from the log.
    fn version(&self) -> i32;
    /// The tables this projection owns, emptied when it is rebuilt.
    fn tables(&self) -> &'static [&'static str];
    /// Secondary (non-unique) indexes of its tables that its own statements look rows up by.
    /// A rebuild keeps these while it loads; it builds the others once the rows are in.
    fn looked_up_by(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether replaying the whole log into shadow tables is safe. Policies answer no: their
    /// reactions are commands that already happened, and replaying history would issue them
    /// again against today's aggregates.
    fn rebuildable(&self) -> bool {
        true
    }
    /// The events this projection handles; it is given no others.
    fn handles(&self) -> &'static [Handles];
    /// Inline or asynchronous (see [`Mode`]).
    fn mode(&self) -> Mode {
        Mode::Async
    }
    /// Applies a batch of events (each one it handles), in order, inside the caller's
    /// transaction: a command's events, a runner's batch, a rebuild's. Projections whose tables
    /// allow it write a batch with a few multi-row statements; the result must equal applying
    /// the events one at a time.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError>;
    /// Applies one event: a batch of one.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(conn, std::slice::from_ref(event)).await
    }
}

/// Whether `projection` handles events of this aggregate and event type.
pub fn handles(projection: &dyn Projection, aggregate_type: &str, event_type: &str) -> bool {
    projection
        .handles()
        .iter()
        .any(|h| h.matches(aggregate_type, event_type))
}

/// The events of `events` that `projection` handles, in order; borrowed when it handles them
/// all (the usual case), copied otherwise.
pub fn handled<'a>(
    projection: &dyn Projection,
    events: &'a [StoredEvent],
) -> std::borrow::Cow<'a, [StoredEvent]> {
    let wanted = |e: &StoredEvent| handles(projection, &e.aggregate_type, &e.event_type);
    if events.iter().all(wanted) {
        std::borrow::Cow::Borrowed(events)
    } else {
        std::borrow::Cow::Owned(events.iter().filter(|e| wanted(e)).cloned().collect())
    }
}

/// Every projection the server runs.
pub fn all() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(MemberList),
        Box::new(MemberEmails),
        Box::new(MembersCreatedEvents),
        Box::new(MembersStatusEvents),
        Box::new(MembersPaymentEvents),
        Box::new(MembersPaidSubscriptionEvents),
        Box::new(MemberSubscriptions),
        Box::new(MemberLicenses),
        Box::new(MemberTimeline),
        Box::new(Newsletters),
        Box::new(MembersLoginEvents),
        Box::new(Tiers),
        Box::new(Offers),
        Box::new(MemberEmailSuppressions),
        Box::new(MemberComps),
    ]
}

/// A text array as a literal (`{"a","b\"c"}`), so that a column of arrays of different
/// lengths can go through `unnest` as `text[]` and be cast back per row (Postgres has no
/// ragged arrays of arrays).
pub(crate) fn text_array_literal(items: &[String]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// A member event's aggregate id as the member's id (the policies in the server use it too).
pub fn member_id(event: &StoredEvent) -> Result<uuid::Uuid, ProjectionError> {
    event
        .aggregate_id
        .parse()
        .map_err(|_| ProjectionError::BadAggregateId {
            position: event.global_position,
            aggregate_id: event.aggregate_id.clone(),
        })
}

/// The members `events` erase. `MemberErased` is a member's last event (the aggregate appends
/// nothing after it), so a projection applies the rest of the batch as usual and then drops
/// or scrubs the rows of these members.
pub(crate) fn erased_members(events: &[StoredEvent]) -> Result<Vec<uuid::Uuid>, ProjectionError> {
    events
        .iter()
        .filter(|e| {
            e.aggregate_type == <aggregates::Member as aggregates::cqrs_es::Aggregate>::TYPE
                && e.event_type == aggregates::MemberEvent::ERASED
        })
        .map(member_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_array_literals_quote_every_element() {
        assert_eq!(text_array_literal(&[]), "{}");
        let items = [
            "a b".to_owned(),
            r#"q"uote"#.to_owned(),
            r"back\slash".to_owned(),
        ];
        assert_eq!(
            text_array_literal(&items),
            r#"{"a b","q\"uote","back\\slash"}"#
        );
    }
}
