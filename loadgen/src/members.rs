//! `loadgen members` (scenario b): member creation, `POST /v1/members`.

use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::cli::MembersArgs;
use crate::database::{connect, db_cost, db_mark};
use crate::http::{check_loopback, http_client, timed};
use crate::measure::{drive, print_run, Limit, Run};
use crate::results::write_result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembersResult {
    pub runs: Vec<Run>,
    /// Events in the log after the runs.
    #[serde(default)]
    pub log_events: Option<i64>,
}

pub async fn members(args: MembersArgs) -> Result<()> {
    check_loopback(&args.server.url)?;
    let max = args.concurrency.iter().copied().max().unwrap_or(1);
    let client = http_client(max)?;
    let pool = connect(&args.db, 1).await?;
    let run_id = Uuid::now_v7().simple().to_string();
    let mut runs = Vec::new();
    for &concurrency in &args.concurrency {
        let mark = db_mark(&pool).await?;
        let client = client.clone();
        let url = format!("{}/v1/members", args.server.url);
        let token = args.server.admin_token.clone();
        let tag = format!("{}-c{concurrency}", &run_id[20..]);
        let mut run = drive(
            concurrency,
            Limit {
                duration: Some(Duration::from_secs(args.seconds)),
                units: None,
            },
            move |i| {
                let req = client.post(&url).bearer_auth(&token).json(&json!({
                    "email": format!("member-{tag}-{i}@bench.example.com"),
                    "name": format!("Bench Member {i}"),
                    "labels": ["bench"],
                }));
                async move { vec![timed(req, &[201]).await] }
            },
        )
        .await;
        run.db = Some(db_cost(&pool, &mark, run.ok).await?);
        print_run("POST /v1/members", &run);
        runs.push(run);
    }
    let log_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    write_result(
        &args.common,
        &args.name,
        &MembersResult {
            runs,
            log_events: Some(log_events),
        },
    )
}
