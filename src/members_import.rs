//! Members in from CSV (`memberledger members import FILE`): the columns of our export and of
//! Ghost's (`email`, `name`, `note`, `subscribed_to_emails`, `complimentary_plan`,
//! `stripe_customer_id`, `created_at`, `labels`, plus `newsletters` by name; others, such as
//! `id`, `status` and `source`, are ignored), so an export re-imports as the same members.
//!
//! - **Streaming.** A blocking thread reads and checks the file a row at a time and hands on
//!   batches of [`BATCH`] rows; memory stays flat whatever the file's size, but for one hash
//!   per address seen (to refuse an address the file already had).
//! - **Batched.** A batch's new members are created by one transaction
//!   ([`CommandBus::execute_new_batch`]: their events in one insert, the inline read models
//!   written set-based); members who exist are changed one command each, 8 at a time.
//! - **Idempotent.** A row whose address belongs to a member changes that member only where
//!   the row says something new (a name, a note, labels to add, newsletters to join, a
//!   Stripe customer to link); an unchanged member gets no event, so importing a file twice
//!   changes nothing the second time.
//! - **Reported.** A row that cannot be imported is refused with its line, field and reason;
//!   the report is a CSV file of those (`line,email,field,reason`).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Read;
use std::sync::Arc;

use aggregates::{
    Attribution, AttributionContext, EmailAddress, Labels, Member, MemberCommand, MemberName,
    MemberSource, Note,
};
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{inline_refusal, Actor, CommandBus, EventMetadata};

/// Rows read, checked and created per batch (one transaction for its new members).
pub const BATCH: usize = 500;

/// Commands on existing members run this many at once.
const CONCURRENT: usize = 8;

/// A row that was not imported, or a field of an imported row that was left out (the reason
/// then says the member was imported without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The line in the file (the header is line 1).
    pub line: u64,
    pub email: String,
    pub field: String,
    pub reason: String,
}

/// What an import did, so far or in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Data rows read (the header not counted).
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows not imported.
    pub refused: u64,
    /// Imported rows with a field left out (each also a line of the report).
    pub notes: u64,
}

/// A checked row.
#[derive(Debug, Clone)]
struct Row {
    line: u64,
    email: EmailAddress,
    name: Option<MemberName>,
    note: Option<Note>,
    labels: Labels,
    subscribed: bool,
    /// Newsletters by name, as written.
    newsletters: Vec<String>,
    stripe_customer_id: Option<String>,
    created_at: Option<DateTime<Utc>>,
    /// `complimentary_plan` was true: reported, the member imported without it.
    complimentary: bool,
}

/// Where each column is (by header, case-insensitively).
struct Columns {
    email: usize,
    name: Option<usize>,
    note: Option<usize>,
    labels: Option<usize>,
    subscribed: Option<usize>,
    newsletters: Option<usize>,
    stripe_customer_id: Option<usize>,
    created_at: Option<usize>,
    complimentary: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Result<Self, String> {
        let find = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        Ok(Self {
            email: find("email").ok_or("the header has no `email` column")?,
            name: find("name"),
            note: find("note"),
            labels: find("labels"),
            subscribed: find("subscribed_to_emails").or_else(|| find("subscribed")),
            newsletters: find("newsletters"),
            stripe_customer_id: find("stripe_customer_id"),
            created_at: find("created_at"),
            complimentary: find("complimentary_plan"),
        })
    }
}

/// The field's value, trimmed; `None` when the column is absent or the value empty.
fn field(record: &csv::StringRecord, at: Option<usize>) -> Option<&str> {
    at.and_then(|i| record.get(i))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn boolean(value: Option<&str>, default: bool) -> Result<bool, String> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "yes" | "1") => Ok(true),
        Some("false" | "no" | "0") => Ok(false),
        Some(_) => Err("must be true or false".to_owned()),
    }
}

/// `created_at` as our export writes it (RFC 3339) or as a spreadsheet often does
/// (`YYYY-MM-DD HH:MM:SS`, UTC); not in the future.
fn timestamp(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S").map(|t| t.and_utc()))
        .map_err(|_| "must be a date and time such as 2024-05-01T09:30:00Z".to_owned())?;
    if at > now + chrono::Duration::days(1) {
        return Err("must not be in the future".to_owned());
    }
    Ok(at.trunc_subsecs(6))
}

