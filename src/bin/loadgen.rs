//! The load generator behind `scripts/bench.sh` and `docs/benchmarks.md`.
//!
//! Every scenario talks to a running `memberledger serve` over HTTP on loopback (plus, for
//! setup and for checks that must not disturb the measurement, to its PostgreSQL), stops by
//! itself after a bounded number of requests or seconds, prints its figures and writes them
//! as JSON into a results directory; `report` turns that directory into the Markdown page.
//!
//! ```text
//! loadgen infra      a dedicated PostgreSQL (durable settings) and a fake Stripe API, until SIGTERM
//! loadgen pgbench    the physical limit: pgbench inserting one events-shaped row per transaction
//! loadgen members    POST /v1/members at several concurrencies
//! loadgen webhooks   signed Stripe lifecycles, then the time until the inbox and projections are done
//! loadgen seed       a log of N MemberCreated/MemberUpdated events inserted with SQL, and the catch-up
//! loadgen reads      GET /v1/members/{id}/dashboard and POST /v1/licenses/validate
//! loadgen rebuild    times `memberledger projections rebuild --all`
//! loadgen rss        a process's peak resident memory (VmHWM)
//! loadgen report     the Markdown page from the results
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::{AttributionContext, MemberEvent, MemberSource};
use anyhow::{bail, Context, Result};
use chrono::{TimeZone, Utc};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Benchmarks a running memberledger over loopback HTTP."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local PostgreSQL cluster (normal durability) and a fake Stripe API; write their
    /// addresses to an env file; stop the cluster on SIGTERM/SIGINT.
    Infra(InfraArgs),
    /// Run pgbench with one events-shaped INSERT per transaction.
    Pgbench(PgbenchArgs),
    /// Create members over HTTP (`POST /v1/members`).
    Members(MembersArgs),
    /// Deliver signed Stripe lifecycles over HTTP and wait for everything to be processed.
    Webhooks(WebhooksArgs),
    /// Append MemberCreated/MemberUpdated events with SQL and time the projections' catch-up.
    Seed(SeedArgs),
    /// Dashboard and license-validation reads.
    Reads(ReadsArgs),
    /// Time `memberledger projections rebuild --all`.
    Rebuild(RebuildArgs),
    /// Record a process's peak and current resident memory.
    Rss(RssArgs),
    /// Write the Markdown page from the results directory.
    Report(ReportArgs),
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// Directory the JSON results are written to.
    #[arg(long, default_value = "target/bench/results")]
    results: PathBuf,
}

#[derive(Debug, Clone, Args)]
struct Server {
    /// Base URL of the running server (loopback only).
    #[arg(long, env = "BENCH_URL")]
    url: String,
    /// Admin bearer token the server was started with.
    #[arg(long, env = "BENCH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

#[derive(Debug, Clone, Args)]
struct Db {
    /// The server's database (for setup and for cheap progress checks).
    #[arg(long, env = "BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Debug, Args)]
struct InfraArgs {
    /// Data directory of the cluster (created by initdb when missing).
    #[arg(long)]
    pg_dir: PathBuf,
    /// Written once everything is up: `BENCH_DATABASE_URL=...` lines for the shell.
    #[arg(long)]
    env_file: PathBuf,
    /// Stripe's example objects, to answer customer fetches.
    #[arg(long, default_value = "../shared/stripe/fixtures3.json")]
    fixtures: PathBuf,
}

#[derive(Debug, Args)]
struct PgbenchArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    db: Db,
    /// The pgbench binary.
    #[arg(long)]
    pgbench: PathBuf,
    /// Client counts to run, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Args)]
struct MembersArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    db: Db,
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Result file name (without `.json`).
    #[arg(long, default_value = "members")]
    name: String,
}

#[derive(Debug, Args)]
struct WebhooksArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    db: Db,
    /// The server's `STRIPE_WEBHOOK_SECRET`.
    #[arg(long, env = "BENCH_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    #[arg(long, default_value = "../shared/stripe/fixtures3.json")]
    fixtures: PathBuf,
    /// Lifecycles (one distinct customer each) to deliver.
    #[arg(long, default_value_t = 1000)]
    lifecycles: usize,
    /// Lifecycles delivered at once (each one's events in Stripe's order).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Give up waiting for the inbox and the projections after this many seconds.
    #[arg(long, default_value_t = 600)]
    drain_timeout: u64,
}

#[derive(Debug, Args)]
struct SeedArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    db: Db,
    /// Events to append (half MemberCreated, half MemberUpdated).
    #[arg(long, default_value_t = 1_000_000)]
    events: i64,
    /// Wait for a running server's projection runners to apply the new events (the catch-up
    /// figure); without it the events are only inserted.
    #[arg(long)]
    wait: bool,
    /// Give up waiting for the projections after this many seconds.
    #[arg(long, default_value_t = 900)]
    catchup_timeout: u64,
}

#[derive(Debug, Args)]
struct ReadsArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    db: Db,
    /// Concurrent clients of the main runs (a 1-client run shows the service time).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Args)]
struct RebuildArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    db: Db,
    /// The `memberledger` binary.
    #[arg(long)]
    memberledger: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

#[derive(Debug, Args)]
struct RssArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    pid: u32,
    /// Result file name (without `.json`).
    #[arg(long, default_value = "server_rss")]
    name: String,
}

#[derive(Debug, Args)]
struct ReportArgs {
    #[command(flatten)]
    common: Common,
    /// The page to write; its hand-written analysis section (between the markers) is kept.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// A sentence about the conditions of the run (e.g. other work on the machine).
    #[arg(long, default_value = "")]
    note: String,
    /// What was measured, when not the working tree's `git rev-parse HEAD`.
    #[arg(long)]
    commit: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One thread: the load generator shares the machine's cores with the server and
    // PostgreSQL, so it is kept to one of them.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("loadgen: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadgen: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Infra(args) => infra(args).await,
        Command::Pgbench(args) => pgbench(args).await,
        Command::Members(args) => members(args).await,
        Command::Webhooks(args) => webhooks(args).await,
        Command::Seed(args) => seed(args).await,
        Command::Reads(args) => reads(args).await,
        Command::Rebuild(args) => rebuild(args).await,
        Command::Rss(args) => rss(&args),
        Command::Report(args) => report(&args),
    }
}

// ----- measuring ------------------------------------------------------------------------------

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Latency {
    count: u64,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
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

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// One request's outcome: its latency, or why it failed.
type Sample = std::result::Result<Duration, String>;

/// A closed-loop run: `concurrency` workers each take the next unit of work until the time or
/// the units are used up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Run {
    concurrency: usize,
    ok: u64,
    errors: u64,
    #[serde(default)]
    first_error: Option<String>,
    elapsed_s: f64,
    per_second: f64,
    latency: Latency,
    /// /proc/loadavg when the run started (other work on the machine shows here).
    loadavg: String,
    /// What the run cost the database, per successful request.
    #[serde(default)]
    db: Option<DbCost>,
}

/// A point in the database's history: the next transaction id to be assigned and the WAL
/// insert position. Both are exact, unlike the cumulative statistics views.
struct DbMark {
    next_xid: i64,
    lsn: String,
}

