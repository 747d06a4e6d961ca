//! Complimentary access (#16): a tier an admin gives a member for free, until a time or without
//! end. The comp lives on the Member aggregate (`GrantComp`, `EndComp`), which applies the
//! status rule (`MemberStatus::of`); the license policy follows it like a paid subscription to
//! the tier's product. Here: the comps whose `until` passed, ended by a sweeper.

use std::sync::Arc;
use std::time::Duration;

use aggregates::{CompEndReason, Member, MemberCommand};
use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{Actor, CommandBus, EventMetadata};

/// How often the server ends expired comps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Ends every comp whose `until` has passed (up to 500 a round, `member_comps`); returns how
/// many it asked to end. `EndComp` with `Expired` is idempotent and a no-op while `until` is
/// ahead (extended meanwhile), so instances sweeping at once end each comp once.
pub async fn sweep(pool: &PgPool, members: &CommandBus<Member>) -> anyhow::Result<usize> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT member_id FROM member_comps WHERE until <= now() ORDER BY until LIMIT 500",
    )
    .fetch_all(pool)
    .await?;
    for member_id in &due {
        let command = MemberCommand::EndComp {
            reason: CompEndReason::Expired,
            at: Utc::now(),
        };
        let metadata = EventMetadata {
            correlation_id: format!("comp-sweep:{member_id}"),
            causation_id: "comp-sweep".into(),
            actor: Actor::System,
        };
        members
            .execute(&member_id.to_string(), command, metadata)
            .await?;
    }
    Ok(due.len())
}

/// Sweeps every `every` until `shutdown`.
pub async fn sweeper(
    pool: PgPool,
    members: Arc<CommandBus<Member>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match sweep(&pool, &members).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(ended = n, "ended expired complimentary access"),
            Err(err) => tracing::warn!(error = format!("{err:#}"), "comp sweep failed"),
        }
    }
}
