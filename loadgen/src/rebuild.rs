//! `loadgen rebuild` (scenario c): times `memberledger projections rebuild --all`.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::RebuildArgs;
use crate::database::connect;
use crate::measure::loadavg;
use crate::memory::run_measured;
use crate::results::write_result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RebuildResult {
    pub available: bool,
    pub note: Option<String>,
    pub log_events: i64,
    pub wall_s: Option<f64>,
    pub events_per_s: Option<f64>,
    /// Peak resident memory of the rebuild process, sampled every 100 ms.
    pub peak_rss_kb: Option<u64>,
    pub loadavg: String,
    /// What the command printed: one line per projection.
    #[serde(default)]
    pub output: Vec<String>,
}

pub async fn rebuild(args: RebuildArgs) -> Result<()> {
    let pool = connect(&args.db, 2).await?;
    let log_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let help = tokio::process::Command::new(&args.memberledger)
        .args(["projections", "rebuild", "--help"])
        .output()
        .await
        .with_context(|| format!("running {}", args.memberledger.display()))?;
    if !help.status.success() {
        let note = "`memberledger projections rebuild` does not exist in this build yet".to_owned();
        println!("rebuild: {note}");
        return write_result(
            &args.common,
            "rebuild",
            &RebuildResult {
                available: false,
                note: Some(note),
                log_events,
                wall_s: None,
                events_per_s: None,
                peak_rss_kb: None,
                loadavg: loadavg(),
                output: Vec::new(),
            },
        );
    }
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let loadavg = loadavg();
    let mut command = tokio::process::Command::new(&args.memberledger);
    command
        .args(["projections", "rebuild", "--all"])
        .env("DATABASE_URL", &args.db.database_url);
    let run = run_measured(command, Duration::from_secs(args.timeout), "the rebuild").await?;
    let out = run.stdout;
    let peak = run.peak_rss_kb;
    // The command rebuilds synchronously. Anything it appended (policies replayed from the
    // start issue their commands again) is left for the server's runners.
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let appended: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, count(*) FROM events WHERE global_position > (
             SELECT max(global_position) FROM (SELECT global_position FROM events
                                               ORDER BY global_position LIMIT $1) AS before)
         GROUP BY event_type ORDER BY event_type",
    )
    .bind(log_events)
    .fetch_all(&pool)
    .await?;
    let wall_s = run.wall_s;
    let result = RebuildResult {
        available: true,
        note: (after > log_events).then(|| {
            let kinds: Vec<String> = appended.iter().map(|(t, n)| format!("{n} {t}")).collect();
            format!(
                "The rebuild appended {} event(s) to the log while it ran: {}.",
                after - log_events,
                kinds.join(", ")
            )
        }),
        output: out.lines().map(str::to_owned).collect(),
        log_events,
        wall_s: Some(wall_s),
        events_per_s: Some(log_events as f64 / wall_s),
        peak_rss_kb: (peak > 0).then_some(peak),
        loadavg,
    };
    println!(
        "rebuild --all: {log_events} events in {wall_s:.1} s ({:.0} events/s), peak RSS {} MB",
        result.events_per_s.unwrap_or_default(),
        peak / 1024
    );
    write_result(&args.common, "rebuild", &result)
}
