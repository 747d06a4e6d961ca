//! Reading an import file: the header's columns, each row checked field by field into a
//! [`Row`] or a [`Refusal`], on a blocking thread that hands on batches.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Read;

use aggregates::{EmailAddress, Labels, MemberName, Note};
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};

use super::{Refusal, BATCH};

/// A checked row.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) line: u64,
    pub(super) email: EmailAddress,
    pub(super) name: Option<MemberName>,
    pub(super) note: Option<Note>,
    pub(super) labels: Labels,
    pub(super) subscribed: bool,
    /// Newsletters by name, as written.
    pub(super) newsletters: Vec<String>,
    pub(super) stripe_customer_id: Option<String>,
    pub(super) created_at: Option<DateTime<Utc>>,
    /// `complimentary_plan` was true: complimentary access without end to the only active
    /// tier (reported, the member imported without it, when there is not exactly one).
    pub(super) complimentary: bool,
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

/// Whether `start`, a file's first bytes, begins with a header that names an email column:
/// an upload is refused at once when it does not.
pub(super) fn check_header(start: &[u8]) -> Result<(), String> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(start);
    let header = csv
        .headers()
        .map_err(|e| format!("the file is not valid CSV: {e}"))?;
    Columns::from_header(header).map(|_| ())
}

/// A batch from the reader: checked rows and refused ones, in file order.
pub(super) type Batch = Vec<Result<Row, Refusal>>;

/// Reads `input` on a blocking thread, a batch at a time; refuses an address that an earlier
/// line of the file had (by a 64-bit hash of the normalised address, so a million rows cost
/// a few megabytes).
pub(super) fn read_batches(
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
