//! `loadgen report`: the Markdown page (docs/benchmarks.md) from the results directory.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use chrono::Utc;

use crate::cli::ReportArgs;
use crate::database::DbCost;
use crate::lag::LagResult;
use crate::machine::machine;
use crate::members::MembersResult;
use crate::memory::RssResult;
use crate::pgbench::PgbenchResult;
use crate::reads::ReadsResult;
use crate::rebuild::RebuildResult;
use crate::results::read_result;
use crate::sections::{lag_section, stock_section};
use crate::seed::SeedResult;
use crate::stock::StockResult;
use crate::targets::{targets, write_targets, Figures};
use crate::webhooks::WebhooksResult;

pub const ANALYSIS_START: &str = "<!-- analysis:start (kept when the page is regenerated) -->";
pub const ANALYSIS_END: &str = "<!-- analysis:end -->";

pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

pub fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// "write txns per request | WAL kB per request" cells.
pub fn db_cells(db: Option<&DbCost>) -> String {
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

/// A figure as a share of a baseline ("–" without one).
pub fn share(v: f64, base: Option<f64>) -> String {
    base.filter(|b| *b > 0.0)
        .map_or_else(|| "–".to_owned(), |b| format!("{:.0}%", 100.0 * v / b))
}

pub fn members_table(
    w: &mut String,
    mr: &MembersResult,
    ratio: &dyn Fn(f64, usize) -> String,
    stock_ratio: &dyn Fn(f64, usize) -> String,
) -> std::fmt::Result {
    writeln!(
            w,
            "| clients | commands/s | vs pgbench | vs stock | p50 ms | p99 ms | max ms | errors | write txns/command | WAL kB/command | loadavg |"
        )?;
    writeln!(
        w,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )?;
    for r in &mr.runs {
        writeln!(w, "{}", run_row(r.concurrency, r, ratio, stock_ratio))?;
    }
    Ok(())
}

/// A table row of a run over HTTP: `first`, then its rate (and as shares of pgbench and of
/// the stock pipeline at its concurrency), latencies, errors, database cost and load.
fn run_row(
    first: impl std::fmt::Display,
    run: &crate::measure::Run,
    ratio: &dyn Fn(f64, usize) -> String,
    stock_ratio: &dyn Fn(f64, usize) -> String,
) -> String {
    format!(
        "| {first} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        rate(run.per_second),
        ratio(run.per_second, run.concurrency),
        stock_ratio(run.per_second, run.concurrency),
        ms(run.latency.p50_ms),
        ms(run.latency.p99_ms),
        ms(run.latency.max_ms),
        run.errors,
        db_cells(run.db.as_ref()),
        run.loadavg
    )
}

pub fn report(args: &ReportArgs) -> Result<()> {
    let dir = &args.common.results;
    let pg: Option<PgbenchResult> = read_result(dir, "pgbench")?;
    let members: Option<MembersResult> = read_result(dir, "members")?;
    let hooks: Option<WebhooksResult> = read_result(dir, "webhooks")?;
    let hooks_paused: Option<WebhooksResult> = read_result(dir, "webhooks_paused")?;
    let seeded: Option<SeedResult> = read_result(dir, "seed")?;
    let reads: Option<ReadsResult> = read_result(dir, "reads")?;
    let rebuilt: Option<RebuildResult> = read_result(dir, "rebuild")?;
    let stock: Option<StockResult> = read_result(dir, "stock")?;
    let lag: Option<LagResult> = read_result(dir, "lag")?;
    let import: Option<crate::import::ImportResult> = read_result(dir, "import")?;
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
    let ratio = |v: f64, clients: usize| share(v, pg_at(clients));
    // The stock pipeline's `Create` commands/s with as many tasks as clients.
    let stock_at = |tasks: usize| stock.as_ref().and_then(|s| s.creates_at(tasks));
    let stock_ratio = |v: f64, clients: usize| share(v, stock_at(clients));
    let replay_eps = stock.as_ref().map(|s| s.replay.events_per_s);

    let mut o = String::new();
    let w = &mut o;
    writeln!(w, "# Benchmarks")?;
    writeln!(w)?;
    writeln!(
        w,
        "Measured by `scripts/bench.sh` (release build, load generator `loadgen/`): a \
         dedicated PostgreSQL under `target/bench/pg` with normal durability settings, the real \
         server (`memberledger serve`) and the load generator on one machine, talking HTTP over \
         loopback. Regenerate with `bash scripts/bench.sh`; the figures below are replaced, the \
         analysis section is kept. Figures are shown as a share of pgbench's single-insert \
         rate (\"vs pgbench\") and of the stock cqrs-es + postgres-es pipeline (\"vs stock\"), \
         both measured in the same run."
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
        "| server | `DATABASE_MAX_CONNECTIONS=20`, `STRIPE_WORKERS=8` (the default), `LOG_FORMAT=json` at `info` to a file (the defaults otherwise) |"
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
    writeln!(
        w,
        "The targets of issue #12 (and #17's import), judged on this run's figures. \"Stock\" is the stock \
         cqrs-es + postgres-es pipeline measured in the same run (section e, again)."
    )?;
    writeln!(w)?;
    write_targets(
        w,
        &targets(&Figures {
            pgbench_16: pg_at(16),
            stock: stock.as_ref(),
            members: members.as_ref(),
            hooks: hooks.as_ref(),
            hooks_paused: hooks_paused.as_ref(),
            seeded: seeded.as_ref(),
            rebuilt: rebuilt.as_ref(),
            reads: reads.as_ref(),
            lag: lag.as_ref(),
            server_peak_rss_kb: peak_rss_kb,
            import: import.as_ref(),
        }),
    )?;
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

    stock_section(w, stock.as_ref(), &ratio)?;

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
            "| | events/s | vs pgbench | vs stock | p50 ms | p99 ms | max ms | errors | write txns/event | WAL kB/event | loadavg |"
        )?;
        writeln!(
            w,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        )?;
        writeln!(
            w,
            "{}",
            run_row(
                "accepted (`POST /webhooks/stripe` answered 200)",
                &h.accept,
                &ratio,
                &stock_ratio
            )
        )?;
        if let Some(p) = &hooks_paused {
            let label = format!(
                "accepted with the inbox paused (`STRIPE_WORKERS=0`; {} other lifecycles, {} events, deleted after)",
                p.lifecycles, p.events
            );
            writeln!(w, "{}", run_row(label, &p.accept, &ratio, &stock_ratio))?;
        }
        match (h.end_to_end_s, h.processed_per_s) {
            (Some(s), Some(eps)) => writeln!(
                w,
                "| processed end to end (inbox empty, every projection caught up; {} log events appended) | {} | {} | {} | | | | | {} | {:.1} s from the first POST |",
                h.log_events,
                rate(eps),
                ratio(eps, h.accept.concurrency),
                stock_ratio(eps, h.accept.concurrency),
                db_cells(h.processing_db.as_ref()),
                s
            )?,
            _ => writeln!(
                w,
                "| processed end to end | not drained: {} | | | | | | | | | |",
                h.drain_note.as_deref().unwrap_or("?")
            )?,
        }
        writeln!(w)?;
        writeln!(
            w,
            "End to end is from the first POST until `GET /v1/stripe-events?status=pending|processing|deferred|failed` \
             is empty and `GET /readyz` shows `lag_events = 0` for every projection, twice in a row \
             (polled every 100 ms). The fake Stripe API the server fetches customers from runs on \
             loopback in the benchmark's helper process (`STRIPE_API_BASE`). \"vs stock\": the \
             share of the stock pipeline's `Create` commands/s at as many tasks as lifecycles \
             in flight. The first row is acceptance while the inbox processes the same burst on \
             the same cores; the paused row is the endpoint alone, on a server started with \
             `STRIPE_WORKERS=0` before the others."
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
        members_table(w, mr, &ratio, &stock_ratio)?;
    } else {
        writeln!(w, "Not measured in this run.")?;
    }
    writeln!(w)?;

    lag_section(w, lag.as_ref())?;

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
                 {t:.1} s, **{} events/s** ({} vs pgbench at 16 clients, {} vs the stock \
                 replay; loadavg {}).",
                rate(eps),
                ratio(eps, 16),
                share(eps, replay_eps),
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
             {:.1} s, **{} events/s** ({} vs pgbench at 16 clients, {} vs the stock pipeline's \
             `QueryReplay::replay_all`), peak RSS of the command {}; loadavg {}. {}",
            r.log_events,
            r.wall_s.unwrap_or_default(),
            rate(r.events_per_s.unwrap_or_default()),
            ratio(r.events_per_s.unwrap_or_default(), 16),
            share(r.events_per_s.unwrap_or_default(), replay_eps),
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
         integration tests' `settle` does), not `/readyz`, which counts each projection's \
         unapplied events (up to 10,000 since eae0c3c; every one of them in builds before it, \
         with a million-event lag itself a heavy query)."
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
            members_table(w, &mr, &ratio, &stock_ratio)?;
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

    crate::import::import_section(w, import.as_ref(), pg_at(16))?;

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