/// Writing transactions (each one a commit that waits for its WAL flush, with
/// `synchronous_commit=on`) and WAL bytes between two marks, and per unit of work.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DbCost {
    write_txns: i64,
    wal_bytes: i64,
    write_txns_per_unit: f64,
    wal_bytes_per_unit: f64,
}

async fn db_mark(pool: &PgPool) -> Result<DbMark> {
    let (next_xid, lsn): (i64, String) = sqlx::query_as(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, pg_current_wal_lsn()::text",
    )
    .fetch_one(pool)
    .await
    .context("reading the transaction id and WAL position")?;
    Ok(DbMark { next_xid, lsn })
}

async fn db_cost(pool: &PgPool, from: &DbMark, units: u64) -> Result<DbCost> {
    let to = db_mark(pool).await?;
    let wal_bytes: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint")
            .bind(&to.lsn)
            .bind(&from.lsn)
            .fetch_one(pool)
            .await?;
    let write_txns = to.next_xid - from.next_xid;
    let units = units.max(1) as f64;
    Ok(DbCost {
        write_txns,
        wal_bytes,
        write_txns_per_unit: write_txns as f64 / units,
        wal_bytes_per_unit: wal_bytes as f64 / units,
    })
}

struct Limit {
    duration: Option<Duration>,
    units: Option<usize>,
}

