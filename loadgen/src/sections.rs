//! Report sections of the stock pipeline (`loadgen stock`) and of the projection lag
//! (`loadgen lag`).

use std::fmt::Write as _;

use crate::lag::LagResult;
use crate::report::{db_cells, ms, rate};
use crate::stock::StockResult;

pub fn stock_section(
    w: &mut String,
    stock: Option<&StockResult>,
    ratio: &dyn Fn(f64, usize) -> String,
) -> std::fmt::Result {
    writeln!(
        w,
        "## e, again: the stock pipeline (cqrs-es + postgres-es, in-process)"
    )?;
    writeln!(w)?;
    let Some(s) = stock else {
        writeln!(w, "Not measured in this run.")?;
        writeln!(w)?;
        return Ok(());
    };
    writeln!(
        w,
        "The peer our figures are compared with (\"vs stock\"): the crates the server builds on, \
         used as their documentation shows, in `loadgen stock` (`loadgen/src/stock.rs`). One \
         aggregate (`Create {{email, name}}` → `Created`, `Update {{name}}` → `Updated`), one \
         `GenericQuery` view on a `PostgresViewRepository`, `postgres_es::postgres_cqrs` (no \
         snapshots), commands executed in-process by as many tokio tasks (a runtime with a \
         worker per core, as the server's), against the same PostgreSQL, in a database of its \
         own. `Create` makes a new member each; `Update` renames a member made by the `Create` \
         runs (its event loaded first). {:.0} s per run.",
        s.runs.first().map_or(0.0, |r| r.run.elapsed_s.round())
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "| command | tasks | commands/s | vs pgbench | p50 ms | p99 ms | max ms | errors | write txns/command | WAL kB/command | loadavg |"
    )?;
    writeln!(
        w,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )?;
    for r in &s.runs {
        let errors = if r.view_errors > 0 {
            format!("{} (+{} view updates)", r.run.errors, r.view_errors)
        } else {
            r.run.errors.to_string()
        };
        writeln!(
            w,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.command,
            r.run.concurrency,
            rate(r.run.per_second),
            ratio(r.run.per_second, r.run.concurrency),
            ms(r.run.latency.p50_ms),
            ms(r.run.latency.p99_ms),
            ms(r.run.latency.max_ms),
            errors,
            db_cells(r.run.db.as_ref()),
            r.run.loadavg
        )?;
    }
    writeln!(w)?;
    let p = &s.replay;
    writeln!(
        w,
        "`QueryReplay::replay_all` of the view, from an emptied view table, over the log the \
         runs above appended: {} events of {} members in {:.2} s, **{} events/s** ({} vs pgbench \
         at 16 clients; {} write txns and {} kB WAL per event; {} view rows after it{}; loadavg \
         {}).",
        p.events,
        p.members,
        p.seconds,
        rate(p.events_per_s),
        ratio(p.events_per_s, 16),
        p.db.as_ref().map_or_else(
            || "–".to_owned(),
            |d| format!("{:.1}", d.write_txns_per_unit)
        ),
        p.db.as_ref().map_or_else(
            || "–".to_owned(),
            |d| format!("{:.1}", d.wal_bytes_per_unit / 1024.0)
        ),
        p.view_rows,
        if p.view_errors > 0 {
            format!(", {} view updates failed", p.view_errors)
        } else {
            String::new()
        },
        p.loadavg
    )?;
    writeln!(w)?;
    Ok(())
}

pub fn lag_section(w: &mut String, lag: Option<&LagResult>) -> std::fmt::Result {
    writeln!(w, "## Projection lag at rest")?;
    writeln!(w)?;
    let Some(l) = lag else {
        writeln!(w, "Not measured in this run.")?;
        writeln!(w)?;
        return Ok(());
    };
    writeln!(
        w,
        "`POST /v1/members` at a steady {:.0} per second for {} s (open loop), the server \
         otherwise idle, after every projection had caught up. `{}` is an asynchronous read \
         model; the lag of a member is the time from its event's `recorded_at` (the start of the \
         appending transaction) until a poller first read its row, both from PostgreSQL's clock \
         (`clock_timestamp()`). The poller queries the new rows every {} ms while a creation is \
         outstanding and sleeps otherwise ({} queries in all), so the figures include up to a \
         poll interval and a query.",
        l.rate_per_s, l.seconds, l.read_model, l.poll_interval_ms, l.polls
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "| | count | p50 ms | p90 ms | p99 ms | max ms | errors | loadavg |"
    )?;
    writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")?;
    writeln!(
        w,
        "| append → visible in `{}` | {} of {} created{} | {} | {} | {} | {} | {} | {} |",
        l.read_model,
        l.seen,
        l.created,
        if l.missing > 0 {
            format!(", {} never seen", l.missing)
        } else {
            String::new()
        },
        ms(l.lag.p50_ms),
        ms(l.lag.p90_ms),
        ms(l.lag.p99_ms),
        ms(l.lag.max_ms),
        l.errors,
        l.loadavg
    )?;
    writeln!(
        w,
        "| the creation requests (HTTP, until the 201) | {} | {} | {} | {} | {} | | |",
        l.http.count,
        ms(l.http.p50_ms),
        ms(l.http.p90_ms),
        ms(l.http.p99_ms),
        ms(l.http.max_ms)
    )?;
    writeln!(w)?;
    Ok(())
}