/// Checks one record; a refusal names the first field at fault.
fn check(
    columns: &Columns,
    record: &csv::StringRecord,
    line: u64,
    now: DateTime<Utc>,
) -> Result<Row, Refusal> {
    let email_raw = record.get(columns.email).unwrap_or_default().trim();
    let refuse = |field: &str, reason: String| Refusal {
        line,
        email: email_raw.to_owned(),
        field: field.to_owned(),
        reason,
    };
    let email = EmailAddress::parse(email_raw).map_err(|e| refuse("email", e.reason().into()))?;
    let name = match field(record, columns.name) {
        Some(v) => MemberName::parse(v).map_err(|e| refuse("name", e.reason().into()))?,
        None => None,
    };
    let note = match field(record, columns.note) {
        Some(v) => Note::parse(v).map_err(|e| refuse("note", e.reason().into()))?,
        None => None,
    };
    let labels: Vec<&str> = field(record, columns.labels)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let labels = Labels::parse(&labels).map_err(|e| refuse("labels", e.reason().into()))?;
    let subscribed = boolean(field(record, columns.subscribed), true)
        .map_err(|reason| refuse("subscribed_to_emails", reason))?;
    let complimentary = boolean(field(record, columns.complimentary), false)
        .map_err(|reason| refuse("complimentary_plan", reason))?;
    let newsletters = field(record, columns.newsletters)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let stripe_customer_id = match field(record, columns.stripe_customer_id) {
        Some(id) if id.starts_with("cus_") && id.len() <= 255 => Some(id.to_owned()),
        Some(_) => {
            return Err(refuse(
                "stripe_customer_id",
                "must be a Stripe customer id (cus_...)".into(),
            ))
        }
        None => None,
    };
    let created_at = field(record, columns.created_at)
        .map(|v| timestamp(v, now))
        .transpose()
        .map_err(|reason| refuse("created_at", reason))?;
    Ok(Row {
        line,
        email,
        name,
        note,
        labels,
        subscribed,
        newsletters,
        stripe_customer_id,
        created_at,
        complimentary,
    })
}

/// A batch from the reader: checked rows and refused ones, in file order.
type Batch = Vec<Result<Row, Refusal>>;

/// Reads `input` on a blocking thread, a batch at a time; refuses an address that an earlier
/// line of the file had (by a 64-bit hash of the normalised address, so a million rows cost
/// a few megabytes).
fn read_batches(
    input: Box<dyn Read + Send>,
) -> (
    tokio::sync::mpsc::Receiver<Result<Batch, String>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::None)
            .from_reader(input);
        let columns = match csv
            .headers()
            .map_err(|e| e.to_string())
            .and_then(Columns::from_header)
        {
            Ok(columns) => columns,
            Err(err) => {
                let _ = tx.blocking_send(Err(err));
                return;
            }
        };
        let hasher = std::collections::hash_map::RandomState::new();
        let mut seen: HashMap<u64, u64> = HashMap::new();
        let now = Utc::now();
        let mut batch = Vec::with_capacity(BATCH);
        let mut record = csv::StringRecord::new();
        loop {
            match csv.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(err) => {
                    let _ = tx.blocking_send(Err(format!("the file is not valid CSV: {err}")));
                    return;
                }
            }
            let line = record.position().map_or(0, csv::Position::line);
            let row = check(&columns, &record, line, now).and_then(|row| {
                let mut h = hasher.build_hasher();
                row.email.normalized().hash(&mut h);
                match seen.insert(h.finish(), line) {
                    Some(first) => {
                        seen.insert(h.finish(), first);
                        Err(Refusal {
                            line,
                            email: row.email.as_str().to_owned(),
                            field: "email".into(),
                            reason: format!("is on line {first} already"),
                        })
                    }
                    None => Ok(row),
                }
            });
            batch.push(row);
            if batch.len() == BATCH
                && tx
                    .blocking_send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))))
                    .is_err()
            {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
    });
    (rx, reader)
}

