//! `loadgen import` (scenario f): `memberledger members import` of a generated file of new
//! members, timed with its peak memory, then the same file again (which must append nothing).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::ImportArgs;
use crate::database::connect;
use crate::measure::loadavg;
use crate::memory::run_measured;
use crate::report::{rate, share};
use crate::results::write_result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportResult {
    pub members: u64,
    pub file_bytes: u64,
    pub first: Pass,
    pub again: Pass,
    pub loadavg: String,
}

/// One run of the command over the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pass {
    pub wall_s: f64,
    pub rows_per_s: f64,
    pub peak_rss_kb: u64,
    /// Events the log grew by.
    pub events_appended: i64,
    /// What the command printed: `{"rows":…,"created":…,…}`.
    pub summary: serde_json::Value,
}

pub async fn import(args: ImportArgs) -> Result<()> {
    let file = args.common.results.join("import.csv");
    std::fs::create_dir_all(&args.common.results)?;
    let file_bytes = write_file(&file, args.members)?;
    let pool = connect(&args.db, 2).await?;
    let loadavg = loadavg();
    let mut passes = Vec::new();
    for pass in ["first", "again"] {
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        let mut command = tokio::process::Command::new(&args.memberledger);
        command
            .args(["members", "import"])
            .arg(&file)
            .arg("--report")
            .arg(
                args.common
                    .results
                    .join(format!("import-{pass}-report.csv")),
            )
            .env("DATABASE_URL", &args.db.database_url);
        let run = run_measured(
            command,
            Duration::from_secs(args.timeout),
            "`memberledger members import`",
        )
        .await?;
        let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        let summary: serde_json::Value = serde_json::from_str(run.stdout.trim())
            .with_context(|| format!("the import's summary: {}", run.stdout))?;
        let pass = Pass {
            wall_s: run.wall_s,
            rows_per_s: args.members as f64 / run.wall_s.max(1e-9),
            peak_rss_kb: run.peak_rss_kb,
            events_appended: after - before,
            summary,
        };
        println!(
            "import ({}): {} rows in {:.1} s ({:.0}/s), {} events appended, peak RSS {} MB: {}",
            passes.len() + 1,
            args.members,
            pass.wall_s,
            pass.rows_per_s,
            pass.events_appended,
            pass.peak_rss_kb / 1024,
            pass.summary
        );
        passes.push(pass);
    }
    let again = passes.pop().context("two passes")?;
    let first = passes.pop().context("two passes")?;
    write_result(
        &args.common,
        "import",
        &ImportResult {
            members: args.members,
            file_bytes,
            first,
            again,
            loadavg,
        },
    )
}

/// New members with a name, a note and two labels each, as Ghost's export has them.
fn write_file(path: &std::path::Path, members: u64) -> Result<u64> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(
        out,
        "email,name,note,labels,subscribed_to_emails,created_at"
    )?;
    for i in 0..members {
        writeln!(
            out,
            "import-{i:07}@bench.example,Imported Member {i},from the old site,\"imported,batch-{}\",true,2024-01-01T00:00:00Z",
            i % 10
        )?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Section f of the page.
pub fn import_section(
    w: &mut String,
    import: Option<&ImportResult>,
    pgbench_16: Option<f64>,
) -> std::fmt::Result {
    writeln!(w, "## f. Members import (`memberledger members import`)")?;
    writeln!(w)?;
    let Some(r) = import else {
        writeln!(w, "Not measured in this run.")?;
        writeln!(w)?;
        return Ok(());
    };
    writeln!(
        w,
        "A generated file of {} new members ({:.1} MB: email, name, note, two labels, \
         `created_at`), imported by the command into the benchmark's database while the server \
         runs (its projections catch up meanwhile), then the same file again. \"vs pgbench\": \
         the share of pgbench's single-insert rate at 16 clients. Peak RSS is the command's, \
         sampled every 100 ms; loadavg {}.",
        r.members,
        r.file_bytes as f64 / 1e6,
        r.loadavg
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "| pass | rows/s | vs pgbench | wall s | created | unchanged | refused | events appended | peak RSS MB |"
    )?;
    writeln!(
        w,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (name, p) in [("new members", &r.first), ("the same file again", &r.again)] {
        let field = |k: &str| {
            p.summary
                .get(k)
                .map_or_else(|| "–".to_owned(), ToString::to_string)
        };
        writeln!(
            w,
            "| {name} | {} | {} | {:.1} | {} | {} | {} | {} | {:.1} |",
            rate(p.rows_per_s),
            share(p.rows_per_s, pgbench_16),
            p.wall_s,
            field("created"),
            field("unchanged"),
            field("refused"),
            p.events_appended,
            p.peak_rss_kb as f64 / 1024.0
        )?;
    }
    writeln!(w)?;
    Ok(())
}
