//! Reading the whole event log in order, for exports: `memberledger events export` and
//! `GET /v1/events`.
//!
//! The log is read the way the projection runner reads it: by `(transaction_id,
//! global_position)`, only from transactions below `pg_snapshot_xmin(pg_current_snapshot())`.
//! Positions are taken at insert and can commit out of order, but a transaction below the
//! snapshot's xmin has finished, and a transaction still to commit has a `transaction_id` at
//! least that xmin: so a reader that continues after the last `(transaction_id,
//! global_position)` it saw never skips an event, and never sees one twice.
//!
//! [`LogReader`] pages through the log in keyset batches (constant memory for any log size);
//! [`LogCursor`] is the position between two events, written `"<transaction_id>.<global_position>"`.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use sqlx::PgPool;

use crate::config::DatabaseConfig;
use crate::db::Database;

/// Events per query of the CLI export.
pub const DEFAULT_BATCH_SIZE: i64 = 1000;

/// A place in the log: after the event with this `(transaction_id, global_position)`.
/// Written as `"<transaction_id>.<global_position>"`; `"0.0"` is the start of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogCursor {
    pub transaction_id: i64,
    pub global_position: i64,
}

impl LogCursor {
    /// Before the first event.
    pub const START: Self = Self {
        transaction_id: 0,
        global_position: 0,
    };
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.transaction_id, self.global_position)
    }
}

/// Why a cursor could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a cursor `<transaction_id>.<position>` (as an export printed it) or an event's position")]
pub struct MalformedCursor;

/// A non-negative decimal integer that fits an `i64`, digits only (no sign, no spaces).
fn parse_number(s: &str) -> Result<i64, MalformedCursor> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MalformedCursor);
    }
    s.parse().map_err(|_| MalformedCursor)
}

impl FromStr for LogCursor {
    type Err = MalformedCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (transaction_id, global_position) = s.split_once('.').ok_or(MalformedCursor)?;
        Ok(Self {
            transaction_id: parse_number(transaction_id)?,
            global_position: parse_number(global_position)?,
        })
    }
}

/// Where to start reading: a [`LogCursor`], or the bare `global_position` of an event (read
/// after that event; `0` is the start of the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Cursor(LogCursor),
    Position(i64),
}

impl FromStr for After {
    type Err = MalformedCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('.') {
            s.parse().map(Self::Cursor)
        } else {
            parse_number(s).map(Self::Position)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no event has position {0}")]
    UnknownPosition(i64),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl After {
    /// The cursor to read after: a bare position is looked up.
    pub async fn resolve(self, pool: &PgPool) -> Result<LogCursor, ResolveError> {
        match self {
            Self::Cursor(cursor) => Ok(cursor),
            Self::Position(0) => Ok(LogCursor::START),
            Self::Position(position) => {
                let transaction_id: Option<i64> = sqlx::query_scalar(
                    "SELECT transaction_id::text::bigint FROM events WHERE global_position = $1",
                )
                .bind(position)
                .fetch_optional(pool)
                .await?;
                transaction_id
                    .map(|transaction_id| LogCursor {
                        transaction_id,
                        global_position: position,
                    })
                    .ok_or(ResolveError::UnknownPosition(position))
            }
        }
    }
}

/// Which events to read. Empty means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub aggregate_type: Option<String>,
    /// Any of these event types; empty: every type.
    pub event_types: Vec<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
}

/// One event of the log, as exports write it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ExportedEvent {
    /// `global_position`: unique, taken at insert (so not committed in order).
    pub position: i64,
    pub transaction_id: i64,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl ExportedEvent {
    /// The cursor right after this event.
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            transaction_id: self.transaction_id,
            global_position: self.position,
        }
    }
}

/// Pages through the log in `(transaction_id, global_position)` order, after a cursor, one
/// keyset query per batch. Each batch holds only events of finished transactions; an empty
/// batch means the reader has caught up (for now: events appended later come in later batches).
pub struct LogReader {
    pool: PgPool,
    filter: LogFilter,
    cursor: LogCursor,
    batch_size: i64,
    /// Read only transactions below this one (see [`LogReader::stop_at_current_horizon`]).
    horizon: Option<i64>,
}

impl LogReader {
    pub fn new(pool: PgPool, filter: LogFilter, after: LogCursor) -> Self {
        Self {
            pool,
            filter,
            cursor: after,
            batch_size: DEFAULT_BATCH_SIZE,
            horizon: None,
        }
    }

    /// Events per batch (at least 1).
    #[must_use]
    pub fn batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// From now on reads only the transactions that had finished when this was called, so a
    /// reader on a busy log still catches up. Nothing is lost: what is appended later lies
    /// after the reader's final cursor.
    pub async fn stop_at_current_horizon(&mut self) -> Result<(), sqlx::Error> {
        let horizon: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(&self.pool)
                .await?;
        self.horizon = Some(horizon);
        Ok(())
    }

    /// After the last event returned so far (or the starting cursor).
    pub fn cursor(&self) -> LogCursor {
        self.cursor
    }

