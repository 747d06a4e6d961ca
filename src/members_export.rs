//! Members out as CSV (`GET /v1/members/export.csv`, `memberledger members export`): Ghost's
//! member export columns, plus ours, streamed a page of 1,000 members at a time (keyset over
//! `(created_at, id)`), so memory stays flat whatever the member count. Oldest first, so an
//! export read in order recreates members in the order they came.

use chrono::{DateTime, Utc};
use futures::Stream;
use sqlx::PgPool;
use uuid::Uuid;

/// The header row: Ghost's import/export columns first, then `newsletters` (names), `status`
/// and `source`.
pub const COLUMNS: [&str; 12] = [
    "id",
    "email",
    "name",
    "note",
    "subscribed_to_emails",
    "complimentary_plan",
    "stripe_customer_id",
    "created_at",
    "labels",
    "newsletters",
    "status",
    "source",
];

/// Which members (the member list's filters).
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub status: Option<String>,
    pub label: Option<String>,
    pub newsletter: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

const PAGE: i64 = 1000;

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    email: String,
    name: Option<String>,
    note: Option<String>,
    subscribed_to_emails: bool,
    complimentary_plan: bool,
    stripe_customer_id: Option<String>,
    created_at: DateTime<Utc>,
    labels: Vec<String>,
    newsletters: Vec<String>,
    status: String,
    source: String,
}

const SELECT: &str = "SELECT m.id, m.email, m.name, m.note,
        EXISTS (SELECT 1 FROM member_newsletters n WHERE n.member_id = m.id) AS subscribed_to_emails,
        m.status = 'comped' AS complimentary_plan,
        (SELECT c.customer_id FROM stripe_customers c WHERE c.member_id = m.id
         ORDER BY c.linked_at LIMIT 1) AS stripe_customer_id,
        m.created_at, m.labels,
        coalesce((SELECT array_agg(nl.name ORDER BY nl.name) FROM member_newsletters n
                  JOIN newsletters nl ON nl.id = n.newsletter_id WHERE n.member_id = m.id), '{}')
            AS newsletters,
        m.status, m.source
     FROM member_list m
     WHERE ($1::text IS NULL OR m.status = $1)
       AND ($2::text IS NULL OR $2 = ANY (m.labels))
       AND ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM member_newsletters n
                                        WHERE n.member_id = m.id AND n.newsletter_id = $3))
       AND ($4::timestamptz IS NULL OR m.created_at > $4)
       AND ($5::timestamptz IS NULL OR m.created_at < $5)
       AND ($6::timestamptz IS NULL OR (m.created_at, m.id) > ($6, $7))
     ORDER BY m.created_at, m.id
     LIMIT $8";

fn csv_bytes(write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing into memory fails only on a bug; the stream then ends with an error.
    let _ = write(&mut writer);
    writer.into_inner().unwrap_or_default()
}

fn page_bytes(rows: &[Row]) -> Vec<u8> {
    csv_bytes(|w| {
        for r in rows {
            w.write_record([
                r.id.to_string(),
                r.email.clone(),
                r.name.clone().unwrap_or_default(),
                r.note.clone().unwrap_or_default(),
                r.subscribed_to_emails.to_string(),
                r.complimentary_plan.to_string(),
                r.stripe_customer_id.clone().unwrap_or_default(),
                r.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                r.labels.join(","),
                r.newsletters.join(","),
                r.status.clone(),
                r.source.clone(),
            ])?;
        }
        Ok(())
    })
}

struct Cursor {
    pool: PgPool,
    filter: ExportFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    header: bool,
    done: bool,
}

/// The export as a stream of CSV chunks: the header, then a chunk per page.
pub fn stream(
    pool: PgPool,
    filter: ExportFilter,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let start = Cursor {
        pool,
        filter,
        after: None,
        header: false,
        done: false,
    };
    futures::stream::try_unfold(start, |mut cursor| async move {
        if !cursor.header {
            cursor.header = true;
            return Ok(Some((csv_bytes(|w| w.write_record(COLUMNS)), cursor)));
        }
        if cursor.done {
            return Ok(None);
        }
        let f = &cursor.filter;
        let rows: Vec<Row> = sqlx::query_as(SELECT)
            .bind(&f.status)
            .bind(&f.label)
            .bind(f.newsletter)
            .bind(f.created_after)
            .bind(f.created_before)
            .bind(cursor.after.map(|(t, _)| t))
            .bind(cursor.after.map(|(_, id)| id))
            .bind(PAGE)
            .fetch_all(&cursor.pool)
            .await
            .map_err(std::io::Error::other)?;
        if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            cursor.done = true;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        cursor.after = rows.last().map(|r| (r.created_at, r.id));
        Ok(Some((page_bytes(&rows), cursor)))
    })
}