async fn drive<F, Fut>(concurrency: usize, limit: Limit, op: F) -> Run
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_run(label: &str, run: &Run) {
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

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

fn write_result<T: Serialize>(common: &Common, name: &str, value: &T) -> Result<()> {
    std::fs::create_dir_all(&common.results)
        .with_context(|| format!("creating {}", common.results.display()))?;
    let path = common.results.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn read_result<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<Option<T>> {
    let path = dir.join(format!("{name}.json"));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn http_client(concurrency: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

fn check_loopback(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let host = parsed.host_str().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        bail!("{url}: the load generator only targets loopback");
    }
    Ok(())
}

async fn connect(db: &Db, max: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&db.database_url)
        .await
        .context("connecting to the benchmark database")
}

/// Sends one request, reads the whole answer, checks its status.
async fn timed(req: reqwest::RequestBuilder, expect: &[u16]) -> Sample {
    let started = Instant::now();
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let elapsed = started.elapsed();
    if expect.contains(&status) {
        Ok(elapsed)
    } else {
        Err(format!(
            "HTTP {status}: {}",
            truncate(&String::from_utf8_lossy(&body), 300)
        ))
    }
}

// ----- infra: PostgreSQL and a fake Stripe ---------------------------------------------------

async fn infra(args: InfraArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let fixtures = Arc::new(load_fixtures(&args.fixtures)?);
    // Normal durability: fsync, synchronous_commit and full_page_writes stay on.
    let pg = memberledger::localpg::LocalPostgres::start_with(
        &args.pg_dir,
        memberledger::localpg::StartOptions { fast_unsafe: false },
    )
    .await
    .context("starting the benchmark PostgreSQL")?;
    let result = async {
        memberledger::db::create_database_if_missing(pg.url(), "memberledger").await?;
        let stripe_base = fake_stripe(fixtures).await?;
        let env = format!(
            "BENCH_DATABASE_URL={}\nBENCH_PG_PORT={}\nBENCH_STRIPE_API_BASE={}\n",
            pg.url_for("memberledger"),
            pg.port(),
            stripe_base
        );
        let tmp = args.env_file.with_extension("tmp");
        std::fs::write(&tmp, env).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &args.env_file)
            .with_context(|| format!("writing {}", args.env_file.display()))?;
        tracing::info!(port = pg.port(), %stripe_base, "benchmark infrastructure up; SIGTERM stops it");
        wait_for_stop().await;
        anyhow::Ok(())
    }
    .await;
    tracing::info!("stopping the benchmark PostgreSQL");
    let stopped = pg.stop().await;
    result?;
    stopped
}

async fn wait_for_stop() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Answers `GET /v1/customers/cus_<tag>` with `<tag>@example.com`, like the lifecycles' own
/// emails, so a subscription event processed before its checkout finds its customer's email.
async fn fake_stripe(fixtures: Arc<Value>) -> Result<String> {
    use poem::listener::{Acceptor, Listener, TcpListener};
    use poem::web::{Data, Path as WebPath};
    use poem::{get, handler, EndpointExt, Response, Route};

    #[handler]
    fn customer(WebPath(id): WebPath<String>, fixtures: Data<&Arc<Value>>) -> Response {
        let tag = id.strip_prefix("cus_").unwrap_or(&id);
        let mut customer = fixtures["resources"]["customer"].clone();
        customer["id"] = json!(id);
        customer["email"] = json!(format!("{tag}@example.com"));
        customer["name"] = json!("Bench Customer");
        Response::builder()
            .content_type("application/json")
            .body(customer.to_string())
    }

    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .context("binding the fake Stripe API")?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .context("the fake Stripe listener has no address")?;
    let app = Route::new()
        .at("/v1/customers/:id", get(customer))
        .data(fixtures);
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    Ok(format!("http://{addr}/"))
}

fn load_fixtures(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading Stripe fixtures {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

// ----- pgbench: the physical limit -----------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PgbenchRun {
    /// `insert`; `insert, then notify` (the server's appends: a NOTIFY after the commit, in a
    /// transaction of its own); or `insert+notify trigger` (a NOTIFY inside the inserting
    /// transaction, as the server did before migration 20261124000011).
    variant: String,
    clients: usize,
    tps: f64,
    transactions: u64,
    latency: Latency,
    loadavg: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PgbenchResult {
    server_version: String,
    settings: BTreeMap<String, String>,
    payload_bytes: usize,
    seconds: u64,
    runs: Vec<PgbenchRun>,
}

/// The settings that decide how fast a commit is.
const PG_SETTINGS: &[&str] = &[
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "max_wal_size",
    "max_connections",
];

async fn server_facts(pool: &PgPool) -> Result<(String, BTreeMap<String, String>)> {
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

/// A MemberCreated payload as the server writes it (v1.1, admin attribution).
fn member_created_payload(member_id: Uuid, email: &str) -> Result<Value> {
    let event = MemberEvent::MemberCreated {
        member_id,
        email: email.to_owned(),
        name: Some("Bench Member".to_owned()),
        note: None,
        labels: vec!["bench".to_owned()],
        source: MemberSource::Admin,
        attribution: Some(Box::new(aggregates::attribution::for_context(
            AttributionContext::Admin,
        ))),
        created_at: Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .context("a valid date")?,
    };
    Ok(serde_json::to_value(event)?)
}

fn member_updated_payload() -> Result<Value> {
    let event = MemberEvent::MemberUpdated {
        name: Some("Bench Member (renamed)".to_owned()),
        note: Some("seeded by loadgen".to_owned()),
        labels: vec!["bench".to_owned(), "seeded".to_owned()],
        updated_at: Utc
            .with_ymd_and_hms(2025, 1, 2, 0, 0, 0)
            .single()
            .context("a valid date")?,
    };
    Ok(serde_json::to_value(event)?)
}

fn event_metadata(id: &str) -> Value {
    json!({ "correlation_id": id, "causation_id": id, "actor": "admin" })
}

/// What pgbench connects to.
struct PgTarget {
    host: String,
    port: String,
    user: String,
    dbname: String,
}

impl PgTarget {
    fn from_url(url: &str) -> Result<Self> {
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
async fn pgbench_run(
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

async fn pgbench(args: PgbenchArgs) -> Result<()> {
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

// ----- b. member creation --------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MembersResult {
    runs: Vec<Run>,
    /// Events in the log after the runs.
    #[serde(default)]
    log_events: Option<i64>,
}

async fn members(args: MembersArgs) -> Result<()> {
    check_loopback(&args.server.url)?;
    let max = args.concurrency.iter().copied().max().unwrap_or(1);
    let client = http_client(max)?;
    let pool = connect(&args.db, 1).await?;
    let run_id = Uuid::now_v7().simple().to_string();
    let mut runs = Vec::new();
    for &concurrency in &args.concurrency {
        let mark = db_mark(&pool).await?;
        let client = client.clone();
        let url = format!("{}/v1/members", args.server.url);
        let token = args.server.admin_token.clone();
        let tag = format!("{}-c{concurrency}", &run_id[20..]);
        let mut run = drive(
            concurrency,
            Limit {
                duration: Some(Duration::from_secs(args.seconds)),
                units: None,
            },
            move |i| {
                let req = client.post(&url).bearer_auth(&token).json(&json!({
                    "email": format!("member-{tag}-{i}@bench.example.com"),
                    "name": format!("Bench Member {i}"),
                    "labels": ["bench"],
                }));
                async move { vec![timed(req, &[201]).await] }
            },
        )
        .await;
        run.db = Some(db_cost(&pool, &mark, run.ok).await?);
        print_run("POST /v1/members", &run);
        runs.push(run);
    }
    let log_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    write_result(
        &args.common,
        &args.name,
        &MembersResult {
            runs,
            log_events: Some(log_events),
        },
    )
}

// ----- a. Stripe webhooks --------------------------------------------------------------------

/// One customer's subscription lifecycle, as Stripe would send it (the same shapes as the
/// integration tests' `Lifecycle`, from Stripe's example objects).
struct Lifecycle<'a> {
    fixtures: &'a Value,
    tag: String,
    customer: String,
    email: String,
    subscription: String,
    item: String,
    site: String,
    start: i64,
}

impl<'a> Lifecycle<'a> {
    fn new(fixtures: &'a Value, tag: &str) -> Self {
        Self {
            fixtures,
            tag: tag.to_owned(),
            customer: format!("cus_{tag}"),
            email: format!("{tag}@example.com"),
            subscription: format!("sub_{tag}"),
            item: format!("si_{tag}"),
            site: format!("{tag}.example.com"),
            start: 1_764_000_000,
        }
    }

    fn fixture(&self, resource: &str) -> Value {
        self.fixtures["resources"][resource].clone()
    }

    fn event(&self, name: &str, event_type: &str, offset: i64, object: Value) -> Value {
        let mut event = self.fixture("event");
        event["id"] = json!(format!("evt_{}_{name}", self.tag));
        event["type"] = json!(event_type);
        event["created"] = json!(self.start + offset);
        event["data"] = json!({ "object": object });
        event
    }

    fn checkout_completed(&self, offset: i64) -> Value {
        let mut session = self.fixture("checkout.session");
        session["id"] = json!(format!("cs_{}", self.tag));
        session["mode"] = json!("subscription");
        session["customer"] = json!(self.customer);
        session["customer_details"]["email"] = json!(self.email);
        session["customer_details"]["name"] = json!("Bench Customer");
        session["subscription"] = json!(self.subscription);
        session["status"] = json!("complete");
        self.event("checkout", "checkout.session.completed", offset, session)
    }

    fn subscription(&self, name: &str, event_type: &str, status: &str, offset: i64) -> Value {
        let mut sub = self.fixture("subscription");
        let mut item = sub["items"]["data"][0].clone();
        item["id"] = json!(self.item);
        item["subscription"] = json!(self.subscription);
        item["metadata"] = json!({ "site": self.site });
        item["quantity"] = json!(1);
        item["price"]["unit_amount"] = json!(2000);
        item["price"]["currency"] = json!("usd");
        item["price"]["recurring"]["interval"] = json!("month");
        item["price"]["recurring"]["interval_count"] = json!(1);
        item["current_period_start"] = json!(self.start);
        item["current_period_end"] = json!(self.start + 30 * 86_400);
        sub["id"] = json!(self.subscription);
        sub["customer"] = json!(self.customer);
        sub["status"] = json!(status);
        sub["created"] = json!(self.start);
        sub["metadata"] = json!({});
        sub["cancel_at_period_end"] = json!(false);
        sub["cancel_at"] = Value::Null;
        let ended = if status == "canceled" {
            json!(self.start + offset)
        } else {
            Value::Null
        };
        sub["canceled_at"] = ended.clone();
        sub["ended_at"] = ended;
        sub["items"]["data"] = json!([item]);
        self.event(name, event_type, offset, sub)
    }

    fn invoice_paid(&self, offset: i64) -> Value {
        let invoice = format!("in_{}_1", self.tag);
        let mut inv = self.fixture("invoice");
        inv["id"] = json!(invoice);
        inv["customer"] = json!(self.customer);
        inv["customer_email"] = json!(self.email);
        inv["subscription"] = json!(self.subscription);
        inv["parent"] = json!({
            "type": "subscription_details",
            "quote_details": null,
            "subscription_details": { "metadata": {}, "subscription": self.subscription }
        });
        inv["amount_due"] = json!(2000);
        inv["amount_paid"] = json!(2000);
        inv["amount_remaining"] = json!(0);
        inv["currency"] = json!("usd");
        inv["status"] = json!("paid");
        inv["billing_reason"] = json!("subscription_create");
        self.event(&invoice, "invoice.paid", offset, inv)
    }

    /// In Stripe's order: checkout completed, subscription created (incomplete), updated
    /// active, invoice paid, updated past_due, updated active and, when `ends`, deleted.
    fn events(&self, ends: bool) -> Vec<String> {
        let mut events = vec![
            self.checkout_completed(1),
            self.subscription("created", "customer.subscription.created", "incomplete", 0),
            self.subscription("active", "customer.subscription.updated", "active", 2),
            self.invoice_paid(2),
            self.subscription("past_due", "customer.subscription.updated", "past_due", 100),
            self.subscription("recovered", "customer.subscription.updated", "active", 200),
        ];
        if ends {
            events.push(self.subscription(
                "deleted",
                "customer.subscription.deleted",
                "canceled",
                300,
            ));
        }
        events.into_iter().map(|e| e.to_string()).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WebhooksResult {
    lifecycles: usize,
    events: usize,
    payload_bytes_mean: usize,
    accept: Run,
    /// From the first POST until the inbox was empty and every projection had caught up.
    end_to_end_s: Option<f64>,
    /// Webhook events per second over `end_to_end_s`.
    processed_per_s: Option<f64>,
    /// Log events appended by processing them (commands and policies).
    log_events: i64,
    /// The database cost of the whole scenario (accepting and processing), per webhook event.
    #[serde(default)]
    processing_db: Option<DbCost>,
    drain_note: Option<String>,
}

async fn webhooks(args: WebhooksArgs) -> Result<()> {
    check_loopback(&args.server.url)?;
    let fixtures = load_fixtures(&args.fixtures)?;
    let run_id = Uuid::now_v7().simple().to_string();
    let run_tag = &run_id[20..];
    // Odd lifecycles stay subscribed (an active license to validate later), even ones end.
    let lifecycles: Vec<Vec<String>> = (0..args.lifecycles)
        .map(|i| Lifecycle::new(&fixtures, &format!("bench{run_tag}x{i}")).events(i % 2 == 0))
        .collect();
    let events: usize = lifecycles.iter().map(Vec::len).sum();
    let bytes: usize = lifecycles.iter().flatten().map(String::len).sum();
    let lifecycles = Arc::new(lifecycles);
    let client = http_client(args.concurrency)?;
    let pool = connect(&args.db, 1).await?;
    let count_events = "SELECT count(*) FROM events";
    let before: i64 = sqlx::query_scalar(count_events).fetch_one(&pool).await?;

    let url = format!("{}/webhooks/stripe", args.server.url);
    let secret = args.secret.clone();
    let mark = db_mark(&pool).await?;
    let started = Instant::now();
    let mut accept = {
        let client = client.clone();
        let lifecycles = lifecycles.clone();
        drive(
            args.concurrency,
            Limit {
                duration: None,
                units: Some(args.lifecycles),
            },
            move |i| {
                let client = client.clone();
                let lifecycles = lifecycles.clone();
                let url = url.clone();
                let secret = secret.clone();
                async move {
                    let mut samples = Vec::new();
                    for payload in lifecycles.get(i).into_iter().flatten() {
                        let signature = stripe_webhook::Webhook::generate_test_header(
                            payload,
                            &secret,
                            Some(Utc::now().timestamp()),
                        );
                        let req = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("stripe-signature", signature)
                            .body(payload.clone());
                        samples.push(timed(req, &[200]).await);
                    }
                    samples
                }
            },
        )
        .await
    };
    accept.db = Some(db_cost(&pool, &mark, accept.ok).await?);
    print_run("POST /webhooks/stripe", &accept);

    let deadline = started + Duration::from_secs(args.drain_timeout);
    let (end_to_end_s, drain_note) = match drain(&client, &args.server, deadline).await {
        Ok(()) => (Some(started.elapsed().as_secs_f64()), None),
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    let after: i64 = sqlx::query_scalar(count_events).fetch_one(&pool).await?;
    let processing_db = db_cost(&pool, &mark, events as u64).await?;
    let result = WebhooksResult {
        lifecycles: args.lifecycles,
        events,
        payload_bytes_mean: bytes / events.max(1),
        processed_per_s: end_to_end_s.map(|s| events as f64 / s),
        end_to_end_s,
        log_events: after - before,
        processing_db: Some(processing_db),
        drain_note,
        accept,
    };
    match (result.end_to_end_s, &result.drain_note) {
        (Some(s), _) => println!(
            "webhooks end to end: {} events of {} lifecycles processed and projected in {s:.1} s ({:.1} events/s; {} log events appended)",
            events,
            args.lifecycles,
            result.processed_per_s.unwrap_or_default(),
            result.log_events
        ),
        (None, note) => println!(
            "webhooks end to end: NOT drained: {}",
            note.as_deref().unwrap_or("?")
        ),
    }
    write_result(&args.common, "webhooks", &result)?;
    if result.accept.errors > 0 || result.end_to_end_s.is_none() {
        bail!("the webhook scenario had errors (see above)");
    }
    Ok(())
}

/// Polls until no Stripe event is pending, processing or failed and `/readyz` shows every
/// projection at lag 0, twice in a row (a policy's commands append events after its batch).
async fn drain(client: &reqwest::Client, server: &Server, deadline: Instant) -> Result<()> {
    let mut clean = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut open = 0usize;
        for status in ["pending", "processing", "failed"] {
            let page: Value = client
                .get(format!(
                    "{}/v1/stripe-events?status={status}&limit=1",
                    server.url
                ))
                .bearer_auth(&server.admin_token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let items = page["items"].as_array().map_or(0, Vec::len);
            if items > 0 {
                last = format!("a {status} Stripe event: {}", page["items"][0]);
            }
            open += items;
        }
        let ready: Value = client
            .get(format!("{}/readyz", server.url))
            .send()
            .await?
            .json()
            .await?;
        let lag: i64 = ready["projections"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["lag_events"].as_i64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        if open == 0 && lag == 0 {
            clean += 1;
            if clean >= 2 {
                return Ok(());
            }
        } else {
            clean = 0;
            if lag > 0 {
                last = format!("projection lag {lag} events: {}", ready["projections"]);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "not drained before the timeout; last seen: {}",
        truncate(&last, 600)
    )
}

// ----- c. seeding the log, catch-up ----------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeedResult {
    events: i64,
    members: i64,
    insert_s: f64,
    /// Events in the log after seeding (the seeded ones and everything before).
    log_events: i64,
    /// From the seed's commit until every projection had applied the log.
    catchup_s: Option<f64>,
    catchup_events_per_s: Option<f64>,
    /// Whether the catch-up was waited for (`--wait`).
    #[serde(default)]
    waited: bool,
    loadavg: String,
}

/// Projections behind the end of the log. Cheap (an index probe per projection), unlike
/// `/readyz`, which counts every unapplied event per projection.
async fn projections_behind(pool: &PgPool) -> Result<i64> {
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_checkpoints c
         WHERE EXISTS (SELECT 1 FROM events e
                       WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position))",
    )
    .fetch_one(pool)
    .await?;
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints")
        .fetch_one(pool)
        .await?;
    Ok(if checkpoints == 0 { 1 } else { behind })
}

async fn wait_caught_up(pool: &PgPool, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut clean = 0;
    while started.elapsed() < timeout {
        if projections_behind(pool).await? == 0 {
            clean += 1;
            if clean >= 2 {
                return Ok(started.elapsed());
            }
        } else {
            clean = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stuck: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT name, last_error FROM projection_checkpoints WHERE last_error IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    bail!(
        "the projections did not catch up within {} s (errors: {stuck:?})",
        timeout.as_secs()
    )
}

async fn seed(args: SeedArgs) -> Result<()> {
    let pool = connect(&args.db, 2).await?;
    let members = args.events / 2;
    let created = member_created_payload(Uuid::nil(), "seed@example.com")?;
    let updated = member_updated_payload()?;
    let metadata = event_metadata("loadgen-seed");
    let loadavg = loadavg();
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    // Two events per member, in order, in one transaction: ids are md5 UUIDs of the index so
    // a later run can find them; emails are reserved in the lookup like the API does.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
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
         CROSS JOIN LATERAL (SELECT md5('memberledger-bench-' || g.i)::uuid AS id,
                                    timestamp '2025-01-01' + g.i * interval '10 seconds' AS at) AS m
         CROSS JOIN (VALUES (1), (2)) AS s(seq)",
    )
    .bind(&created)
    .bind(&updated)
    .bind(&metadata)
    .bind(members)
    .execute(&mut *tx)
    .await
    .context("inserting the seeded events")?;
    sqlx::query(
        "INSERT INTO member_emails (email, member_id, reserved_at)
         SELECT 'seed' || g.i || '@seed.example.com', md5('memberledger-bench-' || g.i)::uuid, now()
         FROM generate_series(1, $1::bigint) AS g(i)",
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
    // What autovacuum would do shortly after a bulk load; the runners' plans depend on it.
    sqlx::query("ANALYZE events").execute(&pool).await?;
    sqlx::query("ANALYZE member_emails").execute(&pool).await?;
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

// ----- d. reads ------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReadRun {
    name: String,
    run: Run,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReadsResult {
    log_events: i64,
    members: i64,
    runs: Vec<ReadRun>,
    license_note: Option<String>,
}

async fn reads(args: ReadsArgs) -> Result<()> {
    check_loopback(&args.server.url)?;
    let pool = connect(&args.db, 2).await?;
    let client = http_client(args.concurrency)?;
    // The read models must hold the whole log (the server may have just started).
    wait_caught_up(&pool, Duration::from_secs(120)).await?;
    let log_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let member_count: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(&pool)
        .await?;
    // Members with a Stripe subscription, payments and a license (the webhook scenario's),
    // and members with only a profile (the seeded ones).
    let rich: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT member_id FROM subscriptions ORDER BY member_id LIMIT 2000",
    )
    .fetch_all(&pool)
    .await?;
    let plain: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM member_list WHERE email LIKE '%@seed.example.com' ORDER BY id LIMIT 2000",
    )
    .fetch_all(&pool)
    .await?;
    let mut runs = Vec::new();
    let seconds = Duration::from_secs(args.seconds);
    for (label, ids) in [("subscribed members", rich), ("seeded members", plain)] {
        if ids.is_empty() {
            println!("dashboard of {label}: none in the database, skipped");
            continue;
        }
        let ids = Arc::new(ids);
        for concurrency in [1, args.concurrency] {
            let client = client.clone();
            let ids = ids.clone();
            let base = args.server.url.clone();
            let token = args.server.admin_token.clone();
            let mark = db_mark(&pool).await?;
            let mut run = drive(
                concurrency,
                Limit {
                    duration: Some(seconds),
                    units: None,
                },
                move |i| {
                    let id = ids[i.wrapping_mul(7919) % ids.len()];
                    let req = client
                        .get(format!("{base}/v1/members/{id}/dashboard"))
                        .bearer_auth(&token);
                    async move { vec![timed(req, &[200]).await] }
                },
            )
            .await;
            run.db = Some(db_cost(&pool, &mark, run.ok).await?);
            let name = format!("GET dashboard ({label})");
            print_run(&name, &run);
            runs.push(ReadRun { name, run });
        }
    }

    let license_note = match license_request_shape(&client, &args.server.url).await? {
        Err(note) => {
            println!("license validation: {note}");
            Some(note)
        }
        Ok(shape) => {
            let keys: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT key, site FROM licenses ORDER BY status, issued_at DESC LIMIT 2000",
            )
            .fetch_all(&pool)
            .await?;
            if keys.is_empty() {
                let note = "no licenses in the database to validate".to_owned();
                println!("license validation: {note}");
                Some(note)
            } else {
                let keys = Arc::new(keys);
                let shape = Arc::new(shape);
                for concurrency in [1, args.concurrency] {
                    let client = client.clone();
                    let keys = keys.clone();
                    let shape = shape.clone();
                    let url = format!("{}/v1/licenses/validate", args.server.url);
                    let mark = db_mark(&pool).await?;
                    let mut run = drive(
                        concurrency,
                        Limit {
                            duration: Some(seconds),
                            units: None,
                        },
                        move |i| {
                            let (key, site) = &keys[i.wrapping_mul(7919) % keys.len()];
                            let req = client.post(&url).json(&shape.body(key, site.as_deref()));
                            async move { vec![timed(req, &[200]).await] }
                        },
                    )
                    .await;
                    run.db = Some(db_cost(&pool, &mark, run.ok).await?);
                    let name = "POST /v1/licenses/validate".to_owned();
                    print_run(&name, &run);
                    runs.push(ReadRun { name, run });
                }
                None
            }
        }
    };
    write_result(
        &args.common,
        "reads",
        &ReadsResult {
            log_events,
            members: member_count,
            runs,
            license_note,
        },
    )
}

/// The request body of `POST /v1/licenses/validate`, read from the served OpenAPI spec.
struct LicenseShape {
    key_field: String,
    site_field: Option<String>,
}

impl LicenseShape {
    fn body(&self, key: &str, site: Option<&str>) -> Value {
        let mut body = serde_json::Map::new();
        body.insert(self.key_field.clone(), json!(key));
        if let Some(field) = &self.site_field {
            body.insert(field.clone(), json!(site.unwrap_or("example.com")));
        }
        Value::Object(body)
    }
}

async fn license_request_shape(
    client: &reqwest::Client,
    base: &str,
) -> Result<std::result::Result<LicenseShape, String>> {
    let spec: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    let op = &spec["paths"]["/v1/licenses/validate"]["post"];
    if op.is_null() {
        return Ok(Err(
            "POST /v1/licenses/validate is not in the served spec (not implemented yet): skipped"
                .to_owned(),
        ));
    }
    // poem-openapi names the media type `application/json; charset=utf-8`.
    let mut schema = op["requestBody"]["content"]
        .as_object()
        .and_then(|c| {
            c.iter()
                .find(|(media, _)| media.starts_with("application/json"))
                .map(|(_, body)| body["schema"].clone())
        })
        .unwrap_or_default();
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        schema = spec["components"]["schemas"][name].clone();
    }
    let fields: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let key_field = fields.iter().find(|f| f.contains("key")).cloned();
    let site_field = fields
        .iter()
        .find(|f| {
            ["domain", "site", "host", "url"]
                .iter()
                .any(|w| f.contains(w))
        })
        .cloned();
    Ok(match key_field {
        Some(key_field) => Ok(LicenseShape {
            key_field,
            site_field,
        }),
        None => Err(format!(
            "POST /v1/licenses/validate takes {fields:?}; no key field recognised: skipped"
        )),
    })
}

// ----- c. rebuild ----------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RebuildResult {
    available: bool,
    note: Option<String>,
    log_events: i64,
    wall_s: Option<f64>,
    events_per_s: Option<f64>,
    /// Peak resident memory of the rebuild process, sampled every 100 ms.
    peak_rss_kb: Option<u64>,
    loadavg: String,
    /// What the command printed: one line per projection.
    #[serde(default)]
    output: Vec<String>,
}

async fn rebuild(args: RebuildArgs) -> Result<()> {
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
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&args.memberledger)
        .args(["projections", "rebuild", "--all"])
        .env("DATABASE_URL", &args.db.database_url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the rebuild")?;
    let pid = child.id();
    let mut peak = 0u64;
    let deadline = started + Duration::from_secs(args.timeout);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let output = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
        (out, err)
    });
    let status = loop {
        if let Some(pid) = pid {
            if let Some((hwm, _)) = proc_memory(pid) {
                peak = peak.max(hwm);
            }
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            bail!("the rebuild did not finish within {} s", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let command_s = started.elapsed().as_secs_f64();
    let (out, err) = output.await.unwrap_or_default();
    let out = String::from_utf8_lossy(&out);
    let err = String::from_utf8_lossy(&err);
    if !status.success() {
        bail!("`memberledger projections rebuild --all` failed ({status}):\n{out}\n{err}");
    }
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
    let wall_s = command_s;
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

// ----- memory --------------------------------------------------------------------------------

/// (VmHWM, VmRSS) in kB.
fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RssResult {
    pid: u32,
    vm_hwm_kb: u64,
    vm_rss_kb: u64,
}

fn rss(args: &RssArgs) -> Result<()> {
    let (hwm, rss) = proc_memory(args.pid)
        .with_context(|| format!("no memory figures in /proc/{}/status", args.pid))?;
    println!(
        "pid {}: peak RSS (VmHWM) {:.1} MB, current {:.1} MB",
        args.pid,
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    write_result(
        &args.common,
        &args.name,
        &RssResult {
            pid: args.pid,
            vm_hwm_kb: hwm,
            vm_rss_kb: rss,
        },
    )
}

// ----- the report ----------------------------------------------------------------------------

const ANALYSIS_START: &str = "<!-- analysis:start (kept when the page is regenerated) -->";
const ANALYSIS_END: &str = "<!-- analysis:end -->";

struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_gib: f64,
    kernel: String,
    commit: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cpu_model,
        memory_gib: mem_kb / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        commit: if dirty {
            format!("{commit} with uncommitted changes in the working tree")
        } else {
            commit
        },
    }
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// "write txns per request | WAL kB per request" cells.
fn db_cells(db: Option<&DbCost>) -> String {
    db.map_or_else(
        || "– | –".to_owned(),
        |d| {
            format!(
                "{:.1} | {:.1}",
                d.write_txns_per_unit,
                d.wal_bytes_per_unit / 1024.0
            )
        },
    )
}

fn members_table(
    w: &mut String,
    mr: &MembersResult,
    ratio: &dyn Fn(f64, usize) -> String,
) -> std::fmt::Result {
    writeln!(
            w,
            "| clients | commands/s | vs pgbench | p50 ms | p99 ms | max ms | errors | write txns/command | WAL kB/command | loadavg |"
        )?;
    writeln!(
        w,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )?;
    for r in &mr.runs {
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.concurrency,
            rate(r.per_second),
            ratio(r.per_second, r.concurrency),
            ms(r.latency.p50_ms),
            ms(r.latency.p99_ms),
            ms(r.latency.max_ms),
            r.errors,
            db_cells(r.db.as_ref()),
            r.loadavg
        )?;
    }
    Ok(())
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn report(args: &ReportArgs) -> Result<()> {
    let dir = &args.common.results;
    let pg: Option<PgbenchResult> = read_result(dir, "pgbench")?;
    let members: Option<MembersResult> = read_result(dir, "members")?;
    let hooks: Option<WebhooksResult> = read_result(dir, "webhooks")?;
    let seeded: Option<SeedResult> = read_result(dir, "seed")?;
    let reads: Option<ReadsResult> = read_result(dir, "reads")?;
    let rebuilt: Option<RebuildResult> = read_result(dir, "rebuild")?;
    // One server process for the write scenarios, one (restarted after the seed and the
    // rebuild) for the reads.
    let mut server_rss: Vec<(&str, RssResult)> = Vec::new();
    for (name, label) in [
        ("server_rss_writes", "webhooks and member creation"),
        ("server_rss_reads", "reads with the large log"),
        ("server_rss", "the run"),
    ] {
        if let Some(r) = read_result::<RssResult>(dir, name)? {
            server_rss.push((label, r));
        }
    }
    let peak_rss_kb = server_rss.iter().map(|(_, r)| r.vm_hwm_kb).max();
    let mut m = machine();
    if let Some(commit) = &args.commit {
        m.commit.clone_from(commit);
    }

    let pg_at = |clients: usize| {
        pg.as_ref()
            .and_then(|p| {
                p.runs
                    .iter()
                    .find(|r| r.clients == clients && r.variant == "insert")
            })
            .map(|r| r.tps)
    };
    let ratio = |v: f64, clients: usize| {
        pg_at(clients).map_or_else(
            || "–".to_owned(),
            |base| format!("{:.0}%", 100.0 * v / base),
        )
    };

    let mut o = String::new();
    let w = &mut o;
    writeln!(w, "# Benchmarks")?;
    writeln!(w)?;
    writeln!(
        w,
        "Measured by `scripts/bench.sh` (release build, load generator `src/bin/loadgen.rs`): a \
         dedicated PostgreSQL under `target/bench/pg` with normal durability settings, the real \
         server (`memberledger serve`) and the load generator on one machine, talking HTTP over \
         loopback. Regenerate with `bash scripts/bench.sh`; the figures below are replaced, the \
         analysis section is kept."
    )?;
    writeln!(w)?;
    writeln!(w, "## Machine and run")?;
    writeln!(w)?;
    writeln!(w, "| | |")?;
    writeln!(w, "| --- | --- |")?;
    // When the measurements began (the first result written), so a regenerated page keeps it.
    let measured_at = std::fs::metadata(dir.join("pgbench.json"))
        .and_then(|m| m.modified())
        .map_or_else(|_| Utc::now(), chrono::DateTime::<Utc>::from);
    writeln!(w, "| date | {} |", measured_at.format("%Y-%m-%d %H:%M UTC"))?;
    writeln!(w, "| git commit | {} |", m.commit)?;
    writeln!(w, "| CPUs (`nproc`) | {} × {} |", m.cpus, m.cpu_model)?;
    writeln!(w, "| memory | {:.1} GiB |", m.memory_gib)?;
    writeln!(w, "| kernel | Linux {} |", m.kernel)?;
    if let Some(pg) = &pg {
        writeln!(w, "| PostgreSQL | {} |", pg.server_version)?;
        let settings: Vec<String> = pg
            .settings
            .iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect();
        writeln!(w, "| PostgreSQL settings | {} |", settings.join(", "))?;
    }
    writeln!(
        w,
        "| server | `DATABASE_MAX_CONNECTIONS=20`, `STRIPE_WORKERS=2`, `LOG_FORMAT=json` at `info` to a file (the defaults otherwise) |"
    )?;
    if !args.note.is_empty() {
        writeln!(w, "| conditions | {} |", args.note)?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "The load generator runs on one thread and shares the cores with the server and \
         PostgreSQL; `loadavg` columns show the 1/5/15-minute load average when each run began \
         (above the core count means other work competed for the CPU). `write txns` is the \
         number of transaction ids PostgreSQL assigned during a run (every writing transaction, \
         the server's background work included; each one's commit waits for a WAL flush with \
         `synchronous_commit=on`) and `WAL kB` the WAL written, both per successful request."
    )?;
    writeln!(w)?;

    // Targets.
    writeln!(w, "## Targets")?;
    writeln!(w)?;
    writeln!(w, "| target | measured | verdict |")?;
    writeln!(w, "| --- | --- | --- |")?;
    match rebuilt.as_ref().filter(|r| r.available) {
        Some(r) => {
            let eps = r.events_per_s.unwrap_or_default();
            writeln!(
                w,
                "| rebuild of all projections ≥ 50,000 events/s | {} events/s ({} events in {:.1} s) | {} |",
                rate(eps),
                r.log_events,
                r.wall_s.unwrap_or_default(),
                verdict(Some(eps >= 50_000.0))
            )?;
        }
        None => {
            let catchup = seeded
                .as_ref()
                .and_then(|s| s.catchup_events_per_s)
                .map(|v| {
                    format!(
                        "; the live runners' catch-up on the same log: {} events/s",
                        rate(v)
                    )
                })
                .unwrap_or_default();
            writeln!(
                w,
                "| rebuild of all projections ≥ 50,000 events/s | `projections rebuild` not available in the measured build{catchup} | {} |",
                verdict(None)
            )?;
        }
    }
    match (&hooks, pg_at(16)) {
        (Some(h), Some(base)) => {
            let share = h.accept.per_second / base;
            writeln!(
                w,
                "| webhook acceptance ≥ 50% of pgbench single-insert rate at 16 clients | {} events/s = {:.0}% of {} inserts/s | {} |",
                rate(h.accept.per_second),
                100.0 * share,
                rate(base),
                verdict(Some(share >= 0.5))
            )?;
        }
        _ => writeln!(
            w,
            "| webhook acceptance ≥ 50% of pgbench single-insert rate at 16 clients | – | {} |",
            verdict(None)
        )?,
    }
    match members
        .as_ref()
        .and_then(|m| m.runs.iter().find(|r| r.concurrency == 16))
    {
        Some(r) => writeln!(
            w,
            "| member creation ≥ 3,000 commands/s at 16 clients | {} commands/s | {} |",
            rate(r.per_second),
            verdict(Some(r.per_second >= 3000.0 && r.errors == 0))
        )?,
        None => writeln!(
            w,
            "| member creation ≥ 3,000 commands/s at 16 clients | – | {} |",
            verdict(None)
        )?,
    }
    match reads.as_ref().and_then(|r| {
        r.runs
            .iter()
            .filter(|x| x.name.contains("dashboard") && x.run.concurrency > 1)
            .max_by(|a, b| a.run.latency.p99_ms.total_cmp(&b.run.latency.p99_ms))
            .map(|x| (x.clone(), r.log_events))
    }) {
        Some((x, events)) => writeln!(
            w,
            "| dashboard read p99 ≤ 5 ms at 1M events | p99 {} ms at {} clients ({}; {} events in the log) | {} |",
            ms(x.run.latency.p99_ms),
            x.run.concurrency,
            x.name.trim_start_matches("GET dashboard ").trim_matches(['(', ')']),
            events,
            verdict(Some(x.run.latency.p99_ms <= 5.0 && x.run.errors == 0))
        )?,
        None => writeln!(
            w,
            "| dashboard read p99 ≤ 5 ms at 1M events | – | {} |",
            verdict(None)
        )?,
    }
    match peak_rss_kb {
        Some(kb) => writeln!(
            w,
            "| server RSS ≤ 150 MB | peak {:.1} MB (VmHWM, the larger of the two server processes) | {} |",
            kb as f64 / 1024.0,
            verdict(Some(kb as f64 / 1024.0 <= 150.0))
        )?,
        None => writeln!(w, "| server RSS ≤ 150 MB | – | {} |", verdict(None))?,
    }
    writeln!(w)?;

    // e. pgbench.
    writeln!(w, "## e. The physical limit: pgbench")?;
    writeln!(w)?;
    if let Some(pg) = &pg {
        writeln!(
            w,
            "`pgbench -M prepared`, one `INSERT` of an events-shaped row ({} bytes of payload) \
             per transaction into a copy of `events` (its columns, defaults, identity and \
             indexes), {} s per run: `insert` is the plain insert, the physical limit every other \
             figure is compared with (\"vs pgbench\": the share of the `insert` rate at the same \
             client count); `insert, then notify` adds what the server's appends pay: a \
             `pg_notify` after the commit, in a transaction of its own that does not wait for its \
             WAL flush; `insert+notify trigger` is how the server notified before (a statement \
             trigger inside the inserting transaction), kept for comparison.",
            pg.payload_bytes, pg.seconds
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "| variant | clients | inserts/s | p50 ms | p99 ms | loadavg |"
        )?;
        writeln!(w, "| --- | ---: | ---: | ---: | ---: | --- |")?;
        for r in &pg.runs {
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} |",
                r.variant,
                r.clients,
                rate(r.tps),
                ms(r.latency.p50_ms),
                ms(r.latency.p99_ms),
                r.loadavg
            )?;
        }
    } else {
        writeln!(w, "Not measured in this run.")?;
    }
    writeln!(w)?;

    // a. webhooks.
    writeln!(w, "## a. Stripe webhook ingestion")?;
    writeln!(w)?;
    if let Some(h) = &hooks {
        writeln!(
            w,
            "{} lifecycles, each a distinct customer (checkout completed, subscription created, \
             updated active, invoice paid, updated past_due, updated active and, for every other \
             one, deleted), built from Stripe's example objects (~{} bytes each) and signed like \
             Stripe; {} lifecycles in flight at once, each one's events in order. {} events in all.",
            h.lifecycles,
            h.payload_bytes_mean,
            h.accept.concurrency,
            h.events
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "| | events/s | vs pgbench | p50 ms | p99 ms | max ms | errors | write txns/event | WAL kB/event | loadavg |"
        )?;
        writeln!(
            w,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        )?;
        writeln!(
            w,
            "| accepted (`POST /webhooks/stripe` answered 200) | {} | {} | {} | {} | {} | {} | {} | {} |",
            rate(h.accept.per_second),
            ratio(h.accept.per_second, h.accept.concurrency),
            ms(h.accept.latency.p50_ms),
            ms(h.accept.latency.p99_ms),
            ms(h.accept.latency.max_ms),
            h.accept.errors,
            db_cells(h.accept.db.as_ref()),
            h.accept.loadavg
        )?;
        match (h.end_to_end_s, h.processed_per_s) {
            (Some(s), Some(eps)) => writeln!(
                w,
                "| processed end to end (inbox empty, every projection caught up; {} log events appended) | {} | {} | | | | | {} | {:.1} s from the first POST |",
                h.log_events,
                rate(eps),
                ratio(eps, h.accept.concurrency),
                db_cells(h.processing_db.as_ref()),
                s
            )?,
            _ => writeln!(
                w,
                "| processed end to end | not drained: {} | | | | | | | | |",
                h.drain_note.as_deref().unwrap_or("?")
            )?,
        }
        writeln!(w)?;
        writeln!(
            w,
            "End to end is from the first POST until `GET /v1/stripe-events?status=pending|processing|failed` \
             is empty and `GET /readyz` shows `lag_events = 0` for every projection, twice in a row \
             (polled every 100 ms). The fake Stripe API the server fetches customers from runs on \
             loopback in the benchmark's helper process (`STRIPE_API_BASE`)."
        )?;
    } else {
        writeln!(w, "Not measured in this run.")?;
    }
    writeln!(w)?;

    // b. members.
    writeln!(w, "## b. Member creation (`POST /v1/members`)")?;
    writeln!(w)?;
    if let Some(mr) = &members {
        writeln!(
            w,
            "Admin token, a new email per request, {:.0} s per concurrency level, closed loop (each \
             client sends its next request when the answer arrived). A 201 is answered once the \
             member list shows the member (read-your-writes).",
            mr.runs.first().map_or(0.0, |r| r.elapsed_s.round())
        )?;
        writeln!(w)?;
        members_table(w, mr, &ratio)?;
    } else {
        writeln!(w, "Not measured in this run.")?;
    }
    writeln!(w)?;

    // c. seed, catch-up, rebuild.
    writeln!(
        w,
        "## c. Rebuild of every projection from a log of {} events",
        seeded
            .as_ref()
            .map_or_else(|| "1,000,000".to_owned(), |s| s.log_events.to_string())
    )?;
    writeln!(w)?;
    if let Some(s) = &seeded {
        writeln!(
            w,
            "{} events ({} members × `MemberCreated` v1.1 + `MemberUpdated`) inserted with one \
             `INSERT ... SELECT generate_series` in the events table's shape, plus their \
             `member_emails` rows, in one transaction: {:.1} s ({} events/s). The log then held {} \
             events.",
            s.events,
            s.members,
            s.insert_s,
            rate(s.events as f64 / s.insert_s.max(1e-9)),
            s.log_events
        )?;
        writeln!(w)?;
        match (s.catchup_s, s.catchup_events_per_s) {
            (Some(t), Some(eps)) => writeln!(
                w,
                "- **Catch-up by the running server** (its projection runners applying the new \
                 events, from the commit until every checkpoint was at the end of the log): \
                 {t:.1} s, **{} events/s** ({} vs pgbench at 16 clients; loadavg {}).",
                rate(eps),
                ratio(eps, 16),
                s.loadavg
            )?,
            _ if s.waited => {
                writeln!(w, "- Catch-up: the projections did not catch up in time.")?;
            }
            _ => {}
        }
    }
    match &rebuilt {
        Some(r) if r.available => {
            writeln!(
            w,
            "- **`memberledger projections rebuild --all`** (the server stopped): {} events in \
             {:.1} s, **{} events/s** ({} vs pgbench at 16 clients), peak RSS of the command {}; \
             loadavg {}. {}",
            r.log_events,
            r.wall_s.unwrap_or_default(),
            rate(r.events_per_s.unwrap_or_default()),
            ratio(r.events_per_s.unwrap_or_default(), 16),
            r.peak_rss_kb
                .map_or_else(|| "–".to_owned(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
            r.loadavg,
            r.note.as_deref().unwrap_or_default()
        )?;
            writeln!(w)?;
            writeln!(
                w,
                "Per projection, one after the other, as the command reported:"
            )?;
            writeln!(w)?;
            writeln!(w, "```text")?;
            for line in &r.output {
                writeln!(w, "{line}")?;
            }
            writeln!(w, "```")?;
        }
        Some(r) => writeln!(
            w,
            "- **Rebuild**: not measured: {}.",
            r.note.as_deref().unwrap_or("not available")
        )?,
        None => writeln!(w, "- **Rebuild**: not measured in this run.")?,
    }
    writeln!(w)?;
    writeln!(
        w,
        "Progress is checked with one indexed `EXISTS` per projection checkpoint (what the \
         integration tests' `settle` does), not `/readyz`: `/readyz` counts every unapplied event \
         per projection, which with a million-event lag is itself a heavy query."
    )?;
    writeln!(w)?;

    // d. reads.
    writeln!(w, "## b, again: member creation with the large log")?;
    writeln!(w)?;
    match read_result::<MembersResult>(dir, "members_large")? {
        Some(mr) => {
            writeln!(
                w,
                "The same requests after the rebuild, with {} events in the log (the figures of b \
                 were taken with a log of a few thousand events).",
                mr.log_events
                    .map_or_else(|| "?".to_owned(), |n| n.to_string())
            )?;
            writeln!(w)?;
            members_table(w, &mr, &ratio)?;
        }
        None => writeln!(w, "Not measured in this run.")?,
    }
    writeln!(w)?;

    writeln!(w, "## d. Reads with the large log")?;
    writeln!(w)?;
    if let Some(r) = &reads {
        writeln!(
            w,
            "{} events in the log, {} members. `GET /v1/members/{{id}}/dashboard` (admin) for \
             members with a subscription, payments and a license (from the webhook scenario) and \
             for seeded members (profile only); {:.0} s per run; a 1-client run shows the service \
             time without queueing.",
            r.log_events,
            r.members,
            r.runs.first().map_or(0.0, |x| x.run.elapsed_s.round())
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "| request | clients | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | write txns/request | WAL kB/request | loadavg |"
        )?;
        writeln!(
            w,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        )?;
        for x in &r.runs {
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                x.name,
                x.run.concurrency,
                rate(x.run.per_second),
                ms(x.run.latency.p50_ms),
                ms(x.run.latency.p90_ms),
                ms(x.run.latency.p99_ms),
                ms(x.run.latency.max_ms),
                x.run.errors,
                db_cells(x.run.db.as_ref()),
                x.run.loadavg
            )?;
        }
        if let Some(note) = &r.license_note {
            writeln!(w)?;
            writeln!(w, "License validation: {note}.")?;
        }
    } else {
        writeln!(w, "Not measured in this run.")?;
    }
    writeln!(w)?;

    writeln!(w, "## Server memory")?;
    writeln!(w)?;
    if server_rss.is_empty() {
        writeln!(w, "Not measured in this run.")?;
    }
    for (label, r) in &server_rss {
        writeln!(
            w,
            "- `memberledger serve` for {label}: peak (`VmHWM` from `/proc/<pid>/status` at its \
             end) **{:.1} MB**, {:.1} MB resident at that moment.",
            r.vm_hwm_kb as f64 / 1024.0,
            r.vm_rss_kb as f64 / 1024.0
        )?;
    }
    if let Some(kb) = rebuilt.as_ref().and_then(|r| r.peak_rss_kb) {
        writeln!(
            w,
            "- `memberledger projections rebuild --all`: peak {:.1} MB (sampled every 100 ms).",
            kb as f64 / 1024.0
        )?;
    }
    writeln!(w)?;

    // Keep the hand-written analysis.
    let previous = std::fs::read_to_string(&args.out).unwrap_or_default();
    let analysis = previous
        .split_once(ANALYSIS_START)
        .and_then(|(_, rest)| rest.split_once(ANALYSIS_END))
        .map_or_else(
            || "\n_Not written yet._\n".to_owned(),
            |(kept, _)| kept.to_owned(),
        );
    writeln!(w, "## Analysis")?;
    writeln!(w)?;
    writeln!(w, "{ANALYSIS_START}{analysis}{ANALYSIS_END}")?;

    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, o).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
