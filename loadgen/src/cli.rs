//! The command line: one subcommand per scenario, and the arguments they share.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Benchmarks a running memberledger over loopback HTTP."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local PostgreSQL cluster (normal durability) and a fake Stripe API; write their
    /// addresses to an env file; stop the cluster on SIGTERM/SIGINT.
    Infra(InfraArgs),
    /// Run pgbench with one events-shaped INSERT per transaction.
    Pgbench(PgbenchArgs),
    /// The stock cqrs-es + postgres-es pipeline in-process: commands, then the view's replay.
    Stock(StockArgs),
    /// Create members over HTTP (`POST /v1/members`).
    Members(MembersArgs),
    /// Projection lag at rest: member creations at a low rate until `member_timeline` shows
    /// each one.
    Lag(LagArgs),
    /// Deliver signed Stripe lifecycles over HTTP and wait for everything to be processed.
    Webhooks(WebhooksArgs),
    /// Append MemberCreated/MemberUpdated events with SQL and time the projections' catch-up.
    Seed(SeedArgs),
    /// Dashboard and license-validation reads.
    Reads(ReadsArgs),
    /// Time `memberledger projections rebuild --all`.
    Rebuild(RebuildArgs),
    /// Time `memberledger members import` of a generated file, then of the same file again.
    Import(ImportArgs),
    /// Record a process's peak and current resident memory.
    Rss(RssArgs),
    /// Write the Markdown page from the results directory.
    Report(ReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Directory the JSON results are written to.
    #[arg(long, default_value = "target/bench/results")]
    pub results: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct Server {
    /// Base URL of the running server (loopback only).
    #[arg(long, env = "BENCH_URL")]
    pub url: String,
    /// Admin bearer token the server was started with.
    #[arg(long, env = "BENCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
}

#[derive(Debug, Clone, Args)]
pub struct Db {
    /// The server's database (for setup and for cheap progress checks).
    #[arg(long, env = "BENCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct InfraArgs {
    /// Data directory of the cluster (created by initdb when missing).
    #[arg(long)]
    pub pg_dir: PathBuf,
    /// Written once everything is up: `BENCH_DATABASE_URL=...` lines for the shell.
    #[arg(long)]
    pub env_file: PathBuf,
    /// Stripe's example objects, to answer customer fetches.
    #[arg(long, default_value = "../shared/stripe/fixtures3.json")]
    pub fixtures: PathBuf,
}

#[derive(Debug, Args)]
pub struct PgbenchArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub db: Db,
    /// The pgbench binary.
    #[arg(long)]
    pub pgbench: PathBuf,
    /// Client counts to run, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub clients: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(Debug, Args)]
pub struct StockArgs {
    #[command(flatten)]
    pub common: Common,
    /// The server's database: the stock pipeline uses a database of its own (`stock`) in the
    /// same cluster.
    #[command(flatten)]
    pub db: Db,
    /// Tasks executing commands at once, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub tasks: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(Debug, Args)]
pub struct LagArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub db: Db,
    /// Member creations per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of creations.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Milliseconds between the poller's queries while a creation is outstanding.
    #[arg(long, default_value_t = 1)]
    pub poll_interval_ms: u64,
    /// Give up waiting for the read model after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct MembersArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub db: Db,
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Result file name (without `.json`).
    #[arg(long, default_value = "members")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub db: Db,
    /// The server's `STRIPE_WEBHOOK_SECRET`.
    #[arg(long, env = "BENCH_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    #[arg(long, default_value = "../shared/stripe/fixtures3.json")]
    pub fixtures: PathBuf,
    /// Lifecycles (one distinct customer each) to deliver.
    #[arg(long, default_value_t = 1000)]
    pub lifecycles: usize,
    /// Lifecycles delivered at once (each one's events in Stripe's order).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Give up waiting for the inbox and the projections after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub drain_timeout: u64,
    /// Measure acceptance only, against a server whose inbox is paused (`STRIPE_WORKERS=0`):
    /// no waiting for processing, and the stored events are deleted afterwards.
    #[arg(long)]
    pub accept_only: bool,
    /// Result file name (without `.json`).
    #[arg(long, default_value = "webhooks")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub db: Db,
    /// Events to append (half MemberCreated, half MemberUpdated).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: i64,
    /// Wait for a running server's projection runners to apply the new events (the catch-up
    /// figure); without it the events are only inserted.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting for the projections after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub catchup_timeout: u64,
}

#[derive(Debug, Args)]
pub struct ReadsArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub db: Db,
    /// Concurrent clients, one run each (a 1-client run shows the service time).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub db: Db,
    /// The `memberledger` binary.
    #[arg(long)]
    pub memberledger: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub db: Db,
    /// The `memberledger` binary.
    #[arg(long)]
    pub memberledger: PathBuf,
    /// Members (rows) in the generated file.
    #[arg(long, default_value_t = 100_000)]
    pub members: u64,
    /// Give up on a pass after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RssArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub pid: u32,
    /// Result file name (without `.json`).
    #[arg(long, default_value = "server_rss")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: Common,
    /// The page to write; its hand-written analysis section (between the markers) is kept.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// A sentence about the conditions of the run (e.g. other work on the machine).
    #[arg(long, default_value = "")]
    pub note: String,
    /// What was measured, when not the working tree's `git rev-parse HEAD`.
    #[arg(long)]
    pub commit: Option<String>,
}
