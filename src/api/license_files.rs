//! Signed license files for offline verification (`crate::license_files`): the published
//! verifying keys, and a file for whoever holds a key.

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::licenses::{key_sha256, normalise_key, over_validation_limit};
use super::problem::{db_error, Problem};
use super::state::{ApiTags, State};
use crate::api::problem::api_response;
use crate::license_files;

pub struct LicenseFilesApi {
    pub state: State,
}

/// A key that verifies license files.
#[derive(Debug, Clone, Object)]
pub struct VerifyingKey {
    /// The key id every file names (`kid`).
    pub kid: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The 32-byte Ed25519 public key, base64.
    pub public_key: String,
    pub created_at: DateTime<Utc>,
    /// Set once the key was rotated out: it signs nothing new.
    #[oai(nullable)]
    pub retired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Object)]
pub struct VerifyingKeys {
    /// The id of the key that signs new files.
    pub active_kid: String,
    /// The active key first, then retired ones, newest first.
    pub keys: Vec<VerifyingKey>,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LicenseFileRequest {
    /// The license key, `KEY-XXXX-XXXX-XXXX`, in any case.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub key: String,
}

#[derive(Debug, Clone, Object)]
pub struct LicenseFileView {
    /// The signed file, `-----BEGIN LICENSE FILE-----` ... `-----END LICENSE FILE-----`.
    pub certificate: String,
    /// The signing key's id.
    pub kid: String,
    pub issued_at: DateTime<Utc>,
    /// After this the file is stale and the software should fetch a new one.
    pub expires_at: DateTime<Utc>,
}

api_response! {
    pub enum VerifyingKeysResponse {
        #[oai(status = 200)]
        Ok(Json<VerifyingKeys>),
    }
    problems {}
}

api_response! {
    pub enum LicenseFileResponse {
        /// The signed file.
        #[oai(status = 200)]
        Ok(Json<LicenseFileView>),
        /// Too many requests from this IP address; retry after `Retry-After` seconds.
        #[oai(status = 429, content_type = "application/problem+json")]
        TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// No license has this key.
        404 => NotFound,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation.
        422 => Invalid,
    }
}

#[OpenApi(prefix_path = "/v1/licenses", tag = "ApiTags::Licenses")]
impl LicenseFilesApi {
    /// The keys that verify license files
    ///
    /// Ed25519 public keys, each with the id (`kid`) the files it signed carry. Software that
    /// verifies offline embeds the active one; after a rotation, files signed by the retired
    /// key verify only with it.
    #[oai(
        path = "/public-key",
        method = "get",
        operation_id = "getLicensePublicKeys"
    )]
    async fn public_key(&self) -> VerifyingKeysResponse {
        match license_files::public_keys(&self.state.pool).await {
            Ok(keys) => VerifyingKeysResponse::Ok(Json(VerifyingKeys {
                active_kid: keys.first().map(|k| k.kid.clone()).unwrap_or_default(),
                keys: keys
                    .into_iter()
                    .map(|k| VerifyingKey {
                        kid: k.kid,
                        algorithm: "ed25519".to_owned(),
                        public_key: k.public_key,
                        created_at: k.created_at,
                        retired_at: k.retired_at,
                    })
                    .collect(),
            })),
            Err(err) => db_error(err).into(),
        }
    }

    /// A signed license file for a key
    ///
    /// For the licensed software, which holds the key: the license's facts (status, domains,
    /// seat, expiry) signed with Ed25519, to verify offline with the published key for 30
    /// days. No authentication; rate-limited per IP address with license validations.
    #[oai(path = "/file", method = "post", operation_id = "getLicenseFile")]
    async fn file(&self, req: &Request, body: Json<LicenseFileRequest>) -> LicenseFileResponse {
        if let Some((problem, secs)) = over_validation_limit(&self.state, req, "requests") {
            return LicenseFileResponse::TooManyRequests(Json(problem), secs);
        }
        let not_found = || Problem::not_found("no license has this key");
        let Some(key) = normalise_key(&body.0.key) else {
            return not_found().into();
        };
        let pool = &self.state.pool;
        let facts = match license_files::facts(pool, &key_sha256(&key)).await {
            Ok(Some(facts)) if facts.key == key.as_str() => facts,
            Ok(_) => return not_found().into(),
            Err(err) => return db_error(err).into(),
        };
        match license_files::sign(pool, &facts, Utc::now()).await {
            Ok(file) => LicenseFileResponse::Ok(Json(LicenseFileView {
                certificate: file.certificate,
                kid: file.kid,
                issued_at: file.issued_at,
                expires_at: file.expires_at,
            })),
            Err(err) => db_error(err).into(),
        }
    }
}

impl poem_openapi::types::Example for LicenseFileRequest {
    fn example() -> Self {
        Self {
            key: "KEY-7K2M-Q9XD-4HRT".into(),
        }
    }
}