/// An existing member, as far as an import compares it.
#[derive(sqlx::FromRow)]
struct Existing {
    email: String,
    id: Uuid,
    name: Option<String>,
    note: Option<String>,
    labels: Vec<String>,
    newsletters: Vec<Uuid>,
    customers: Vec<String>,
}

/// Imports `input`; `refused` hears of each refusal as it happens, `progress` of the summary
/// after each batch.
pub async fn import(
    pool: &PgPool,
    members: &Arc<CommandBus<Member>>,
    input: Box<dyn Read + Send>,
    request_id: &str,
    mut refused: impl FnMut(&Refusal),
    progress: impl Fn(&Summary),
) -> anyhow::Result<Summary> {
    let newsletters = Newsletters::load(pool).await?;
    let (mut batches, reader) = read_batches(input);
    let mut summary = Summary::default();
    while let Some(batch) = batches.recv().await {
        let batch = batch.map_err(anyhow::Error::msg)?;
        summary.rows += batch.len() as u64;
        let mut rows = Vec::with_capacity(batch.len());
        for row in batch {
            match row.and_then(|row| newsletters.check(row)) {
                Ok(row) => rows.push(row),
                Err(refusal) => {
                    summary.refused += 1;
                    refused(&refusal);
                }
            }
        }
        let done = import_batch(pool, members, &newsletters, rows, request_id).await?;
        summary.created += done.created;
        summary.updated += done.updated;
        summary.unchanged += done.unchanged;
        summary.refused += done.refused.len() as u64;
        summary.notes += done.notes.len() as u64;
        let mut report: Vec<&Refusal> = done.refused.iter().chain(&done.notes).collect();
        report.sort_by_key(|r| r.line);
        for refusal in report {
            refused(refusal);
        }
        progress(&summary);
    }
    reader.await?;
    Ok(summary)
}

/// The newsletters by name, and those a new subscriber joins when a row names none.
struct Newsletters {
    by_name: HashMap<String, Uuid>,
    on_signup: Vec<Uuid>,
}

impl Newsletters {
    async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let rows: Vec<(Uuid, String, bool)> = sqlx::query_as(
            "SELECT id, name, subscribe_on_signup AND status = 'active' FROM newsletters",
        )
        .fetch_all(pool)
        .await?;
        Ok(Self {
            by_name: rows
                .iter()
                .map(|(id, name, _)| (name.to_lowercase(), *id))
                .collect(),
            on_signup: rows.iter().filter(|r| r.2).map(|r| r.0).collect(),
        })
    }

    /// Refuses a row naming a newsletter we do not have.
    fn check(&self, row: Row) -> Result<Row, Refusal> {
        match row
            .newsletters
            .iter()
            .find(|n| !self.by_name.contains_key(&n.to_lowercase()))
        {
            Some(unknown) => Err(Refusal {
                line: row.line,
                email: row.email.as_str().to_owned(),
                field: "newsletters".into(),
                reason: format!("there is no newsletter named {unknown:?}"),
            }),
            None => Ok(row),
        }
    }

    /// The newsletters a row subscribes its member to.
    fn of(&self, row: &Row) -> Vec<Uuid> {
        if !row.subscribed {
            return Vec::new();
        }
        if row.newsletters.is_empty() {
            return self.on_signup.clone();
        }
        row.newsletters
            .iter()
            .filter_map(|n| self.by_name.get(&n.to_lowercase()).copied())
            .collect()
    }
}

#[derive(Default)]
struct BatchOutcome {
    created: u64,
    updated: u64,
    unchanged: u64,
    refused: Vec<Refusal>,
    notes: Vec<Refusal>,
}

