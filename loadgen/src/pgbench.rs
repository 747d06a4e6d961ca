//! `loadgen pgbench`: the physical limit, pgbench inserting one events-shaped row per
//! transaction.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::PgbenchArgs;
use crate::database::connect;
use crate::measure::{histogram, loadavg, record, Latency};
use crate::payloads::{event_metadata, member_created_payload};
use crate::results::write_result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgbenchRun {
    /// `insert`; `insert, then notify` (the server's appends: a NOTIFY after the commit, in a
    /// transaction of its own); or `insert+notify trigger` (a NOTIFY inside the inserting
    /// transaction, as the server did before migration 20261124000011).
    pub variant: String,
    pub clients: usize,
    pub tps: f64,
    pub transactions: u64,
    pub latency: Latency,
    pub loadavg: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgbenchResult {
    pub server_version: String,
    pub settings: BTreeMap<String, String>,
    pub payload_bytes: usize,
    pub seconds: u64,
    pub runs: Vec<PgbenchRun>,
}

/// The settings that decide how fast a commit is.
pub const PG_SETTINGS: &[&str] = &[
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "max_wal_size",
    "max_connections",
];

pub async fn server_facts(pool: &PgPool) -> Result<(String, BTreeMap<String, String>)> {
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(pool)
        .await?;
    let mut settings = BTreeMap::new();
    for name in PG_SETTINGS {
        let value: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(pool)
            .await?;
        settings.insert((*name).to_owned(), value);
    }
    Ok((version, settings))
}

/// What pgbench connects to.
pub struct PgTarget {
    pub host: String,
    pub port: String,
    pub user: String,
    pub dbname: String,
}

impl PgTarget {
    pub fn from_url(url: &str) -> Result<Self> {
        let url = url::Url::parse(url).context("BENCH_DATABASE_URL is not a URL")?;
        Ok(Self {
            host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: url.port().unwrap_or(5432).to_string(),
            user: if url.username().is_empty() {
                "postgres".to_owned()
            } else {
                url.username().to_owned()
            },
            dbname: url.path().trim_start_matches('/').to_owned(),
        })
    }
}

/// One pgbench run of `script` with `clients` clients; latencies from its per-transaction log.
pub async fn pgbench_run(
    pgbench: &Path,
    target: &PgTarget,
    dir: &Path,
    script: &Path,
    label: &str,
    clients: usize,
    seconds: u64,
) -> Result<(f64, Histogram<u64>)> {
    let prefix = format!("{}-c{clients}", label.replace([' ', ',', '+'], "_"));
    let ours = |entry: &std::fs::DirEntry| {
        entry
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{prefix}."))
    };
    for entry in std::fs::read_dir(dir)?.flatten() {
        if ours(&entry) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let out = tokio::process::Command::new(pgbench)
        .args([
            "-n",
            "-M",
            "prepared",
            "-h",
            &target.host,
            "-p",
            &target.port,
        ])
        .args(["-U", &target.user])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(clients.clamp(1, 2).to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(script)
        .arg("-l")
        .arg(format!("--log-prefix={}", dir.join(&prefix).display()))
        .arg(&target.dbname)
        .current_dir(dir)
        .output()
        .await
        .with_context(|| format!("running {}", pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps line in pgbench's output:\n{stdout}"))?;
    let mut hist = histogram();
    for entry in std::fs::read_dir(dir)?.flatten() {
        if !ours(&entry) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        for line in text.lines() {
            // client_id transaction_no time_us script_no time_epoch time_us
            if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                record(&mut hist, Duration::from_micros(us));
            }
        }
    }
    Ok((tps, hist))
}

pub async fn pgbench(args: PgbenchArgs) -> Result<()> {
    let pool = connect(&args.db, 2).await?;
    let (server_version, settings) = server_facts(&pool).await?;
    let payload = member_created_payload(Uuid::nil(), "pgbench@example.com")?.to_string();
    let metadata = event_metadata("pgbench").to_string();
    // Copies of `events` (same columns, defaults, identity and indexes); the second also has
    // a statement trigger that NOTIFYs inside the inserting transaction.
    let mut setup = vec![
        "DROP TABLE IF EXISTS bench_pgbench_events, bench_pgbench_events_notify".to_owned(),
        "CREATE TABLE bench_pgbench_events (LIKE events INCLUDING ALL)".to_owned(),
        "CREATE TABLE bench_pgbench_events_notify (LIKE events INCLUDING ALL)".to_owned(),
        "CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS
         $f$ BEGIN PERFORM pg_notify('bench_pgbench', ''); RETURN NULL; END; $f$"
            .to_owned(),
        "CREATE TRIGGER bench_pgbench_events_appended AFTER INSERT ON bench_pgbench_events_notify
         FOR EACH STATEMENT EXECUTE FUNCTION bench_notify()"
            .to_owned(),
    ];
    // pgbench reads `:name` in a script as a variable, and JSON is full of colons: the
    // constants come from immutable functions, folded into the prepared plan.
    for (function, value) in [
        ("bench_event_payload", &payload),
        ("bench_event_metadata", &metadata),
    ] {
        setup.push(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS json LANGUAGE sql IMMUTABLE AS $f$ SELECT '{}'::json $f$",
            value.replace('\'', "''")
        ));
    }
    for statement in &setup {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .with_context(|| format!("{statement} (is the database migrated?)"))?;
    }
    let dir = args.common.results.join("pgbench");
    std::fs::create_dir_all(&dir)?;
    // pgbench runs in `dir`: a relative `--results` would not name the script from there.
    let dir = std::fs::canonicalize(&dir)?;
    let target = PgTarget::from_url(&args.db.database_url)?;

    let mut runs = Vec::new();
    // The server's way: the NOTIFY in its own transaction after the commit, not waiting for
    // its WAL flush (`db::notify`).
    let notify_after = "SELECT set_config('synchronous_commit', 'off', true), \
                        pg_notify('bench_pgbench', '');\n";
    for (variant, table, after) in [
        ("insert", "bench_pgbench_events", ""),
        ("insert, then notify", "bench_pgbench_events", notify_after),
        ("insert+notify trigger", "bench_pgbench_events_notify", ""),
    ] {
        let script = dir.join(format!("{}.sql", variant.replace([' ', ',', '+'], "_")));
        std::fs::write(
            &script,
            format!(
                "INSERT INTO {table} (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata) VALUES ('Member', gen_random_uuid()::text, 1, \
                 'MemberCreated', '1.1', bench_event_payload(), bench_event_metadata());\n{after}"
            ),
        )?;
        for &clients in &args.clients {
            sqlx::query("CHECKPOINT").execute(&pool).await?;
            let loadavg = loadavg();
            let (tps, hist) = pgbench_run(
                &args.pgbench,
                &target,
                &dir,
                &script,
                variant,
                clients,
                args.seconds,
            )
            .await?;
            let run = PgbenchRun {
                variant: variant.to_owned(),
                clients,
                tps,
                transactions: hist.len(),
                latency: Latency::of(&hist),
                loadavg,
            };
            println!(
                "pgbench {variant:<26} c={clients:<3} {tps:>9.1}/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                run.latency.p50_ms, run.latency.p99_ms
            );
            runs.push(run);
        }
    }
    for statement in [
        "DROP TABLE bench_pgbench_events, bench_pgbench_events_notify",
        "DROP FUNCTION bench_event_payload(), bench_event_metadata(), bench_notify()",
    ] {
        sqlx::query(statement).execute(&pool).await?;
    }
    write_result(
        &args.common,
        "pgbench",
        &PgbenchResult {
            server_version,
            settings,
            payload_bytes: payload.len(),
            seconds: args.seconds,
            runs,
        },
    )
}
