//! `memberledger licenses issue|suspend|unsuspend|revoke|expiry|set-policy`: the admin API's
//! license management, run in-process against the database (the events are the same, with
//! `actor: admin` and a `cli:` request id). A running server's runners see them as any append.

use std::sync::Arc;

use uuid::Uuid;

use crate::api::dashboard::DashboardLicense;
use crate::api::license_admin::{GrantLicenseRequest, LicenseAdminApi};
use crate::api::license_holds::{Hold, LicenseHoldsApi};
use crate::api::problem::Problem;
use crate::api::state::{AppState, RequestId};
use crate::cli::LicensesCommand;
use crate::config::{DatabaseConfig, Settings};
use crate::db::{self, Database};
use crate::members::{self, NewMember};
use crate::store::{Actor, EventMetadata};

pub async fn run(command: LicensesCommand) -> anyhow::Result<()> {
    let request_id = RequestId(format!("cli:{}", Uuid::now_v7()));
    match command {
        LicensesCommand::Issue {
            database,
            email,
            name,
            policy,
            expires_at,
            note,
        } => {
            with_state(&database, |state| async move {
                let member_id = member(&state, &email, name.as_deref(), &request_id).await?;
                let admin = LicenseAdminApi { state };
                let request = GrantLicenseRequest {
                    member_id: Some(member_id),
                    email: None,
                    policy_id: policy,
                    expires_at,
                    note,
                };
                answered(admin.grant_license(&request_id, request).await)
            })
            .await
        }
        LicensesCommand::Suspend {
            database,
            id,
            reason,
        } => hold(&database, &request_id, id, Hold::Suspend, &reason).await,
        LicensesCommand::Unsuspend { database, id } => {
            hold(&database, &request_id, id, Hold::Unsuspend, "").await
        }
        LicensesCommand::Revoke {
            database,
            id,
            reason,
        } => hold(&database, &request_id, id, Hold::Revoke, &reason).await,
        LicensesCommand::Expiry {
            database, id, at, ..
        } => {
            with_state(&database, |state| async move {
                answered(
                    LicenseAdminApi { state }
                        .set_expiry(&request_id, id, at)
                        .await,
                )
            })
            .await
        }
        LicensesCommand::SetPolicy {
            database,
            id,
            policy,
            ..
        } => {
            with_state(&database, |state| async move {
                let admin = LicenseAdminApi { state };
                answered(admin.set_policy(&request_id, id, policy.as_deref()).await)
            })
            .await
        }
        LicensesCommand::PublicKey { .. } | LicensesCommand::RotateSigningKey { .. } => {
            unreachable!("handled by cli::run")
        }
    }
}

async fn hold(
    database: &DatabaseConfig,
    request_id: &RequestId,
    id: Uuid,
    hold: Hold,
    reason: &str,
) -> anyhow::Result<()> {
    with_state(database, |state| async move {
        answered(
            LicenseHoldsApi { state }
                .hold(request_id, id, hold, reason)
                .await,
        )
    })
    .await
}

/// Runs `work` with the server's state on a migrated database, then closes the pool.
async fn with_state<F, Fut>(database: &DatabaseConfig, work: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<AppState>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let db = Database::connect(database).await?;
    db::migrate(&db.pool).await?;
    let state = AppState::new(db.pool.clone(), &Settings::default());
    let result = work(state).await;
    db.close().await?;
    result
}

/// The member with `email`, created (as an admin would) when there is none.
async fn member(
    state: &AppState,
    email: &str,
    name: Option<&str>,
    request_id: &RequestId,
) -> anyhow::Result<Uuid> {
    let email = aggregates::EmailAddress::parse(email)
        .map_err(|e| anyhow::anyhow!("--email: {}", e.reason()))?;
    if let Some(id) = members::find_by_email(&state.pool, &email).await? {
        return Ok(id);
    }
    let name = name
        .map(aggregates::MemberName::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--name: {}", e.reason()))?
        .flatten();
    let new = NewMember {
        email,
        name,
        note: None,
        labels: aggregates::Labels::default(),
        source: aggregates::MemberSource::Admin,
        attribution: Some(aggregates::attribution::for_context(
            aggregates::attribution::AttributionContext::Admin,
        )),
        newsletters: Vec::new(),
    };
    let metadata = EventMetadata::for_request(&request_id.0, Actor::Admin);
    let (member_id, _) = members::create(&state.members, new, metadata).await?;
    eprintln!("created member {member_id}");
    Ok(member_id)
}

/// Prints the license as JSON, or fails with the problem's detail and field errors.
fn answered(result: Result<DashboardLicense, Problem>) -> anyhow::Result<()> {
    match result {
        Ok(license) => {
            let json = serde_json::json!({
                "id": license.id,
                "key": license.key,
                "status": license.status,
                "policy_id": license.policy_id,
                "expires_at": license.expires_at,
                "suspension_reason": license.suspension_reason,
                "revoked_at": license.revoked_at,
                "machines": license.machines,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
        Err(problem) => anyhow::bail!(problem.in_words()),
    }
}
