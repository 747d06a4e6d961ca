//! Imports over HTTP (`POST /v1/members/imports`): the uploaded file is stored in the
//! database with a `pending` import, and the request is answered 202 at once. An [`Importer`]
//! runs in every instance:
//!
//! - **Claimed with a lease.** An importer claims the oldest pending import (`FOR UPDATE SKIP
//!   LOCKED`), or a running one whose lease ran out (its instance crashed or stopped), and
//!   renews the lease with each batch. Each claim counts an attempt; a batch's progress is
//!   recorded only by the claim that holds the import, so two instances never both report.
//! - **Resumed, not restarted.** Progress (rows, counts, bytes read) and the batch's refusals
//!   are recorded in one statement after each batch, so a claim after a crash reads the file
//!   again from the start but applies only the batches after the last recorded one. The batch
//!   that was being applied at the crash runs again: an import is idempotent, so its members
//!   are not created twice, though the counts may then call them unchanged.
//! - **Ended.** A completed or failed import keeps its counts and report; the file's chunks are
//!   deleted. A file that is not CSV fails at once; an import whose attempts keep failing on the
//!   database is given up after [`MAX_ATTEMPTS`].

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aggregates::Member;
use chrono::{DateTime, Utc};
use futures::Stream;
use sqlx::PgPool;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{read::check_header, report_header, FileError, Import, Refusal, Summary};
use crate::db::{begin, PoolName};
use crate::store::CommandBus;

/// Bytes per stored chunk of an uploaded file.
const CHUNK: usize = 1024 * 1024;
/// Woken when an import is uploaded.
const CHANNEL: &str = "member_import";
/// How long a claim holds an import without recording a batch.
const LEASE: Duration = Duration::from_secs(120);
/// Claims of one import before database failures give it up.
pub const MAX_ATTEMPTS: i32 = 5;

/// An import as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberImport {
    pub id: Uuid,
    pub status: String,
    pub file_name: Option<String>,
    pub size_bytes: i64,
    pub bytes_read: i64,
    pub rows_read: i64,
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub refused: i64,
    pub notes: i64,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, status, file_name, size_bytes, bytes_read, rows_read, created, \
     updated, unchanged, refused, notes, error, created_at, started_at, finished_at";

/// Why an upload was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file is empty")]
    Empty,
    #[error("{0}")]
    File(String),
    #[error("the upload could not be read: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Stores `file` as a new pending import (one transaction: the import exists with its whole
