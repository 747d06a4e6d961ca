//! The report's "Targets" table: each target of issue #12 with its figure from the run and
//! whether it was met, and by how much when it was not.

use std::fmt::Write as _;

use crate::lag::LagResult;
use crate::members::MembersResult;
use crate::reads::ReadsResult;
use crate::rebuild::RebuildResult;
use crate::report::{ms, rate};
use crate::seed::SeedResult;
use crate::stock::StockResult;
use crate::webhooks::WebhooksResult;

/// The results the targets are judged on (whatever the run produced).
pub struct Figures<'a> {
    /// pgbench's single-insert rate at 16 clients.
    pub pgbench_16: Option<f64>,
    pub stock: Option<&'a StockResult>,
    pub members: Option<&'a MembersResult>,
    pub hooks: Option<&'a WebhooksResult>,
    /// Acceptance with the inbox paused.
    pub hooks_paused: Option<&'a WebhooksResult>,
    pub seeded: Option<&'a SeedResult>,
    pub rebuilt: Option<&'a RebuildResult>,
    pub reads: Option<&'a ReadsResult>,
    pub lag: Option<&'a LagResult>,
    /// The larger VmHWM of the server processes, in kB.
    pub server_peak_rss_kb: Option<u64>,
    pub import: Option<&'a crate::import::ImportResult>,
}

pub struct Target {
    pub target: &'static str,
    pub measured: String,
    pub verdict: Verdict,
}

pub enum Verdict {
    Met,
    /// Missed, and by how much.
    Missed(String),
    NotMeasured,
}

impl Verdict {
    /// At least `goal`.
    fn at_least(value: f64, goal: f64, ok: bool) -> Self {
        if value >= goal && ok {
            Self::Met
        } else if value >= goal {
            Self::Missed("the figure is reached, but with errors".to_owned())
        } else {
            Self::Missed(format!("{:.0}% of the target", 100.0 * value / goal))
        }
    }

    /// At most `limit`.
    fn at_most(value: f64, limit: f64, ok: bool) -> Self {
        if value <= limit && ok {
            Self::Met
        } else if value <= limit {
            Self::Missed("within the limit, but with errors".to_owned())
        } else if limit > 0.0 {
            let times = value / limit;
            Self::Missed(if times < 10.0 {
                format!("{times:.2}× the limit")
            } else {
                format!("{times:.0}× the limit")
            })
        } else {
            Self::Missed("above the limit".to_owned())
        }
    }

    pub fn cell(&self) -> String {
        match self {
            Self::Met => "**met**".to_owned(),
            Self::Missed(by) => format!("**missed**: {by}"),
            Self::NotMeasured => "not measured".to_owned(),
        }
    }
}

fn unmeasured(target: &'static str, why: &str) -> Target {
    Target {
        target,
        measured: why.to_owned(),
        verdict: Verdict::NotMeasured,
    }
}