async fn import_batch(
    pool: &PgPool,
    members: &Arc<CommandBus<Member>>,
    newsletters: &Newsletters,
    rows: Vec<Row>,
    request_id: &str,
) -> anyhow::Result<BatchOutcome> {
    let mut outcome = BatchOutcome::default();
    let emails: Vec<String> = rows.iter().map(|r| r.email.normalized()).collect();
    let existing: Vec<Existing> = sqlx::query_as(
        "SELECT e.email, m.id, m.name, m.note, m.labels,
                coalesce((SELECT array_agg(n.newsletter_id) FROM member_newsletters n
                          WHERE n.member_id = m.id), '{}') AS newsletters,
                coalesce((SELECT array_agg(c.customer_id) FROM stripe_customers c
                          WHERE c.member_id = m.id), '{}') AS customers
         FROM member_emails e JOIN member_list m ON m.id = e.member_id
         WHERE e.email = ANY($1)",
    )
    .bind(&emails)
    .fetch_all(pool)
    .await?;
    let mut existing: HashMap<String, Existing> =
        existing.into_iter().map(|e| (e.email.clone(), e)).collect();
    let metadata = EventMetadata::for_request(request_id, Actor::Admin);

    // New members: one transaction for all (then one by one when one of them is refused).
    let mut new = Vec::new();
    let mut changes = Vec::new();
    for row in rows {
        match existing.remove(&row.email.normalized()) {
            Some(member) => changes.push((member, row)),
            None => new.push(row),
        }
    }
    let commands: Vec<(Uuid, MemberCommand)> = new
        .iter()
        .map(|row| {
            let id = Uuid::now_v7();
            (id, create_command(id, row, newsletters))
        })
        .collect();
    let batch = commands
        .iter()
        .map(|(id, command)| (id.to_string(), command.clone()))
        .collect();
    let mut created: Vec<(Uuid, Row)> = Vec::with_capacity(new.len());
    match members.execute_new_batch(batch, metadata.clone()).await {
        Ok(_) => created.extend(commands.into_iter().map(|(id, _)| id).zip(new)),
        // An address another member took meanwhile: find which row, one by one.
        Err(err) if inline_refusal(&err).is_some() => {
            for ((id, command), row) in commands.into_iter().zip(new) {
                match members
                    .execute_new(&id.to_string(), command, metadata.clone())
                    .await
                {
                    Ok(_) => created.push((id, row)),
                    Err(err) if inline_refusal(&err).is_some() => {
                        outcome.refused.push(Refusal {
                            line: row.line,
                            email: row.email.as_str().to_owned(),
                            field: "email".into(),
                            reason: "another member has this email".into(),
                        });
                    }
                    Err(err) => anyhow::bail!("creating the member of line {}: {err}", row.line),
                }
            }
        }
        // The database, not a row: the import stops (what it imported so far stays, and a
        // second run of the file goes on from there).
        Err(err) => anyhow::bail!("creating the members of a batch: {err}"),
    }
    outcome.created = created.len() as u64;
    // What a created member's row asks beyond its creation: a Stripe customer, and saying
    // that complimentary access is not imported.
    let followups: Vec<(Uuid, Vec<String>, Row)> = created
        .into_iter()
        .map(|(id, row)| (id, Vec::new(), row))
        .collect();
    let mut notes = link_and_report(pool, members, &metadata, followups).await?;
    outcome.notes.append(&mut notes);

    // Existing members: only what the row adds.
    let results: Vec<anyhow::Result<Updated>> = futures::stream::iter(changes)
        .map(|(member, row)| {
            let metadata = metadata.clone();
            async move { update(pool, members, newsletters, member, row, metadata).await }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    for result in results {
        match result? {
            Updated::Changed(mut notes) => {
                outcome.updated += 1;
                outcome.notes.append(&mut notes);
            }
            Updated::Unchanged(mut notes) => {
                outcome.unchanged += 1;
                outcome.notes.append(&mut notes);
            }
            Updated::Refused(refusal) => outcome.refused.push(refusal),
        }
    }
    Ok(outcome)
}

fn create_command(id: Uuid, row: &Row, newsletters: &Newsletters) -> MemberCommand {
    MemberCommand::CreateMember {
        member_id: id,
        email: row.email.clone(),
        name: row.name.clone(),
        note: row.note.clone(),
        labels: row.labels.clone(),
        source: MemberSource::Import,
        attribution: Some(Box::new(import_attribution())),
        newsletters: newsletters.of(row),
        at: row
            .created_at
            .unwrap_or_else(|| Utc::now().trunc_subsecs(6)),
    }
}

fn import_attribution() -> Attribution {
    aggregates::attribution::for_context(AttributionContext::Import)
}

/// Links each member's Stripe customer from its row (reserving the customer for it first,
/// as the translator does) and reports what was left out.
async fn link_and_report(
    pool: &PgPool,
    members: &Arc<CommandBus<Member>>,
    metadata: &EventMetadata,
    rows: Vec<(Uuid, Vec<String>, Row)>,
) -> anyhow::Result<Vec<Refusal>> {
    let mut refused = Vec::new();
    for (id, customers, row) in rows {
        if row.complimentary {
            refused.push(Refusal {
                line: row.line,
                email: row.email.as_str().to_owned(),
                field: "complimentary_plan".into(),
                reason: "imported without complimentary access, which memberledger does not \
                         grant yet"
                    .into(),
            });
        }
        let Some(customer) = &row.stripe_customer_id else {
            continue;
        };
        if customers.contains(customer) {
            continue;
        }
        let holder: Uuid = sqlx::query_scalar(
            "WITH claimed AS (
                 INSERT INTO stripe_customers (customer_id, member_id) VALUES ($1, $2)
                 ON CONFLICT (customer_id) DO NOTHING RETURNING member_id)
             SELECT member_id FROM claimed
             UNION ALL SELECT member_id FROM stripe_customers WHERE customer_id = $1
             LIMIT 1",
        )
        .bind(customer)
        .bind(id)
        .fetch_one(pool)
        .await?;
        if holder != id {
            refused.push(Refusal {
                line: row.line,
                email: row.email.as_str().to_owned(),
                field: "stripe_customer_id".into(),
                reason: "is linked to another member; the member was imported without it".into(),
            });
            continue;
        }
        let command = MemberCommand::LinkStripeCustomer {
            customer_id: customer.clone(),
            at: Utc::now(),
        };
        members
            .execute(&id.to_string(), command, metadata.clone())
            .await
            .map_err(|e| anyhow::anyhow!("linking {customer} to {id}: {e}"))?;
    }
    Ok(refused)
}

/// What a row did to an existing member.
enum Updated {
    Changed(Vec<Refusal>),
    Unchanged(Vec<Refusal>),
    Refused(Refusal),
}

/// Changes an existing member where the row adds something.
async fn update(
    pool: &PgPool,
    members: &Arc<CommandBus<Member>>,
    newsletters: &Newsletters,
    member: Existing,
    row: Row,
    metadata: EventMetadata,
) -> anyhow::Result<Updated> {
    let id = member.id.to_string();
    let mut changed = false;
    let name = row
        .name
        .clone()
        .filter(|n| Some(n.as_str()) != member.name.as_deref());
    let note = row
        .note
        .clone()
        .filter(|n| Some(n.as_str()) != member.note.as_deref());
    // Labels are added, never removed (Ghost's importer merges them too).
    let mut labels = member.labels.clone();
    for label in row.labels.as_slice() {
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            labels.push(label.clone());
        }
    }
    let labels = (labels.len() != member.labels.len())
        .then(|| Labels::parse(&labels))
        .transpose();
    let labels = match labels {
        Ok(labels) => labels,
        Err(err) => {
            return Ok(Updated::Refused(Refusal {
                line: row.line,
                email: row.email.as_str().to_owned(),
                field: "labels".into(),
                reason: format!("with the member's labels: {}", err.reason()),
            }))
        }
    };
    if name.is_some() || note.is_some() || labels.is_some() {
        let command = MemberCommand::UpdateMember {
            name: name.map(Some),
            note: note.map(Some),
            labels,
            at: Utc::now(),
        };
        changed |= members
            .execute(&id, command, metadata.clone())
            .await
            .map_err(|e| anyhow::anyhow!("updating {id}: {e}"))?
            .is_some();
    }
    let joined: HashSet<Uuid> = member.newsletters.iter().copied().collect();
    // An existing member joins the newsletters a row names; a row naming none changes no
    // subscription (the default newsletters are for new members).
    if !row.newsletters.is_empty() {
        for newsletter_id in newsletters.of(&row) {
            if joined.contains(&newsletter_id) {
                continue;
            }
            let command = MemberCommand::SubscribeNewsletter {
                newsletter_id,
                at: Utc::now(),
            };
            changed |= members
                .execute(&id, command, metadata.clone())
                .await
                .map_err(|e| anyhow::anyhow!("subscribing {id}: {e}"))?
                .is_some();
        }
    }
    let linked_before = member.customers.clone();
    let customer = row.stripe_customer_id.clone();
    let notes = link_and_report(
        pool,
        members,
        &metadata,
        vec![(member.id, member.customers, row)],
    )
    .await?;
    changed |= customer.is_some_and(|c| !linked_before.contains(&c))
        && !notes.iter().any(|r| r.field == "stripe_customer_id");
    Ok(if changed {
        Updated::Changed(notes)
    } else {
        Updated::Unchanged(notes)
    })
}

