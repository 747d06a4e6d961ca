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
//!   Stripe customer to link, complimentary access it lacks); an unchanged member gets no
//!   event, so importing a file twice changes nothing the second time.
//! - **Complimentary access.** `complimentary_plan=true` gives a member without complimentary
//!   access the tier a Ghost site has (Ghost's importer gives its default tier), without end:
//!   the only active tier. With none, or several, the member is imported without it and the
//!   report says why (an admin gives it with `PUT /v1/members/{id}/complimentary`). A member
//!   who has access keeps it as it is (its tier and end are an admin's choice).
//! - **Reported.** A row that cannot be imported is refused with its line, field and reason;
//!   the report is a CSV file of those (`line,email,field,reason`).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use aggregates::{AttributionContext, Labels, Member, MemberCommand, MemberSource};
use chrono::{SubsecRound, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{inline_refusal, Actor, CommandBus, EventMetadata};

mod cli;
pub mod job;
mod read;

pub use cli::run_cli;
use read::{read_batches, Row};

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

/// What is wrong with the file itself (not CSV, no email column): importing it again fails
/// again, unlike a database error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

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
    /// It has complimentary access (of any tier, with or without end).
    comped: bool,
}

/// An import under way: [`Import::next_batch`] reads and applies the file a batch at a time.
///
/// ```ignore
/// let mut import = Import::start(&pool, &members, input, "request id", Summary::default()).await?;
/// while let Some(report) = import.next_batch().await? { /* report, import.summary() */ }
/// ```
pub struct Import<'a> {
    pool: &'a PgPool,
    members: &'a Arc<CommandBus<Member>>,
    request_id: &'a str,
    newsletters: Newsletters,
    comp_tier: CompTier,
    batches: tokio::sync::mpsc::Receiver<Result<read::Batch, String>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// Rows an interrupted run applied already: read again, not applied.
    skip: u64,
    read: u64,
    summary: Summary,
}

impl<'a> Import<'a> {
    /// Starts reading `input`, going on from `resume`: an interrupted import's progress as of
    /// its last applied batch (`Summary::default()` for a new one).
    pub async fn start(
        pool: &'a PgPool,
        members: &'a Arc<CommandBus<Member>>,
        input: Box<dyn Read + Send>,
        request_id: &'a str,
        resume: Summary,
    ) -> anyhow::Result<Self> {
        let newsletters = Newsletters::load(pool).await?;
        let comp_tier = CompTier::load(pool).await?;
        let (batches, reader) = read_batches(input);
        Ok(Self {
            pool,
            members,
            request_id,
            newsletters,
            comp_tier,
            batches,
            reader: Some(reader),
            skip: resume.rows,
            read: 0,
            summary: resume,
        })
    }

    /// What the import did so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Applies the next batch of the file; its report (refused rows and left-out fields, in
    /// file order), or `None` once the file has been read.
    pub async fn next_batch(&mut self) -> anyhow::Result<Option<Vec<Refusal>>> {
        loop {
            let Some(batch) = self.batches.recv().await else {
                if let Some(reader) = self.reader.take() {
                    reader.await?;
                }
                return Ok(None);
            };
            let batch = batch.map_err(FileError)?;
            // Batches are BATCH rows from the file's start, so an interrupted run's applied
            // rows are whole batches.
            self.read += batch.len() as u64;
            if self.read <= self.skip {
                continue;
            }
            return self.apply(batch).await.map(Some);
        }
    }

    async fn apply(&mut self, batch: read::Batch) -> anyhow::Result<Vec<Refusal>> {
        let mut rows = Vec::with_capacity(batch.len());
        let mut report = Vec::new();
        self.summary.rows += batch.len() as u64;
        for row in batch {
            match row.and_then(|row| self.newsletters.check(row)) {
                Ok(row) => rows.push(row),
                Err(refusal) => report.push(refusal),
            }
        }
        let done = import_batch(
            self.pool,
            self.members,
            &Context {
                newsletters: &self.newsletters,
                comp_tier: &self.comp_tier,
            },
            rows,
            self.request_id,
        )
        .await?;
        let s = &mut self.summary;
        s.created += done.created;
        s.updated += done.updated;
        s.unchanged += done.unchanged;
        s.refused += (report.len() + done.refused.len()) as u64;
        s.notes += done.notes.len() as u64;
        report.extend(done.refused);
        report.extend(done.notes);
        report.sort_by_key(|r| r.line);
        Ok(report)
    }
}

/// Imports all of `input`; `refused` hears of each line of the report in file order.
pub async fn import(
    pool: &PgPool,
    members: &Arc<CommandBus<Member>>,
    input: Box<dyn Read + Send>,
    request_id: &str,
    mut refused: impl FnMut(&Refusal),
) -> anyhow::Result<Summary> {
    let mut import = Import::start(pool, members, input, request_id, Summary::default()).await?;
    while let Some(report) = import.next_batch().await? {
        report.iter().for_each(&mut refused);
    }
    Ok(import.summary())
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

/// The tier `complimentary_plan=true` gives, or why none.
enum CompTier {
    Tier(Uuid),
    None(String),
}

impl CompTier {
    /// The only active tier; else the reason a row's complimentary access is not imported.
    async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let active: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM tiers WHERE NOT archived ORDER BY id LIMIT 2")
                .fetch_all(pool)
                .await?;
        Ok(match active.as_slice() {
            [tier] => Self::Tier(*tier),
            [] => Self::None(
                "imported without complimentary access: there is no active tier to give \
                 (create one, then give it with PUT /v1/members/{id}/complimentary)"
                    .into(),
            ),
            _ => Self::None(
                "imported without complimentary access: there are several active tiers and \
                 the file names none (give it with PUT /v1/members/{id}/complimentary)"
                    .into(),
            ),
        })
    }
}

