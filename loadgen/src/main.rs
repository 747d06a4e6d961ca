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
//! loadgen stock      the peer: stock cqrs-es + postgres-es commands in-process, and its replay
//! loadgen members    POST /v1/members at several concurrencies
//! loadgen lag        projection lag at rest: append until member_timeline shows it
//! loadgen webhooks   signed Stripe lifecycles, then the time until the inbox and projections are done
//! loadgen seed       a log of N MemberCreated/MemberUpdated events inserted with SQL, and the catch-up
//! loadgen reads      GET /v1/members/{id}/dashboard and POST /v1/licenses/validate
//! loadgen rebuild    times `memberledger projections rebuild --all`
//! loadgen rss        a process's peak resident memory (VmHWM)
//! loadgen report     the Markdown page from the results
//! ```

mod cli;
mod database;
mod http;
mod import;
mod infra;
mod lag;
mod machine;
mod measure;
mod members;
mod memory;
mod payloads;
mod pgbench;
mod reads;
mod rebuild;
mod report;
#[cfg(test)]
mod report_tests;
mod results;
mod sections;
mod seed;
mod stock;
mod targets;
mod webhooks;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One thread: the load generator shares the machine's cores with the server and
    // PostgreSQL, so it is kept to one of them. The stock pipeline is the exception: it is the
    // peer of the server, so it gets the runtime the server has (a worker per core).
    let mut builder = if matches!(cli.command, Command::Stock(_)) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
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
        Command::Infra(args) => infra::infra(args).await,
        Command::Pgbench(args) => pgbench::pgbench(args).await,
        Command::Stock(args) => stock::stock(args).await,
        Command::Members(args) => members::members(args).await,
        Command::Lag(args) => lag::lag(args).await,
        Command::Webhooks(args) => webhooks::webhooks(args).await,
        Command::Seed(args) => seed::seed(args).await,
        Command::Reads(args) => reads::reads(args).await,
        Command::Rebuild(args) => rebuild::rebuild(args).await,
        Command::Import(args) => import::import(args).await,
        Command::Rss(args) => memory::rss(&args),
        Command::Report(args) => report::report(&args),
    }
}