/// `memberledger members import FILE [--report REPORT]`: a progress bar on standard error
/// (when it is a terminal), the summary as JSON on standard output.
pub async fn run_cli(
    database: &crate::config::DatabaseConfig,
    file: &std::path::Path,
    report: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::IsTerminal;

    let input: Box<dyn Read + Send> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
    };
    let out: Box<dyn std::io::Write> = match report {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let mut report = csv::Writer::from_writer(out);
    report.write_record(report_header())?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}  {elapsed}") {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let db = crate::db::Database::connect(database).await?;
    crate::db::migrate(&db.pool).await?;
    let state =
        crate::api::state::AppState::new(db.pool.clone(), &crate::config::Settings::default());
    let request_id = format!("cli:import:{}", Uuid::now_v7());
    let mut write_error = None;
    let result = import(
        &db.pool,
        &state.members,
        input,
        &request_id,
        |refusal| {
            if let Err(err) = report.write_record(refusal.record()) {
                write_error.get_or_insert(err);
            }
        },
        |s| {
            bar.set_message(format!(
                "{} rows: {} created, {} updated, {} unchanged, {} refused",
                s.rows, s.created, s.updated, s.unchanged, s.refused
            ));
        },
    )
    .await;
    bar.finish_and_clear();
    db.close().await?;
    let summary = result?;
    if let Some(err) = write_error {
        return Err(err).context("writing the report");
    }
    report.flush()?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// The report as CSV: `line,email,field,reason`.