/// file or not at all) and wakes the importers. A file whose first line is not a header with an
/// email column is refused before anything is stored.
pub async fn upload(
    pool: &PgPool,
    file_name: Option<&str>,
    mut file: impl AsyncRead + Unpin,
) -> Result<MemberImport, UploadError> {
    let id = Uuid::now_v7();
    let mut chunk = Vec::with_capacity(CHUNK);
    fill(&mut file, &mut chunk).await?;
    if chunk.is_empty() {
        return Err(UploadError::Empty);
    }
    check_header(&chunk).map_err(UploadError::File)?;
    let mut tx = begin(pool, PoolName::Main).await?;
    sqlx::query("INSERT INTO member_imports (id, file_name, size_bytes) VALUES ($1, $2, 0)")
        .bind(id)
        .bind(file_name)
        .execute(&mut *tx)
        .await?;
    let mut size = 0i64;
    let mut n = 0i32;
    while !chunk.is_empty() {
        sqlx::query("INSERT INTO member_import_chunks (import_id, n, data) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(n)
            .bind(&chunk)
            .execute(&mut *tx)
            .await?;
        size += i64::try_from(chunk.len()).unwrap_or(i64::MAX);
        n += 1;
        chunk.clear();
        fill(&mut file, &mut chunk).await?;
    }
    let import: MemberImport = sqlx::query_as(&format!(
        "UPDATE member_imports SET size_bytes = $2 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(size)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    crate::eventlog::notify(pool, CHANNEL).await;
    Ok(import)
}

/// Reads into `chunk` until it holds [`CHUNK`] bytes or the file ends.
async fn fill(file: &mut (impl AsyncRead + Unpin), chunk: &mut Vec<u8>) -> std::io::Result<()> {
    while chunk.len() < CHUNK {
        let want = CHUNK - chunk.len();
        if file.take(want as u64).read_to_end(chunk).await? == 0 {
            break;
        }
    }
    Ok(())
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<MemberImport>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM member_imports WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// An import's report as CSV (`line,email,field,reason`, in file order), streamed a page at a
/// time: what has been recorded so far while it runs.
pub fn report(
    pool: PgPool,
    id: Uuid,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    const PAGE: i64 = 5_000;
    let header = {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(report_header());
        w.into_inner().unwrap_or_default()
    };
    // After the header, pages keyed by the row's place in the report; `None` when done.
    futures::stream::try_unfold(Some(None::<i64>), move |after| {
        let pool = pool.clone();
        let header = header.clone();
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let Some(after) = after else {
                return Ok(Some((header, Some(Some(0)))));
            };
            let rows: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
                "SELECT n, line, email, field, reason FROM member_import_refusals
                 WHERE import_id = $1 AND n > $2 ORDER BY n LIMIT $3",
            )
            .bind(id)
            .bind(after)
            .bind(PAGE)
            .fetch_all(&pool)
            .await
            .map_err(std::io::Error::other)?;
            let Some(last) = rows.last().map(|r| r.0) else {
                return Ok(None);
            };
            let next = (rows.len() as i64 == PAGE).then_some(Some(last));
            let mut w = csv::Writer::from_writer(Vec::new());
            for (_, line, email, field, reason) in rows {
                w.write_record([line.to_string(), email, field, reason])
                    .map_err(std::io::Error::other)?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(Some((bytes, next)))
        }
    })
}

/// Runs the imports uploaded to any instance.
pub struct Importer {
    pool: PgPool,
    members: Arc<CommandBus<Member>>,
}

/// A claimed import: the claim's attempt number (its token) and the progress to resume from.
struct Claim {
    id: Uuid,
    attempts: i32,
    resume: Summary,
}

/// A claim that stopped before the end: the instance is stopping, or another claim holds the
/// import now.
#[derive(Debug, thiserror::Error)]
#[error("the import was left to another run")]
struct Released;

impl Importer {
    pub fn new(pool: PgPool, members: Arc<CommandBus<Member>>) -> Self {
        Self { pool, members }
    }

    /// Runs due imports until `shutdown`, woken by uploads; polls for imports whose claim ran
    /// out.
    pub async fn run(self, shutdown: CancellationToken) {
        crate::eventlog::drain_on_notice(
            &self.pool,
            CHANNEL,
            Duration::from_secs(10),
            &shutdown,
            "the member importer",
            || self.run_next(&shutdown),
        )
        .await;
    }

    /// Claims and runs one due import; returns whether there was one.
    async fn run_next(&self, shutdown: &CancellationToken) -> Result<bool, sqlx::Error> {
        let Some(claim) = self.claim().await? else {
            return Ok(false);
        };
        match self.run_claimed(&claim, shutdown).await {
            Ok(summary) => self.end(&claim, "completed", Some(&summary), None).await?,
            Err(err) if err.is::<Released>() => {
                // Stopping: another instance (or this one, restarted) takes it up at once.
                sqlx::query(
                    "UPDATE member_imports SET lease_until = now() WHERE id = $1 AND attempts = $2",
                )
                .bind(claim.id)
                .bind(claim.attempts)
                .execute(&self.pool)
                .await?;
                tracing::info!(import_id = %claim.id, "member import left to a later run");
            }
            Err(err) if err.is::<FileError>() || claim.attempts >= MAX_ATTEMPTS => {
                tracing::warn!(import_id = %claim.id, error = format!("{err:#}"), "member import failed");
                self.end(&claim, "failed", None, Some(&format!("{err:#}")))
                    .await?;
            }
            Err(err) => {
                // The database failed it: claimed again after a backoff, where it stopped.
                tracing::warn!(import_id = %claim.id, attempt = claim.attempts, error = format!("{err:#}"), "member import interrupted; it will resume");
                sqlx::query(
                    "UPDATE member_imports SET lease_until = now() + $3, error = $4
                     WHERE id = $1 AND attempts = $2",
                )
                .bind(claim.id)
                .bind(claim.attempts)
                .bind(Duration::from_secs(5) * 2u32.pow(claim.attempts.clamp(0, 6) as u32))
                .bind(format!("{err:#}"))
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(true)
    }

    async fn claim(&self) -> Result<Option<Claim>, sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Claimed {
            id: Uuid,
            attempts: i32,
            rows_read: i64,
            created: i64,
            updated: i64,
            unchanged: i64,
            refused: i64,
            notes: i64,
        }
        let claimed: Option<Claimed> = sqlx::query_as(
            "UPDATE member_imports
             SET status = 'running', started_at = coalesce(started_at, now()),
                 attempts = attempts + 1, lease_until = now() + $1
             WHERE id = (SELECT id FROM member_imports
                         WHERE status = 'pending'
                            OR (status = 'running' AND lease_until < now())
                         ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, attempts, rows_read, created, updated, unchanged, refused, notes",
        )
        .bind(LEASE)
        .fetch_optional(&self.pool)
        .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(claimed.map(|c| Claim {
            id: c.id,
            attempts: c.attempts,
            resume: Summary {
                rows: count(c.rows_read),
                created: count(c.created),
                updated: count(c.updated),
                unchanged: count(c.unchanged),
                refused: count(c.refused),
                notes: count(c.notes),
            },
        }))
    }

    async fn run_claimed(
        &self,
        claim: &Claim,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Summary> {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let input = ChunkReader::open(self.pool.clone(), claim.id, bytes_read.clone());
        let fetch_failed = input.fetch_failed.clone();
        let request_id = format!("import:{}", claim.id);
        let result = async {
            let mut import = Import::start(
                &self.pool,
                &self.members,
                Box::new(input),
                &request_id,
                claim.resume,
            )
            .await?;
            while let Some(report) = import.next_batch().await? {
                let read = bytes_read.load(Ordering::Relaxed);
                let held = self.record(claim, &import.summary(), &report, read).await?;
                if !held || shutdown.is_cancelled() {
                    return Err(Released.into());
                }
            }
            anyhow::Ok(import.summary())
        }
        .await;
        match result {
            // The reader saw the database fail as an unreadable file: not the file's fault.
            Err(err) if err.is::<FileError>() && fetch_failed.load(Ordering::Relaxed) => Err(
                anyhow::anyhow!("reading the uploaded file back failed: {err}"),
            ),
            other => other,
        }
    }

    /// Records a batch's progress and report and renews the lease, if this claim still holds
    /// the import; returns whether it did.
    async fn record(
        &self,
        claim: &Claim,
        s: &Summary,
        report: &[Refusal],
        bytes_read: u64,
    ) -> Result<bool, sqlx::Error> {
        let (mut lines, mut emails, mut fields, mut reasons) = (vec![], vec![], vec![], vec![]);
        for r in report {
            lines.push(i64::try_from(r.line).unwrap_or(i64::MAX));
            emails.push(r.email.as_str());
            fields.push(r.field.as_str());
            reasons.push(r.reason.as_str());
        }
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let held: i64 = sqlx::query_scalar(
            "WITH held AS (
                 UPDATE member_imports
                 SET rows_read = $3, created = $4, updated = $5, unchanged = $6, refused = $7,
                     notes = $8, bytes_read = GREATEST(bytes_read, $9), lease_until = now() + $10
                 WHERE id = $1 AND attempts = $2 AND status = 'running'
                 RETURNING id
             ), report AS (
                 INSERT INTO member_import_refusals (import_id, line, email, field, reason)
                 SELECT held.id, r.line, r.email, r.field, r.reason
                 FROM held, UNNEST($11::bigint[], $12::text[], $13::text[], $14::text[])
                      AS r (line, email, field, reason)
                 ORDER BY r.line
             )
             SELECT count(*) FROM held",
        )
        .bind(claim.id)
        .bind(claim.attempts)
        .bind(count(s.rows))
        .bind(count(s.created))
        .bind(count(s.updated))
        .bind(count(s.unchanged))
        .bind(count(s.refused))
        .bind(count(s.notes))
        .bind(count(bytes_read))
        .bind(LEASE)
        .bind(&lines)
        .bind(&emails)
        .bind(&fields)
        .bind(&reasons)
        .fetch_one(&self.pool)
        .await?;
        Ok(held > 0)
    }

    /// Ends the import (`completed` or `failed`) and deletes its file, if this claim holds it.
    async fn end(
        &self,
        claim: &Claim,
        status: &str,
        summary: Option<&Summary>,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = begin(&self.pool, PoolName::Main).await?;
        let count =
            |f: fn(&Summary) -> u64| summary.map(|s| i64::try_from(f(s)).unwrap_or(i64::MAX));
        let ended = sqlx::query(
            "UPDATE member_imports
             SET status = $3, error = $4, finished_at = now(), lease_until = NULL,
                 bytes_read = CASE WHEN $3 = 'completed' THEN size_bytes ELSE bytes_read END,
                 rows_read = coalesce($5, rows_read), created = coalesce($6, created),
                 updated = coalesce($7, updated), unchanged = coalesce($8, unchanged),
                 refused = coalesce($9, refused), notes = coalesce($10, notes)
             WHERE id = $1 AND attempts = $2",
        )
        .bind(claim.id)
        .bind(claim.attempts)
        .bind(status)
        .bind(error)
        .bind(count(|s| s.rows))
        .bind(count(|s| s.created))
        .bind(count(|s| s.updated))
        .bind(count(|s| s.unchanged))
        .bind(count(|s| s.refused))
        .bind(count(|s| s.notes))
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() > 0 {
            sqlx::query("DELETE FROM member_import_chunks WHERE import_id = $1")
                .bind(claim.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::info!(import_id = %claim.id, status, "member import ended");
        Ok(())
    }
}

/// The stored file as a `Read` for the import's blocking reader: a task fetches its chunks in
/// order, two ahead at most; `bytes_read` counts what the reader has taken.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: std::io::Cursor<Vec<u8>>,
    bytes_read: Arc<AtomicU64>,
    /// Set when fetching a chunk failed (the reader then sees an I/O error).
    fetch_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl ChunkReader {
    fn open(pool: PgPool, id: Uuid, bytes_read: Arc<AtomicU64>) -> Self {
        let (tx, chunks) = tokio::sync::mpsc::channel(2);
        let fetch_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failed = fetch_failed.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let chunk: Result<Option<Vec<u8>>, sqlx::Error> = sqlx::query_scalar(
                    "SELECT data FROM member_import_chunks WHERE import_id = $1 AND n = $2",
                )
                .bind(id)
                .bind(n)
                .fetch_optional(&pool)
                .await;
                let sent = match chunk {
                    Ok(Some(data)) => tx.send(Ok(data)).await,
                    Ok(None) => return,
                    Err(err) => {
                        failed.store(true, Ordering::Relaxed);
                        tx.send(Err(std::io::Error::other(err))).await
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Self {
            chunks,
            current: std::io::Cursor::new(Vec::new()),
            bytes_read,
            fetch_failed,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = Read::read(&mut self.current, buf)?;
            if n > 0 || buf.is_empty() {
                self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
                return Ok(n);
            }
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = std::io::Cursor::new(chunk?),
                None => return Ok(0),
            }
        }
    }
}
