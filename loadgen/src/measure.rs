//! Closed-loop runs: workers, latency histograms and the figures of a run.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::database::DbCost;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// One request's outcome: its latency, or why it failed.
pub type Sample = std::result::Result<Duration, String>;

/// A closed-loop run: `concurrency` workers each take the next unit of work until the time or
/// the units are used up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Run {
    pub concurrency: usize,
    pub ok: u64,
    pub errors: u64,
    #[serde(default)]
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub per_second: f64,
    pub latency: Latency,
    /// /proc/loadavg when the run started (other work on the machine shows here).
    pub loadavg: String,
    /// What the run cost the database, per successful request.
    #[serde(default)]
    pub db: Option<DbCost>,
}

pub struct Limit {
    pub duration: Option<Duration>,
    pub units: Option<usize>,
}

pub async fn drive<F, Fut>(concurrency: usize, limit: Limit, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Sample>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let loadavg = loadavg();
    let started = Instant::now();
    let deadline = limit.duration.map(|d| started + d);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        let next = next.clone();
        let units = limit.units;
        workers.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let unit = next.fetch_add(1, Ordering::Relaxed);
                if units.is_some_and(|u| unit >= u) {
                    break;
                }
                for sample in op(unit).await {
                    match sample {
                        Ok(d) => {
                            record(&mut hist, d);
                            ok += 1;
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            (hist, ok, errors, first_error)
        }));
    }
    let mut hist = histogram();
    let mut run = Run {
        concurrency,
        loadavg,
        ..Run::default()
    };
    for worker in workers {
        match worker.await {
            Ok((h, ok, errors, first_error)) => {
                let _ = hist.add(&h);
                run.ok += ok;
                run.errors += errors;
                if run.first_error.is_none() {
                    run.first_error = first_error;
                }
            }
            Err(err) => {
                run.errors += 1;
                run.first_error
                    .get_or_insert(format!("worker panicked: {err}"));
            }
        }
    }
    run.elapsed_s = started.elapsed().as_secs_f64();
    run.per_second = run.ok as f64 / run.elapsed_s.max(1e-9);
    run.latency = Latency::of(&hist);
    run
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn print_run(label: &str, run: &Run) {
    println!(
        "{label:<34} c={:<3} {:>9.1}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  ok {} errors {}{}{}",
        run.concurrency,
        run.per_second,
        run.latency.p50_ms,
        run.latency.p99_ms,
        run.latency.max_ms,
        run.ok,
        run.errors,
        run.db
            .as_ref()
            .map(|d| format!(
                "  db: {:.1} write txns, {:.1} kB WAL per request",
                d.write_txns_per_unit,
                d.wal_bytes_per_unit / 1024.0
            ))
            .unwrap_or_default(),
        run.first_error
            .as_deref()
            .map(|e| format!(" (first: {})", truncate(e, 200)))
            .unwrap_or_default(),
    );
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}