    /// The next events, at most `batch_size`; empty when caught up.
    pub async fn next_batch(&mut self) -> Result<Vec<ExportedEvent>, sqlx::Error> {
        let mut batch: Vec<ExportedEvent> = sqlx::query_as(
            "SELECT global_position AS position, transaction_id::text::bigint AS transaction_id,
                    recorded_at, aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata
             FROM events e
             WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
               AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
               AND ($3::text IS NULL OR e.transaction_id < $3::text::xid8)
               AND ($4::text IS NULL OR e.aggregate_type = $4)
               AND (cardinality($5::text[]) = 0 OR e.event_type = ANY($5))
               AND ($6::timestamptz IS NULL OR e.recorded_at >= $6)
               AND ($7::timestamptz IS NULL OR e.recorded_at < $7)
             -- Qualified: the bare name would sort by the bigint output column, which the
             -- index does not cover (a sort of the whole rest of the log per batch).
             ORDER BY e.transaction_id, e.global_position
             LIMIT $8",
        )
        .bind(self.cursor.transaction_id.to_string())
        .bind(self.cursor.global_position)
        .bind(self.horizon.map(|h| h.to_string()))
        .bind(self.filter.aggregate_type.as_deref())
        .bind(&self.filter.event_types)
        .bind(self.filter.since)
        .bind(self.filter.until)
        .bind(self.batch_size)
        .fetch_all(&self.pool)
        .await?;
        crate::store::personal::open_events(&self.pool, &mut batch).await?;
        if let Some(last) = batch.last() {
            self.cursor = last.cursor();
        }
        Ok(batch)
    }
}

// ---------------------------------------------------------------------------------------------
// The command line: `memberledger events export`.

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Write the event log in log order, as JSON lines or CSV.
    ///
    /// Events come in the order projections apply them, `(transaction_id, position)`, only from
    /// finished transactions. At the end the cursor to continue from is printed on stderr: an
    /// export with `--after CURSOR` gets exactly the events that came after, none twice.
    Export {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        args: ExportArgs,
    },
    /// Print the JSON Schema of every event type (as `docs/event-schemas.json`).
    Schema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// A header line, then one row per event; payload and metadata as JSON text.
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Start after this cursor (`<transaction_id>.<position>`, as a previous export printed),
    /// or after the event with this position. Default: the start of the log.
    #[arg(long, value_name = "CURSOR|POSITION")]
    pub after: Option<After>,
    /// Only events of this aggregate type (e.g. `Member`).
    #[arg(long, value_name = "TYPE")]
    pub aggregate_type: Option<String>,
    /// Only events of these types (repeatable, or comma-separated).
    #[arg(long = "event-type", value_name = "TYPE", value_delimiter = ',')]
    pub event_types: Vec<String>,
    /// Only events recorded at or after this time (RFC 3339, e.g. 2026-11-24T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Write to this file (through FILE.tmp, renamed when complete). Default: stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Events read per query.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub batch_size: i64,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|err| format!("not an RFC 3339 time ({err}); e.g. 2026-11-24T12:00:00Z"))
}

pub async fn run(command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&aggregates::schema::event_schemas())?
            );
            Ok(())
        }
        EventsCommand::Export { database, args } => {
            let db = Database::connect(&database).await?;
            let result = export(&db.pool, args).await;
            db.close().await?;
            let summary = result?;
            eprintln!(
                "exported {} event(s); to continue: --after {}",
                summary.events, summary.cursor
            );
            Ok(())
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    pub events: u64,
    /// Continue after this.
    pub cursor: LogCursor,
}

/// Runs an export to stdout or to `args.output`.
pub async fn export(pool: &PgPool, args: ExportArgs) -> anyhow::Result<ExportSummary> {
    if let (Some(since), Some(until)) = (args.since, args.until) {
        anyhow::ensure!(since < until, "--since must be before --until");
    }
    let after = match args.after {
        None => LogCursor::START,
        Some(after) => after.resolve(pool).await.context("--after")?,
    };
    let filter = LogFilter {
        aggregate_type: args.aggregate_type,
        event_types: args
            .event_types
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        since: args.since,
        until: args.until,
    };
    let mut reader = LogReader::new(pool.clone(), filter, after).batch_size(args.batch_size);
    reader.stop_at_current_horizon().await?;
    let progress = progress_bar();
    let format = args.format;
    let result = match &args.output {
        None => copy(&mut reader, format, std::io::stdout(), progress.clone())
            .await
            .map(|(_, events)| events),
        Some(path) => to_file(&mut reader, format, path, progress.clone()).await,
    };
    progress.finish_and_clear();
    Ok(ExportSummary {
        events: result?,
        cursor: reader.cursor(),
    })
}