pub fn targets(f: &Figures<'_>) -> Vec<Target> {
    let mut out = Vec::new();
    let members_16 = f
        .members
        .and_then(|m| m.runs.iter().find(|r| r.concurrency == 16));

    const CREATION: &str =
        "member creation over HTTP at 16 clients ≥ the stock pipeline's in-process commands/s (16 tasks)";
    out.push(match (members_16, f.stock.and_then(|s| s.creates_at(16))) {
        (Some(r), Some(stock)) => Target {
            target: CREATION,
            measured: format!(
                "{} commands/s vs {} (stock): {:.2}×",
                rate(r.per_second),
                rate(stock),
                r.per_second / stock.max(1e-9)
            ),
            verdict: Verdict::at_least(r.per_second, stock, r.errors == 0),
        },
        (None, _) => unmeasured(CREATION, "–"),
        (Some(r), None) => unmeasured(
            CREATION,
            &format!(
                "{} commands/s; the stock pipeline was not measured",
                rate(r.per_second)
            ),
        ),
    });

    const CREATION_TXNS: &str = "member creation: ≤ 2 write transactions per command (16 clients)";
    out.push(match members_16.and_then(|r| r.db.as_ref()) {
        Some(db) => Target {
            target: CREATION_TXNS,
            measured: format!("{:.2} write txns/command", db.write_txns_per_unit),
            verdict: Verdict::at_most(db.write_txns_per_unit, 2.0, true),
        },
        None => unmeasured(CREATION_TXNS, "–"),
    });

    const STRIPE: &str = "Stripe events processed end to end ≥ 1,000/s";
    out.push(match f.hooks {
        Some(h) => match (h.processed_per_s, h.end_to_end_s) {
            (Some(eps), Some(s)) => Target {
                target: STRIPE,
                measured: format!("{} events/s ({} events in {s:.1} s)", rate(eps), h.events),
                verdict: Verdict::at_least(eps, 1000.0, h.accept.errors == 0),
            },
            _ => Target {
                target: STRIPE,
                measured: format!("not drained: {}", h.drain_note.as_deref().unwrap_or("?")),
                verdict: Verdict::Missed("the events were not all processed".to_owned()),
            },
        },
        None => unmeasured(STRIPE, "–"),
    });

    const STRIPE_TXNS: &str = "Stripe events: ≤ 4 write transactions per event";
    out.push(match f.hooks.and_then(|h| h.processing_db.as_ref()) {
        Some(db) => Target {
            target: STRIPE_TXNS,
            measured: format!(
                "{:.1} write txns/event (accepting and processing)",
                db.write_txns_per_unit
            ),
            verdict: Verdict::at_most(db.write_txns_per_unit, 4.0, true),
        },
        None => unmeasured(STRIPE_TXNS, "–"),
    });

    const ACCEPT: &str = "webhook acceptance ≥ 30% of pgbench's single-insert rate at 16 clients";
    out.push(match (f.hooks_paused.or(f.hooks), f.pgbench_16) {
        (Some(h), Some(base)) => {
            let share = h.accept.per_second / base.max(1e-9);
            let mut measured = format!(
                "{} events/s = {:.0}% of {} inserts/s",
                rate(h.accept.per_second),
                100.0 * share,
                rate(base)
            );
            if h.accept_only {
                measured.push_str(" with the inbox paused");
                if let Some(busy) = f.hooks {
                    let _ = write!(
                        measured,
                        "; {} events/s = {:.0}% while processing the same burst",
                        rate(busy.accept.per_second),
                        100.0 * busy.accept.per_second / base.max(1e-9)
                    );
                }
            }
            Target {
                target: ACCEPT,
                measured,
                verdict: match Verdict::at_least(share, 0.3, h.accept.errors == 0) {
                    Verdict::Missed(_) if share < 0.3 => {
                        Verdict::Missed(format!("{:.0}% instead of 30%", 100.0 * share))
                    }
                    verdict => verdict,
                },
            }
        }
        _ => unmeasured(ACCEPT, "–"),
    });

    const REBUILD: &str = "rebuild of every projection from a 1M-event log ≥ 50,000 events/s";
    out.push(match f.rebuilt.filter(|r| r.available) {
        Some(r) => {
            let eps = r.events_per_s.unwrap_or_default();
            Target {
                target: REBUILD,
                measured: format!(
                    "{} events/s ({} events in {:.1} s)",
                    rate(eps),
                    r.log_events,
                    r.wall_s.unwrap_or_default()
                ),
                verdict: Verdict::at_least(eps, 50_000.0, true),
            }
        }
        None => {
            let catchup = f
                .seeded
                .and_then(|s| s.catchup_events_per_s)
                .map(|v| {
                    format!(
                        "; the live runners' catch-up on the same log: {} events/s",
                        rate(v)
                    )
                })
                .unwrap_or_default();
            unmeasured(
                REBUILD,
                &format!("`projections rebuild` not available in the measured build{catchup}"),
            )
        }
    });

    const REBUILD_RSS: &str = "rebuild: peak RSS ≤ 150 MB";
    out.push(match f.rebuilt.and_then(|r| r.peak_rss_kb) {
        Some(kb) => {
            let mb = kb as f64 / 1024.0;
            Target {
                target: REBUILD_RSS,
                measured: format!("{mb:.1} MB (VmHWM of the command, sampled every 100 ms)"),
                verdict: Verdict::at_most(mb, 150.0, true),
            }
        }
        None => unmeasured(REBUILD_RSS, "–"),
    });

    const SERVER_RSS: &str = "server: peak RSS ≤ 150 MB";
    out.push(match f.server_peak_rss_kb {
        Some(kb) => {
            let mb = kb as f64 / 1024.0;
            Target {
                target: SERVER_RSS,
                measured: format!("{mb:.1} MB (VmHWM, the larger of the server processes)"),
                verdict: Verdict::at_most(mb, 150.0, true),
            }
        }
        None => unmeasured(SERVER_RSS, "–"),
    });

    const DASHBOARD: &str = "dashboard p99 ≤ 5 ms at 16 clients with 1M events in the log";
    out.push(
        match f.reads.and_then(|r| {
            r.runs
                .iter()
                .filter(|x| x.name.contains("dashboard") && x.run.concurrency == 16)
                .max_by(|a, b| a.run.latency.p99_ms.total_cmp(&b.run.latency.p99_ms))
                .map(|x| (x, r.log_events))
        }) {
            Some((x, events)) => Target {
                target: DASHBOARD,
                measured: format!(
                    "p99 {} ms ({}, the slower kind; {} events in the log)",
                    ms(x.run.latency.p99_ms),
                    x.name
                        .trim_start_matches("GET dashboard ")
                        .trim_matches(['(', ')']),
                    events
                ),
                verdict: Verdict::at_most(x.run.latency.p99_ms, 5.0, x.run.errors == 0),
            },
            None => unmeasured(DASHBOARD, "no dashboard run at 16 clients"),
        },
    );

    const LICENSE: &str = "license validation: no write transaction per request";
    out.push(
        match f.reads.and_then(|r| {
            r.runs
                .iter()
                .filter(|x| x.name.contains("licenses/validate"))
                .filter_map(|x| x.run.db.as_ref().map(|db| (x, db)))
                .max_by(|a, b| a.1.write_txns_per_unit.total_cmp(&b.1.write_txns_per_unit))
        }) {
            // Background work (the server's runners, autovacuum) may assign a transaction id
            // now and then; one per hundred validations is no longer background.
            Some((x, db)) => Target {
                target: LICENSE,
                measured: format!(
                    "{:.3} write txns/validation ({} in {} validations at {} clients, the worst run)",
                    db.write_txns_per_unit, db.write_txns, x.run.ok, x.run.concurrency
                ),
                verdict: match Verdict::at_most(db.write_txns_per_unit, 0.01, x.run.errors == 0) {
                    Verdict::Missed(_) if db.write_txns_per_unit > 0.01 => Verdict::Missed(format!(
                        "{:.2} write transactions per validation instead of none",
                        db.write_txns_per_unit
                    )),
                    verdict => verdict,
                },
            },
            None => unmeasured(
                LICENSE,
                f.reads
                    .and_then(|r| r.license_note.as_deref())
                    .unwrap_or("–"),
            ),
        },
    );

    const LAG: &str =
        "projection lag at rest: p99 ≤ 50 ms from append to an asynchronous read model";
    out.push(match f.lag {
        Some(l) => Target {
            target: LAG,
            measured: format!(
                "p99 {} ms, p50 {} ms (`{}`, {} creations at {:.0}/s)",
                ms(l.lag.p99_ms),
                ms(l.lag.p50_ms),
                l.read_model,
                l.created,
                l.rate_per_s
            ),
            verdict: Verdict::at_most(l.lag.p99_ms, 50.0, l.errors == 0 && l.missing == 0),
        },
        None => unmeasured(LAG, "–"),
    });

    const IMPORT: &str = "(#17) members import: thousands of members/s (≥ 2,000), and the \
         same file again appends no event";
    out.push(match f.import {
        Some(i) => Target {
            target: IMPORT,
            measured: format!(
                "{} members/s ({} in {:.1} s); again: {} events appended",
                rate(i.first.rows_per_s),
                i.members,
                i.first.wall_s,
                i.again.events_appended
            ),
            verdict: match Verdict::at_least(i.first.rows_per_s, 2_000.0, true) {
                Verdict::Met if i.again.events_appended != 0 => Verdict::Missed(format!(
                    "the second import appended {} events",
                    i.again.events_appended
                )),
                verdict => verdict,
            },
        },
        None => unmeasured(IMPORT, "–"),
    });
    out
}

pub fn write_targets(w: &mut String, targets: &[Target]) -> std::fmt::Result {
    writeln!(w, "| target | measured | verdict |")?;
    writeln!(w, "| --- | --- | --- |")?;
    for t in targets {
        writeln!(
            w,
            "| {} | {} | {} |",
            t.target,
            t.measured,
            t.verdict.cell()
        )?;
    }
    Ok(())
}
