//! `loadgen reads` (scenario d): dashboard and license-validation reads.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cli::ReadsArgs;
use crate::database::{connect, db_cost, db_mark, wait_caught_up};
use crate::http::{check_loopback, http_client, timed};
use crate::measure::{drive, print_run, Limit, Run};
use crate::results::write_result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRun {
    pub name: String,
    pub run: Run,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadsResult {
    pub log_events: i64,
    pub members: i64,
    pub runs: Vec<ReadRun>,
    pub license_note: Option<String>,
}

pub async fn reads(args: ReadsArgs) -> Result<()> {
    check_loopback(&args.server.url)?;
    let pool = connect(&args.db, 2).await?;
    let client = http_client(args.concurrency.iter().copied().max().unwrap_or(1))?;
    // The read models must hold the whole log (the server may have just started).
    wait_caught_up(&pool, Duration::from_secs(120)).await?;
    let log_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let member_count: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(&pool)
        .await?;
    // Members with a Stripe subscription, payments and a license (the webhook scenario's),
    // and members with only a profile (the seeded ones).
    let rich: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT member_id FROM subscriptions ORDER BY member_id LIMIT 2000",
    )
    .fetch_all(&pool)
    .await?;
    let plain: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM member_list WHERE email LIKE '%@seed.example.com' ORDER BY id LIMIT 2000",
    )
    .fetch_all(&pool)
    .await?;
    let mut runs = Vec::new();
    let seconds = Duration::from_secs(args.seconds);
    for (label, ids) in [("subscribed members", rich), ("seeded members", plain)] {
        if ids.is_empty() {
            println!("dashboard of {label}: none in the database, skipped");
            continue;
        }
        let ids = Arc::new(ids);
        for &concurrency in &args.concurrency {
            let client = client.clone();
            let ids = ids.clone();
            let base = args.server.url.clone();
            let token = args.server.admin_token.clone();
            let mark = db_mark(&pool).await?;
            let mut run = drive(
                concurrency,
                Limit {
                    duration: Some(seconds),
                    units: None,
                },
                move |i| {
                    let id = ids[i.wrapping_mul(7919) % ids.len()];
                    let req = client
                        .get(format!("{base}/v1/members/{id}/dashboard"))
                        .bearer_auth(&token);
                    async move { vec![timed(req, &[200]).await] }
                },
            )
            .await;
            run.db = Some(db_cost(&pool, &mark, run.ok).await?);
            let name = format!("GET dashboard ({label})");
            print_run(&name, &run);
            runs.push(ReadRun { name, run });
        }
    }

    let license_note = match license_request_shape(&client, &args.server.url).await? {
        Err(note) => {
            println!("license validation: {note}");
            Some(note)
        }
        Ok(shape) => {
            let keys: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT key, site FROM licenses ORDER BY status, issued_at DESC LIMIT 2000",
            )
            .fetch_all(&pool)
            .await?;
            if keys.is_empty() {
                let note = "no licenses in the database to validate".to_owned();
                println!("license validation: {note}");
                Some(note)
            } else {
                let keys = Arc::new(keys);
                let shape = Arc::new(shape);
                for &concurrency in &args.concurrency {
                    let client = client.clone();
                    let keys = keys.clone();
                    let shape = shape.clone();
                    let url = format!("{}/v1/licenses/validate", args.server.url);
                    let mark = db_mark(&pool).await?;
                    let mut run = drive(
                        concurrency,
                        Limit {
                            duration: Some(seconds),
                            units: None,
                        },
                        move |i| {
                            let (key, site) = &keys[i.wrapping_mul(7919) % keys.len()];
                            let req = client.post(&url).json(&shape.body(key, site.as_deref()));
                            async move { vec![timed(req, &[200]).await] }
                        },
                    )
                    .await;
                    run.db = Some(db_cost(&pool, &mark, run.ok).await?);
                    let name = "POST /v1/licenses/validate".to_owned();
                    print_run(&name, &run);
                    runs.push(ReadRun { name, run });
                }
                None
            }
        }
    };
    write_result(
        &args.common,
        "reads",
        &ReadsResult {
            log_events,
            members: member_count,
            runs,
            license_note,
        },
    )
}

/// The request body of `POST /v1/licenses/validate`, read from the served OpenAPI spec.
pub struct LicenseShape {
    pub key_field: String,
    pub site_field: Option<String>,
}

impl LicenseShape {
    pub fn body(&self, key: &str, site: Option<&str>) -> Value {
        let mut body = serde_json::Map::new();
        body.insert(self.key_field.clone(), json!(key));
        if let Some(field) = &self.site_field {
            body.insert(field.clone(), json!(site.unwrap_or("example.com")));
        }
        Value::Object(body)
    }
}

pub async fn license_request_shape(
    client: &reqwest::Client,
    base: &str,
) -> Result<std::result::Result<LicenseShape, String>> {
    let spec: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    let op = &spec["paths"]["/v1/licenses/validate"]["post"];
    if op.is_null() {
        return Ok(Err(
            "POST /v1/licenses/validate is not in the served spec (not implemented yet): skipped"
                .to_owned(),
        ));
    }
    // poem-openapi names the media type `application/json; charset=utf-8`.
    let mut schema = op["requestBody"]["content"]
        .as_object()
        .and_then(|c| {
            c.iter()
                .find(|(media, _)| media.starts_with("application/json"))
                .map(|(_, body)| body["schema"].clone())
        })
        .unwrap_or_default();
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        schema = spec["components"]["schemas"][name].clone();
    }
    let fields: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let key_field = fields.iter().find(|f| f.contains("key")).cloned();
    let site_field = fields
        .iter()
        .find(|f| {
            ["domain", "site", "host", "url"]
                .iter()
                .any(|w| f.contains(w))
        })
        .cloned();
    Ok(match key_field {
        Some(key_field) => Ok(LicenseShape {
            key_field,
            site_field,
        }),
        None => Err(format!(
            "POST /v1/licenses/validate takes {fields:?}; no key field recognised: skipped"
        )),
    })
}