/// What a batch is imported with.
struct Context<'a> {
    newsletters: &'a Newsletters,
    comp_tier: &'a CompTier,
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
    context: &Context<'_>,
    rows: Vec<Row>,
    request_id: &str,
) -> anyhow::Result<BatchOutcome> {
    let newsletters = context.newsletters;
    let mut outcome = BatchOutcome::default();
    let emails: Vec<String> = rows.iter().map(|r| r.email.normalized()).collect();
    let existing: Vec<Existing> = sqlx::query_as(
        "SELECT e.email, m.id, m.name, m.note, m.labels,
                coalesce((SELECT array_agg(n.newsletter_id) FROM member_newsletters n
                          WHERE n.member_id = m.id), '{}') AS newsletters,
                coalesce((SELECT array_agg(c.customer_id) FROM stripe_customers c
                          WHERE c.member_id = m.id), '{}') AS customers,
                EXISTS (SELECT 1 FROM member_comps c WHERE c.member_id = m.id) AS comped
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
    // What a created member's row asks beyond its creation: a Stripe customer, and
    // complimentary access (or saying why not).
    let followups: Vec<Followup> = created
        .into_iter()
        .map(|(id, row)| Followup {
            id,
            customers: Vec::new(),
            comped: false,
            row,
        })
        .collect();
    let (mut notes, _) =
        link_and_report(pool, members, context.comp_tier, &metadata, followups).await?;
    outcome.notes.append(&mut notes);

    // Existing members: only what the row adds.
    let results: Vec<anyhow::Result<Updated>> = futures::stream::iter(changes)
        .map(|(member, row)| {
            let metadata = metadata.clone();
            async move { update(pool, members, context, member, row, metadata).await }
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
        attribution: Some(Box::new(aggregates::attribution::for_context(
            AttributionContext::Import,
        ))),
        newsletters: newsletters.of(row),
        at: row
            .created_at
            .unwrap_or_else(|| Utc::now().trunc_subsecs(6)),
    }
}

/// A member and its row, for what follows its creation or update.
struct Followup {
    id: Uuid,
    /// The Stripe customers linked to it already.
    customers: Vec<String>,
    /// It has complimentary access already.
    comped: bool,
    row: Row,
}

/// Gives each member the complimentary access its row asks for (when it has none), links its
/// Stripe customer from its row (reserving the customer for it first, as the translator
/// does), and reports what was left out; with whether a member was given access.
async fn link_and_report(
    pool: &PgPool,
    members: &Arc<CommandBus<Member>>,
    comp_tier: &CompTier,
    metadata: &EventMetadata,
    rows: Vec<Followup>,
) -> anyhow::Result<(Vec<Refusal>, bool)> {
    let mut refused = Vec::new();
    let mut granted = false;
    for Followup {
        id,
        customers,
        comped,
        row,
    } in rows
    {
        match comp_tier {
            _ if !row.complimentary || comped => {}
            CompTier::Tier(tier_id) => {
                let command = MemberCommand::GrantComp {
                    tier_id: *tier_id,
                    until: None,
                    at: Utc::now(),
                };
                granted |= appends(members, &id.to_string(), command, metadata).await?;
            }
            CompTier::None(reason) => refused.push(Refusal {
                line: row.line,
                email: row.email.as_str().to_owned(),
                field: "complimentary_plan".into(),
                reason: reason.clone(),
            }),
        }
        let Some(customer) = &row.stripe_customer_id else {
            continue;
        };
        if customers.contains(customer) {
            continue;
        }
        let holder =
            crate::members::link_stripe_customer(pool, members, customer, id, metadata.clone())
                .await?;
        if holder != id {
            refused.push(Refusal {
                line: row.line,
                email: row.email.as_str().to_owned(),
                field: "stripe_customer_id".into(),
                reason: "is linked to another member; the member was imported without it".into(),
            });
        }
    }
    Ok((refused, granted))
}

/// Runs a command on an existing member; `true` when it appended events.
async fn appends(
    members: &CommandBus<Member>,
    id: &str,
    command: MemberCommand,
    metadata: &EventMetadata,
) -> anyhow::Result<bool> {
    let appended = members
        .execute(id, command, metadata.clone())
        .await
        .map_err(|e| anyhow::anyhow!("changing member {id}: {e}"))?;
    Ok(appended.is_some())
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
    context: &Context<'_>,
    member: Existing,
    row: Row,
    metadata: EventMetadata,
) -> anyhow::Result<Updated> {
    let newsletters = context.newsletters;
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
        changed |= appends(members, &id, command, &metadata).await?;
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
            changed |= appends(members, &id, command, &metadata).await?;
        }
    }
    let linked_before = member.customers.clone();
    let customer = row.stripe_customer_id.clone();
    let (notes, granted) = link_and_report(
        pool,
        members,
        context.comp_tier,
        &metadata,
        vec![Followup {
            id: member.id,
            customers: member.customers,
            comped: member.comped,
            row,
        }],
    )
    .await?;
    changed |= granted;
    changed |= customer.is_some_and(|c| !linked_before.contains(&c))
        && !notes.iter().any(|r| r.field == "stripe_customer_id");
    Ok(if changed {
        Updated::Changed(notes)
    } else {
        Updated::Unchanged(notes)
    })
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
