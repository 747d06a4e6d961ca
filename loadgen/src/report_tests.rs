//! The page rendered from sample results: the stock and lag sections, the ratios to the stock
//! pipeline, the targets' verdicts, and the kept analysis.

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::{Common, ReportArgs};
use crate::database::DbCost;
use crate::lag::LagResult;
use crate::measure::{Latency, Run};
use crate::members::MembersResult;
use crate::pgbench::{PgbenchResult, PgbenchRun};
use crate::reads::{ReadRun, ReadsResult};
use crate::report::{report, ANALYSIS_END, ANALYSIS_START};
use crate::results::write_result;
use crate::stock::{StockReplay, StockResult, StockRun};

fn latency(p50_ms: f64, p99_ms: f64) -> Latency {
    Latency {
        count: 100,
        mean_ms: p50_ms,
        p50_ms,
        p90_ms: p99_ms,
        p99_ms,
        max_ms: p99_ms,
    }
}

fn run(concurrency: usize, per_second: f64, write_txns_per_unit: f64) -> Run {
    Run {
        concurrency,
        ok: 1000,
        per_second,
        elapsed_s: 10.0,
        latency: latency(2.0, 4.0),
        loadavg: "0.50 0.40 0.30".to_owned(),
        db: Some(DbCost {
            write_txns: (write_txns_per_unit * 1000.0) as i64,
            wal_bytes: 1024 * 1000,
            write_txns_per_unit,
            wal_bytes_per_unit: 1024.0,
        }),
        ..Run::default()
    }
}

/// A fresh directory under the system's temporary directory.
fn scratch() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("loadgen-report-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn write_samples(common: &Common) -> Result<()> {
    write_result(
        common,
        "pgbench",
        &PgbenchResult {
            server_version: "PostgreSQL 17".to_owned(),
            settings: Default::default(),
            payload_bytes: 400,
            seconds: 10,
            runs: vec![PgbenchRun {
                variant: "insert".to_owned(),
                clients: 16,
                tps: 10_000.0,
                transactions: 100_000,
                latency: latency(1.0, 3.0),
                loadavg: String::new(),
            }],
        },
    )?;
    write_result(
        common,
        "stock",
        &StockResult {
            runs: vec![
                StockRun {
                    command: "Create".to_owned(),
                    run: run(16, 2000.0, 2.0),
                    view_errors: 0,
                },
                StockRun {
                    command: "Update".to_owned(),
                    run: run(16, 1500.0, 2.0),
                    view_errors: 0,
                },
            ],
            replay: StockReplay {
                events: 50_000,
                members: 40_000,
                view_rows: 40_000,
                seconds: 25.0,
                events_per_s: 2000.0,
                view_errors: 0,
                loadavg: String::new(),
                db: None,
            },
        },
    )?;
    // Half the stock rate, within the write-transaction budget.
    write_result(
        common,
        "members",
        &MembersResult {
            runs: vec![run(16, 1000.0, 1.5)],
            log_events: Some(20_000),
        },
    )?;
    write_result(
        common,
        "lag",
        &LagResult {
            read_model: "member_timeline".to_owned(),
            rate_per_s: 20.0,
            seconds: 10,
            created: 200,
            errors: 0,
            first_error: None,
            seen: 200,
            missing: 0,
            lag: latency(8.0, 21.5),
            http: latency(6.0, 12.0),
            polls: 900,
            poll_interval_ms: 1,
            loadavg: String::new(),
        },
    )?;
    write_result(
        common,
        "reads",
        &ReadsResult {
            log_events: 1_000_000,
            members: 500_000,
            runs: vec![
                ReadRun {
                    name: "GET dashboard (seeded members)".to_owned(),
                    run: Run {
                        latency: latency(1.0, 7.25),
                        ..run(16, 3000.0, 0.0)
                    },
                },
                ReadRun {
                    name: "POST /v1/licenses/validate".to_owned(),
                    run: run(16, 5000.0, 0.0),
                },
            ],
            license_note: None,
        },
    )
}

#[test]
fn the_page_compares_with_the_stock_pipeline_and_judges_every_target() -> Result<()> {
    let dir = scratch()?;
    let common = Common {
        results: dir.join("results"),
    };
    write_samples(&common)?;
    let out = dir.join("benchmarks.md");
    std::fs::write(
        &out,
        format!("# old page\n\n{ANALYSIS_START}\nHand-written analysis.\n{ANALYSIS_END}\n"),
    )?;
    report(&ReportArgs {
        common,
        out: out.clone(),
        note: String::new(),
        commit: Some("abc123".to_owned()),
    })?;
    let page = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_dir_all(&dir);

    let row = |starts: &str| {
        page.lines()
            .find(|l| l.starts_with(starts))
            .unwrap_or_default()
            .to_owned()
    };
    // Ours at 16 clients: 10% of pgbench, 50% of the stock pipeline.
    assert_eq!(
        row("| 16 | 1000 |"),
        "| 16 | 1000 | 10% | 50% | 2.00 | 4.00 | 4.00 | 0 | 1.5 | 1.0 | 0.50 0.40 0.30 |"
    );
    assert!(
        row("| member creation over HTTP at 16 clients").contains("**missed**: 50% of the target")
    );
    assert!(row("| member creation: ≤ 2 write transactions").ends_with("| **met** |"));
    assert!(row("| projection lag at rest").contains("p99 21.5 ms"));
    assert!(row("| projection lag at rest").ends_with("| **met** |"));
    assert!(row("| dashboard p99 ≤ 5 ms at 16 clients").contains("**missed**: 1.45× the limit"));
    assert!(row("| license validation: no write transaction").ends_with("| **met** |"));
    assert!(row("| Stripe events processed end to end").ends_with("| not measured |"));
    // The stock pipeline's own section, its replay as a share of pgbench.
    assert!(row("| `Create` | 16 | 2000 | 20% |").contains("| 2.0 | 1.0 |"));
    assert!(page
        .contains("50000 events of 40000 members in 25.00 s, **2000 events/s** (20% vs pgbench"));
    assert!(page.contains("| append → visible in `member_timeline` | 200 of 200 created | 8.00 |"));
    // The analysis is kept.
    assert!(page.contains(&format!(
        "{ANALYSIS_START}\nHand-written analysis.\n{ANALYSIS_END}"
    )));
    Ok(())
}