/// Writes to `path` through `path.tmp`, renamed into place only once everything is written.
async fn to_file(
    reader: &mut LogReader,
    format: ExportFormat,
    path: &Path,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = async {
        let (file, events) = copy(reader, format, file, progress).await?;
        file.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        anyhow::Ok(events)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the log batch by batch and writes each batch as it comes (on a blocking thread, while
/// the next batch is read); at most two batches wait in between. Returns the writer, flushed.
async fn copy<W: Write + Send + 'static>(
    reader: &mut LogReader,
    format: ExportFormat,
    out: W,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<(W, u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<ExportedEvent>>(2);
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<(W, u64)> {
        let mut sink = EventSink::new(format, out)?;
        let mut events = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            for event in &batch {
                sink.write(event)?;
            }
            events += batch.len() as u64;
            progress.inc(batch.len() as u64);
        }
        Ok((sink.finish()?, events))
    });
    let read = async {
        loop {
            let batch = reader.next_batch().await.context("reading the event log")?;
            if batch.is_empty() || tx.send(batch).await.is_err() {
                // Caught up, or the writer failed (its error is reported below).
                return anyhow::Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let written = writer.await.context("the export writer panicked")?;
    let (out, events) = written.context("writing the export")?;
    read?;
    Ok((out, events))
}

/// Writes events in one format.
enum EventSink<W: Write> {
    Jsonl(std::io::BufWriter<W>),
    Csv(Box<csv::Writer<W>>),
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 10] = [
    "position",
    "transaction_id",
    "recorded_at",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "payload",
    "metadata",
];

impl<W: Write> EventSink<W> {
    fn new(format: ExportFormat, out: W) -> anyhow::Result<Self> {
        Ok(match format {
            ExportFormat::Jsonl => Self::Jsonl(std::io::BufWriter::with_capacity(64 * 1024, out)),
            ExportFormat::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .buffer_capacity(64 * 1024)
                    .from_writer(out);
                csv.write_record(CSV_HEADER)?;
                Self::Csv(Box::new(csv))
            }
        })
    }

    fn write(&mut self, event: &ExportedEvent) -> anyhow::Result<()> {
        match self {
            Self::Jsonl(out) => {
                serde_json::to_writer(&mut *out, event)?;
                out.write_all(b"\n")?;
            }
            Self::Csv(csv) => csv.write_record([
                event.position.to_string().as_str(),
                &event.transaction_id.to_string(),
                &event
                    .recorded_at
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                &event.aggregate_type,
                &event.aggregate_id,
                &event.sequence.to_string(),
                &event.event_type,
                &event.event_version,
                &event.payload.to_string(),
                &event.metadata.to_string(),
            ])?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<W> {
        Ok(match self {
            Self::Jsonl(out) => out.into_inner().map_err(|e| e.into_error())?,
            Self::Csv(csv) => csv.into_inner().map_err(|e| e.into_error())?,
        })
    }
}

/// A spinner with the count and rate, on stderr when it is a terminal; hidden otherwise.
fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {human_pos} events  {rate}  {elapsed}")
    {
        bar.set_style(style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} events/s", state.per_sec());
            },
        ));
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = LogCursor {
            transaction_id: 812,
            global_position: 40,
        };
        assert_eq!(cursor.to_string(), "812.40");
        assert_eq!("812.40".parse(), Ok(cursor));
        assert_eq!("0.0".parse(), Ok(LogCursor::START));
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "-1.2",
            "+1.2",
            "1.-2",
            "a.b",
            " 1.2",
            "1.2 ",
            "99999999999999999999.1",
        ] {
            assert_eq!(bad.parse::<LogCursor>(), Err(MalformedCursor), "{bad:?}");
        }
        assert_eq!("17".parse(), Ok(After::Position(17)));
        assert_eq!(
            "5.17".parse(),
            Ok(After::Cursor("5.17".parse().expect("valid")))
        );
        for bad in ["", "x", "-3", "1e3", "1.x"] {
            assert_eq!(bad.parse::<After>(), Err(MalformedCursor), "{bad:?}");
        }
    }

    #[test]
    fn cursors_order_like_the_log() {
        let a = LogCursor {
            transaction_id: 5,
            global_position: 9,
        };
        let b = LogCursor {
            transaction_id: 6,
            global_position: 2,
        };
        assert!(LogCursor::START < a && a < b);
    }

    #[test]
    fn csv_quotes_json_and_commas() {
        let event = ExportedEvent {
            position: 3,
            transaction_id: 700,
            recorded_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("valid"),
            aggregate_type: "Member".into(),
            aggregate_id: "a,b".into(),
            sequence: 1,
            event_type: "MemberCreated".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({"name": "Ada \"the\" first,\nline"}),
            metadata: serde_json::json!({}),
        };
        let mut sink = EventSink::new(ExportFormat::Csv, Vec::new()).expect("sink");
        sink.write(&event).expect("written");
        let bytes = sink.finish().expect("finished");
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(
            reader.headers().expect("header").iter().collect::<Vec<_>>(),
            CSV_HEADER
        );
        let row = reader.records().next().expect("a row").expect("parses");
        assert_eq!(&row[4], "a,b");
        assert_eq!(&row[2], "2025-11-24T16:00:00.123456Z");
        let payload: serde_json::Value = serde_json::from_str(&row[8]).expect("json");
        assert_eq!(payload, event.payload);
    }
}
