//! Policies: reactions across aggregates, run by the projection runner with their own
//! checkpoints. They turn events into commands that are idempotent (deterministic license ids,
//! "set status" rather than "toggle"), so re-running a batch after a crash changes nothing.
//! Their state lives in `policy_*` tables written in the runner's transaction.
//!
//! A batch runs in two phases. First its events update the policy's tables, in order, in the
//! runner's transaction, and say which commands follow ([`Commands`]); then those commands run,
//! in order for each aggregate and [`CONCURRENT_AGGREGATES`] aggregates at once. A command
//! depends only on the policy's tables, never on another command's result, so the split changes
//! nothing but the wait: a batch of a thousand subscriptions no longer waits for a thousand
//! commits one after the other. If a command fails the batch's transaction rolls back and the
//! batch runs again; the commands that went through are idempotent.
//!
//! `member_status` tells members whether they pay; `license` issues and deactivates license
//! keys as subscriptions, items and comps change.

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::cqrs_es::{Aggregate, AggregateError};
use aggregates::{License, Member};
use futures::{StreamExt, TryStreamExt};
use projections::{Projection, ProjectionError, StoredEvent};
use sqlx::PgPool;

use crate::store::{Actor, CommandBus, EventMetadata};

mod license;
mod member_status;

pub use license::LicensePolicy;
pub use member_status::MemberStatusPolicy;

/// Metadata for a command a policy issues because of `event`.
fn caused_by(event: &StoredEvent) -> EventMetadata {
    EventMetadata {
        correlation_id: event.metadata["correlation_id"]
            .as_str()
            .map_or_else(|| format!("event:{}", event.global_position), str::to_owned),
        causation_id: format!("event:{}", event.global_position),
        actor: Actor::System,
    }
}

fn command_error<E: std::error::Error>(err: AggregateError<E>) -> ProjectionError {
    ProjectionError::Command(err.to_string())
}

/// How many aggregates' commands a policy's batch runs at once.
pub const CONCURRENT_AGGREGATES: usize = 8;

/// The commands a policy's batch issues, in the order its events asked for them; `true` marks
/// a command on an aggregate known to have no events yet.
struct Commands<A: Aggregate> {
    issued: Vec<(String, A::Command, EventMetadata, bool)>,
}

impl<A> Commands<A>
where
    A: Aggregate<Services = ()> + 'static,
    A::Command: Clone + Send + Sync,
    A::Error: Send,
{
    fn new() -> Self {
        Self { issued: Vec::new() }
    }

    fn push(&mut self, aggregate_id: String, command: A::Command, metadata: EventMetadata) {
        self.issued.push((aggregate_id, command, metadata, false));
    }

    /// A command that creates an aggregate known to have no events (`CommandBus::execute_new`:
    /// were it wrong, the command runs against the stored events).
    fn push_new(&mut self, aggregate_id: String, command: A::Command, metadata: EventMetadata) {
        self.issued.push((aggregate_id, command, metadata, true));
    }

    /// Runs the commands: one aggregate's in order, different aggregates' concurrently.
    async fn run(self, bus: &CommandBus<A>) -> Result<(), ProjectionError> {
        type Group<A> = (
            String,
            Vec<(<A as Aggregate>::Command, EventMetadata, bool)>,
        );
        let mut groups: Vec<Group<A>> = Vec::new();
        let mut slots: HashMap<String, usize> = HashMap::new();
        for (aggregate_id, command, metadata, new) in self.issued {
            let slot = match slots.get(&aggregate_id) {
                Some(&slot) => slot,
                None => {
                    slots.insert(aggregate_id.clone(), groups.len());
                    groups.push((aggregate_id, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[slot].1.push((command, metadata, new));
        }
        futures::stream::iter(groups)
            .map(|(aggregate_id, commands)| async move {
                for (command, metadata, new) in commands {
                    if new {
                        bus.execute_new(&aggregate_id, command, metadata).await
                    } else {
                        bus.execute(&aggregate_id, command, metadata).await
                    }
                    .map_err(command_error)?;
                }
                Ok::<(), ProjectionError>(())
            })
            .buffer_unordered(CONCURRENT_AGGREGATES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// Every policy the server runs.
pub fn all(
    pool: &PgPool,
    members: Arc<CommandBus<Member>>,
    licenses: Arc<CommandBus<License>>,
    mail: crate::member_mail::MemberMailSettings,
) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(MemberStatusPolicy { members }),
        Arc::new(LicensePolicy {
            pool: pool.clone(),
            licenses,
        }),
        Arc::new(crate::outbound::OutboundWebhooks),
        crate::member_mail::MemberMail::new(mail),
    ]
}
