//! `loadgen seed` (scenario c): a large log of member events inserted with SQL, and the
//! running server's catch-up.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cli::SeedArgs;
use crate::database::{connect, wait_caught_up};
use crate::measure::loadavg;
use crate::payloads::{event_metadata, member_created_payload, member_updated_payload};
use crate::results::write_result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedResult {
    pub events: i64,
    pub members: i64,
    pub insert_s: f64,
    /// Events in the log after seeding (the seeded ones and everything before).
    pub log_events: i64,
    /// From the seed's commit until every projection had applied the log.
    pub catchup_s: Option<f64>,
    pub catchup_events_per_s: Option<f64>,
    /// Whether the catch-up was waited for (`--wait`).
    #[serde(default)]
    pub waited: bool,
    pub loadavg: String,
}

/// The seeded member `g.i`'s creation time, `t.at`: ten seconds after the previous one's.
const SEEDED_AT: &str =
    "CROSS JOIN LATERAL (SELECT timestamp '2025-01-01' + g.i * interval '10 seconds' AS at) AS t";

/// The seeded member `g.i`'s id, created at `t.at`: a UUIDv7 (48 bits of Unix milliseconds,
/// version 7, variant 10) whose other bits are the md5 of the index.
const SEEDED_ID: &str = "overlay(overlay(overlay(md5('memberledger-bench-' || g.i)
        placing lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0') FROM 1 FOR 12)
        placing '7' FROM 13 FOR 1)
        placing '8' FROM 17 FOR 1)::uuid";

pub async fn seed(args: SeedArgs) -> Result<()> {
    let pool = connect(&args.db, 2).await?;
    let members = args.events / 2;
    let created = member_created_payload(Uuid::nil(), "seed@example.com")?;
    let updated = member_updated_payload()?;
    let metadata = event_metadata("loadgen-seed");
    let loadavg = loadavg();
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    // Two events per member, in order, in one transaction; emails are reserved in the lookup
    // like the API does. Member ids are UUIDv7 of the member's creation time, as the API makes
    // them (`Uuid::now_v7`): their indexes grow at the right, not at random pages. The random
    // bits are the md5 of the index, so a later run can find them.
    sqlx::query(
        &"INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'Member', m.id::text, s.seq,
                CASE s.seq WHEN 1 THEN 'MemberCreated' ELSE 'MemberUpdated' END,
                CASE s.seq WHEN 1 THEN '1.1' ELSE '1.0' END,
                CASE s.seq
                  WHEN 1 THEN jsonb_set(jsonb_set(jsonb_set($1::jsonb,
                         '{MemberCreated,member_id}', to_jsonb(m.id::text)),
                         '{MemberCreated,email}', to_jsonb('seed' || g.i || '@seed.example.com')),
                         '{MemberCreated,created_at}', to_jsonb(to_char(m.at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')))
                  ELSE jsonb_set(jsonb_set($2::jsonb,
                         '{MemberUpdated,name}', to_jsonb('Seeded Member ' || g.i)),
                         '{MemberUpdated,updated_at}', to_jsonb(to_char(m.at + interval '1 day', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')))
                END::json,
                $3::json
         FROM generate_series(1, $4::bigint) AS g(i)
         {SEEDED_AT}
         CROSS JOIN LATERAL (SELECT {SEEDED_ID} AS id, t.at) AS m
         CROSS JOIN (VALUES (1), (2)) AS s(seq)"
            .replace("{SEEDED_AT}", SEEDED_AT)
            .replace("{SEEDED_ID}", SEEDED_ID),
    )
    .bind(&created)
    .bind(&updated)
    .bind(&metadata)
    .bind(members)
    .execute(&mut *tx)
    .await
    .context("inserting the seeded events")?;
    sqlx::query(
        &"INSERT INTO member_emails (email, member_id, reserved_at)
         SELECT 'seed' || g.i || '@seed.example.com', {SEEDED_ID}, now()
         FROM generate_series(1, $1::bigint) AS g(i)
         {SEEDED_AT}"
            .replace("{SEEDED_AT}", SEEDED_AT)
            .replace("{SEEDED_ID}", SEEDED_ID),
    )
    .bind(members)
    .execute(&mut *tx)
    .await
    .context("reserving the seeded emails")?;
    tx.commit().await?;
    let insert_s = started.elapsed().as_secs_f64();
    println!(
        "seed: {} events ({members} members) inserted in {insert_s:.1} s ({:.0} events/s)",
        members * 2,
        (members * 2) as f64 / insert_s
    );
    // What autovacuum does shortly after a bulk load (the runners' plans depend on the
    // statistics), done now rather than at a moment of autovacuum's choosing: during the
    // rebuild that follows, it would compete with it for the cores.
    sqlx::query("VACUUM (ANALYZE) events")
        .execute(&pool)
        .await?;
    sqlx::query("VACUUM (ANALYZE) member_emails")
        .execute(&pool)
        .await?;
    let caught = if args.wait {
        wait_caught_up(&pool, Duration::from_secs(args.catchup_timeout))
            .await
            .map(Some)
    } else {
        Ok(None)
    };
    let catchup_s = caught
        .as_ref()
        .ok()
        .and_then(|d| d.map(|d| insert_s + d.as_secs_f64()));
    let log_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let result = SeedResult {
        events: members * 2,
        members,
        insert_s,
        log_events,
        // Measured from the commit: the runners could not see the events before.
        catchup_s: catchup_s.map(|s| s - insert_s),
        catchup_events_per_s: catchup_s.map(|s| (members * 2) as f64 / (s - insert_s)),
        waited: args.wait,
        loadavg,
    };
    match result.catchup_s {
        Some(s) => println!(
            "seed: the running server's projections applied them in {s:.1} s ({:.0} events/s); log has {log_events} events",
            result.catchup_events_per_s.unwrap_or_default()
        ),
        None if args.wait => println!("seed: the projections did not catch up"),
        None => println!("seed: the log has {log_events} events"),
    }
    write_result(&args.common, "seed", &result)?;
    caught.map(|_| ())
}
