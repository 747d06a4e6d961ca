//! CSV imports over HTTP: `/v1/members/imports`. The upload is stored and answered 202 with
//! an import to poll; an importer in any instance runs it (`members_import::job`). The
//! command-line `memberledger members import` reads the same files.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::types::multipart::Upload;
use poem_openapi::{Enum, Multipart, Object, OpenApi};
use uuid::Uuid;

use super::auth::AdminAuth;
use super::problem::{api_response, db_error, FieldError, Problem};
use super::state::{ApiTags, State};
use crate::members_import::job::{self, MemberImport, UploadError};

pub struct MemberImportsApi {
    pub state: State,
}

/// The file to import.
#[derive(Debug, Multipart)]
pub struct ImportUpload {
    /// A CSV file whose first line names its columns: `email` (required), `name`, `note`,
    /// `subscribed_to_emails`, `complimentary_plan`, `stripe_customer_id`, `created_at`,
    /// `labels` (comma-separated) and `newsletters` (names, comma-separated), as Ghost and
    /// `GET /v1/members/export.csv` write them; other columns are ignored.
    file: Upload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "MemberImportStatus", rename_all = "snake_case")]
pub enum MemberImportStatus {
    /// Waiting for an importer.
    Pending,
    Running,
    Completed,
    /// The file could not be imported; `error` says why.
    Failed,
}

/// An import: its progress while it runs, its counts once it has ended.
#[derive(Debug, Clone, Object)]
#[oai(rename = "MemberImport")]
pub struct MemberImportView {
    pub id: Uuid,
    pub status: MemberImportStatus,
    #[oai(nullable)]
    pub file_name: Option<String>,
    pub size_bytes: i64,
    /// Bytes of the file read so far.
    pub bytes_read: i64,
    /// Share of the file read so far, 0 to 100.
    pub percent: i32,
    /// Data rows read (the header not counted).
    pub rows: i64,
    /// Members created.
    pub created: i64,
    /// Existing members the file added something to (a name, a note, labels, newsletters, a
    /// Stripe customer).
    pub updated: i64,
    /// Existing members the file had nothing new for.
    pub unchanged: i64,
    /// Rows not imported; each is a line of the report.
    pub refused: i64,
    /// Rows imported with a field left out; each is a line of the report.
    pub notes: i64,
    /// Why the import failed.
    #[oai(nullable)]
    pub error: Option<String>,
    /// The report (`line,email,field,reason`) so far.
    pub report_url: String,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<MemberImport> for MemberImportView {
    fn from(i: MemberImport) -> Self {
        let status = match i.status.as_str() {
            "running" => MemberImportStatus::Running,
            "completed" => MemberImportStatus::Completed,
            "failed" => MemberImportStatus::Failed,
            _ => MemberImportStatus::Pending,
        };
        let percent = if i.size_bytes > 0 {
            i32::try_from((i.bytes_read.min(i.size_bytes) * 100) / i.size_bytes).unwrap_or(100)
        } else {
            100
        };
        Self {
            report_url: format!("/v1/members/imports/{}/report.csv", i.id),
            id: i.id,
            status,
            file_name: i.file_name,
            size_bytes: i.size_bytes,
            bytes_read: i.bytes_read,
            percent,
            rows: i.rows_read,
            created: i.created,
            updated: i.updated,
            unchanged: i.unchanged,
            refused: i.refused,
            notes: i.notes,
            error: i.error,
            created_at: i.created_at,
            started_at: i.started_at,
            finished_at: i.finished_at,
        }
    }
}

api_response! {
    pub enum CreateImportResponse {
        /// The file is stored and will be imported; poll the import at `Location`.
        #[oai(status = 202)]
        Accepted(Json<MemberImportView>, #[oai(header = "Location")] String),
    }
    problems {
        /// The body is not a multipart form with a `file` part.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// The file is larger than `MEMBER_IMPORT_MAX_MB`.
        413 => PayloadTooLarge,
        /// The body is not `multipart/form-data`.
        415 => UnsupportedMediaType,
        /// The file is empty, or its first line is not a header with an `email` column.
        422 => Invalid,
    }
}

api_response! {
    pub enum GetImportResponse {
        /// The import.
        #[oai(status = 200)]
        Ok(Json<MemberImportView>),
    }
    problems {
        /// The id is not a UUID.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No import has this id.
        404 => NotFound,
    }
}

api_response! {
    pub enum ImportReportResponse {
        /// The report as CSV (`line,email,field,reason`), in file order: what was refused or
        /// left out so far.
        #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
        Ok(Binary<poem::Body>, #[oai(header = "Content-Disposition")] String),
    }
    problems {
        /// The id is not a UUID.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No import has this id.
        404 => NotFound,
    }
}

#[OpenApi(prefix_path = "/v1/members/imports", tag = "ApiTags::Members")]
impl MemberImportsApi {
    /// Import members from CSV
    ///
    /// Stores the uploaded file and answers at once; any instance then imports it, 500 rows
    /// to a transaction, and the import shows its progress. A row whose email belongs to a
    /// member adds only what is new to that member, so importing a file twice creates nothing
    /// twice. Rows that cannot be imported are listed in the report with their line, field
    /// and reason.
    #[oai(path = "/", method = "post", operation_id = "importMembers")]
    async fn create(&self, _auth: AdminAuth, upload: ImportUpload) -> CreateImportResponse {
        let name = upload.file.file_name().map(str::to_owned);
        let file = upload.file.into_async_read();
        match job::upload(&self.state.pool, name.as_deref(), file).await {
            Ok(import) => {
                let location = format!("/v1/members/imports/{}", import.id);
                CreateImportResponse::Accepted(Json(import.into()), location)
            }
            Err(UploadError::Empty) => {
                Problem::validation(vec![FieldError::new("file", "is empty")]).into()
            }
            Err(UploadError::File(reason)) => {
                Problem::validation(vec![FieldError::new("file", reason)]).into()
            }
            Err(UploadError::Read(err)) => {
                Problem::bad_request(format!("the upload could not be read: {err}")).into()
            }
            Err(UploadError::Db(err)) => db_error(err).into(),
        }
    }

    /// Get an import
    ///
    /// Its status and progress: rows read and what became of them, and the share of the file
    /// read.
    #[oai(path = "/:id", method = "get", operation_id = "getMemberImport")]
    async fn get(&self, _auth: AdminAuth, id: Path<Uuid>) -> GetImportResponse {
        match job::get(&self.state.pool, id.0).await {
            Ok(Some(import)) => GetImportResponse::Ok(Json(import.into())),
            Ok(None) => Problem::not_found("no import has this id").into(),
            Err(err) => db_error(err).into(),
        }
    }

    /// An import's report
    ///
    /// The rows that were refused, and the fields that were left out of imported rows, as CSV.
    #[oai(
        path = "/:id/report.csv",
        method = "get",
        operation_id = "getMemberImportReport"
    )]
    async fn report(&self, _auth: AdminAuth, id: Path<Uuid>) -> ImportReportResponse {
        match job::get(&self.state.pool, id.0).await {
            Ok(Some(_)) => {
                let body =
                    poem::Body::from_bytes_stream(job::report(self.state.pool.clone(), id.0));
                let file = format!("attachment; filename=\"import-{}-report.csv\"", id.0);
                ImportReportResponse::Ok(Binary(body), file)
            }
            Ok(None) => Problem::not_found("no import has this id").into(),
            Err(err) => db_error(err).into(),
        }
    }
}
