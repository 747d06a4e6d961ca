//! Inline projections at startup: before the server serves commands, every inline projection
//! must hold every committed event, because from then on only the appending transactions write
//! it. A projection that was asynchronous (an older version ran it with a runner) is caught up
//! from its checkpoint; one never built is built from the log. Both happen under
//! [`lock_appends`], so no command appends meanwhile and no event is applied twice or missed;
//! other instances starting at the same time wait for the lock and find the work done. A
//! projection whose code version changed is then rebuilt blue/green in the background (the
//! live tables stay current meanwhile; the swap pauses appends for its last events).

use std::sync::Arc;

use anyhow::Context;
use projections::{Mode, Projection};
use sqlx::PgPool;

use crate::eventlog::{last_below, lock_appends, read_after, Horizon, LogPosition};
use crate::rebuild::{self, RebuildError};

const BATCH: i64 = 5000;

/// Makes every inline projection in `list` current (see the module docs); spawns the rebuilds
/// of those whose version changed.
pub async fn prepare(pool: &PgPool, list: &[Arc<dyn Projection>]) -> anyhow::Result<()> {
    for projection in list.iter().filter(|p| p.mode() == Mode::Inline) {
        let version_changed = catch_up(pool, projection.as_ref()).await.with_context(|| {
            format!(
                "bringing the inline projection {} up to the log",
                projection.name()
            )
        })?;
        if version_changed {
            let (pool, projection) = (pool.clone(), projection.clone());
            tracing::warn!(
                projection = projection.name(),
                "projection version changed; rebuilding from the log"
            );
            tokio::spawn(async move {
                match rebuild::rebuild(&pool, projection.clone(), |_| {}).await {
                    Ok(_) | Err(RebuildError::AlreadyRunning(_)) => {}
                    Err(err) => tracing::error!(
                        projection = projection.name(),
                        error = format!("{err:#}"),
                        "rebuild failed"
                    ),
                }
            });
        }
    }
    Ok(())
}

/// Catches `projection` up under the append lock unless it is inline already; returns whether
/// its stored version differs from the code's.
async fn catch_up(pool: &PgPool, projection: &dyn Projection) -> anyhow::Result<bool> {
    let name = projection.name();
    // Cheap check first: the usual start finds it inline and takes no lock.
    let mode: Option<(i32, String)> =
        sqlx::query_as("SELECT version, mode FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    if let Some((version, mode)) = mode {
        if mode == "inline" {
            return Ok(version != projection.version());
        }
    }
    let mut tx = crate::db::begin(pool, crate::db::PoolName::Background).await?;
    lock_appends(&mut tx).await?;
    let row: Option<(i32, String, i64, i64)> = sqlx::query_as(
        "SELECT version, mode, transaction_id::text::bigint, global_position
         FROM projection_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let (version, mut position) = match row {
        Some((version, mode, ..)) if mode == "inline" => {
            tx.rollback().await?;
            return Ok(version != projection.version());
        }
        Some((version, _, transaction_id, global_position)) => (
            version,
            LogPosition {
                transaction_id,
                global_position,
            },
        ),
        None => {
            // Never built here: whatever its tables hold did not come from this projection.
            for table in projection.tables() {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut *tx)
                    .await?;
            }
            (projection.version(), LogPosition::default())
        }
    };
    let mut applied: i64 = 0;
    loop {
        let events = read_after(
            &mut tx,
            position,
            BATCH,
            Some(projection.handles()),
            Horizon::Unbounded,
        )
        .await?;
        let Some(last) = events.last() else { break };
        position = LogPosition {
            transaction_id: last.transaction_id,
            global_position: last.global_position,
        };
        projection.apply_batch(&mut tx, &events).await?;
        applied += i64::try_from(events.len()).unwrap_or(i64::MAX);
    }
    if let Some(end) = last_below(&mut tx, Horizon::Unbounded).await? {
        position = position.max(end);
    }
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, version, transaction_id, global_position, events_applied, mode)
         VALUES ($1, $2, $3::text::xid8, $4, $5, 'inline')
         ON CONFLICT (name) DO UPDATE SET transaction_id = EXCLUDED.transaction_id,
             global_position = EXCLUDED.global_position,
             events_applied = projection_checkpoints.events_applied + EXCLUDED.events_applied,
             mode = 'inline', updated_at = now(), last_error = NULL",
    )
    .bind(name)
    .bind(version)
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .bind(applied)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        projection = name,
        events = applied,
        "inline projection caught up with the log"
    );
    Ok(version != projection.version())
}
