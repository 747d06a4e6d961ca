//! Read models. Each projection owns plain SQL tables an analyst can query and says how each
//! event changes them; the runner in the server applies events in log order and advances the
//! projection's checkpoint in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::PgConnection;

pub mod member_licenses;
pub mod member_list;
pub mod member_status;
pub mod member_subscriptions;
pub mod member_timeline;
pub mod members_created;
pub mod newsletters;
pub mod paid_subscriptions;
pub mod payments;

pub use member_licenses::MemberLicenses;
pub use member_list::MemberList;
pub use member_status::MembersStatusEvents;
pub use member_subscriptions::MemberSubscriptions;
pub use member_timeline::MemberTimeline;
pub use members_created::MembersCreatedEvents;
pub use newsletters::{MembersLoginEvents, Newsletters};
pub use paid_subscriptions::MembersPaidSubscriptionEvents;
pub use payments::MembersPaymentEvents;

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
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// Decodes the payload into the aggregate's event enum.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, ProjectionError> {
        serde_json::from_value(self.payload.clone()).map_err(|source| ProjectionError::Decode {
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
    /// Whether replaying the whole log into shadow tables is safe. Policies answer no: their
    /// reactions are commands that already happened, and replaying history would issue them
    /// again against today's aggregates.
    fn rebuildable(&self) -> bool {
        true
    }
    /// Applies one event inside the runner's transaction. Events the projection does not care
    /// about are ignored.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError>;
}

/// Every projection the server runs.
pub fn all() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(MemberList),
        Box::new(MembersCreatedEvents),
        Box::new(MembersStatusEvents),
        Box::new(MembersPaymentEvents),
        Box::new(MembersPaidSubscriptionEvents),
        Box::new(MemberSubscriptions),
        Box::new(MemberLicenses),
        Box::new(MemberTimeline),
        Box::new(Newsletters),
        Box::new(MembersLoginEvents),
    ]
}

pub(crate) fn member_id(event: &StoredEvent) -> Result<uuid::Uuid, ProjectionError> {
    event
        .aggregate_id
        .parse()
        .map_err(|_| ProjectionError::BadAggregateId {
            position: event.global_position,
            aggregate_id: event.aggregate_id.clone(),
        })
}