pub fn report_header() -> [&'static str; 4] {
    ["line", "email", "field", "reason"]
}

impl Refusal {
    pub fn record(&self) -> [String; 4] {
        [
            self.line.to_string(),
            self.email.clone(),
            self.field.clone(),
            self.reason.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(csv_text: &str) -> Vec<Result<Row, Refusal>> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(csv_text.as_bytes());
        let columns =
            Columns::from_header(&reader.headers().expect("header").clone()).expect("columns");
        let now = Utc::now();
        reader
            .records()
            .map(|r| {
                let r = r.expect("record");
                let line = r.position().map_or(0, csv::Position::line);
                check(&columns, &r, line, now)
            })
            .collect()
    }

    #[test]
    fn a_row_is_checked_field_by_field_and_refused_with_its_line() {
        let checked = rows(
            "Email,Name,labels,subscribed_to_emails,created_at,stripe_customer_id\n\
             ada@example.com,Ada,\"vip, beta\",false,2024-05-01T09:30:00Z,cus_1\n\
             not-an-email,Bob,,,,\n\
             cy@example.com,Cy,,maybe,,\n\
             di@example.com,Di,,,2999-01-01 00:00:00,\n\
             ed@example.com,Ed,,,,sub_1\n",
        );
        let ada = checked[0].as_ref().expect("ada");
        assert_eq!(ada.line, 2);
        assert_eq!(ada.labels.as_slice(), ["vip", "beta"]);
        assert!(!ada.subscribed);
        assert_eq!(ada.stripe_customer_id.as_deref(), Some("cus_1"));
        let refusal = |i: usize| checked[i].as_ref().expect_err("refused").clone();
        assert_eq!((refusal(1).line, refusal(1).field.as_str()), (3, "email"));
        assert_eq!(refusal(2).field, "subscribed_to_emails");
        assert_eq!(refusal(3).field, "created_at");
        assert_eq!(refusal(4).field, "stripe_customer_id");
    }

    #[test]
    fn a_file_without_an_email_column_is_refused_as_a_whole() {
        let header = csv::StringRecord::from(vec!["name", "note"]);
        assert!(Columns::from_header(&header).is_err());
    }
}
