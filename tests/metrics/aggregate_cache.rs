//! Subscriptions kept in memory between commands (`store::cache`): a kept state is used, and
//! trusted only when the command's append verifies it. Two buses on one database play two
//! server instances, each with its own cache; the metric tells which loads the cache served.

use std::num::NonZeroUsize;
use std::sync::Arc;

use aggregates::{Payment, Subscription, SubscriptionCommand};
use chrono::Utc;
use memberledger::eventlog::{LogPosition, Wakeups, EVENTS_APPENDED};
use memberledger::store::{Actor, Appender, CommandBus, EventMetadata};
use projections::{Mode, Projection};
use uuid::Uuid;

use crate::helpers::TestApp;

const CACHE: &str = "memberledger_aggregate_cache_total";
const RETRIES: &str = "memberledger_command_retries_total";

/// An instance's cached Subscription bus.
fn instance(app: &TestApp) -> Arc<CommandBus<Subscription>> {
    let inline: Arc<[Arc<dyn Projection>]> = projections::all()
        .into_iter()
        .map(Arc::<dyn Projection>::from)
        .filter(|p| p.mode() == Mode::Inline)
        .collect();
    CommandBus::new_cached(
        app.pool.clone(),
        Appender::new(app.pool.clone(), inline),
        Wakeups::new(app.pool.clone(), EVENTS_APPENDED),
        (),
        NonZeroUsize::new(16).expect("not zero"),
    )
}

struct Subject {
    id: String,
    member_id: Uuid,
}

impl Subject {
    fn new() -> Self {
        Self {
            id: format!("sub_cache_{}", Uuid::now_v7().simple()),
            member_id: Uuid::now_v7(),
        }
    }

    fn payment(&self, invoice_id: &str) -> SubscriptionCommand {
        SubscriptionCommand::RecordPayment {
            payment: Payment {
                invoice_id: invoice_id.to_owned(),
                member_id: self.member_id,
                customer_id: "cus_cache".to_owned(),
                amount_paid: 1_000,
                currency: "usd".to_owned(),
                billing_reason: Some("subscription_cycle".to_owned()),
                payment_intent_id: None,
                period_start: None,
                period_end: None,
                paid_at: Utc::now(),
            },
        }
    }

    async fn run(
        &self,
        bus: &CommandBus<Subscription>,
        command: SubscriptionCommand,
    ) -> Option<LogPosition> {
        bus.execute(
            &self.id,
            command,
            EventMetadata::for_request("cache-test", Actor::System),
        )
        .await
        .expect("the command succeeds")
    }

    /// The event types stored for the subscription, in order.
    async fn events(&self, app: &TestApp) -> Vec<(i64, String, String)> {
        sqlx::query_as(
            "SELECT sequence, event_type, coalesce(payload #>> '{PaymentRecorded,payment,invoice_id}', '')
             FROM events WHERE aggregate_type = 'Subscription' AND aggregate_id = $1
             ORDER BY sequence",
        )
        .bind(&self.id)
        .fetch_all(&app.pool)
        .await
        .expect("the subscription's events")
    }
}

fn cache(outcome: &str) -> [(&str, &str); 2] {
    [("aggregate", "Subscription"), ("outcome", outcome)]
}

#[tokio::test]
async fn a_kept_subscription_serves_the_next_command_and_a_stale_one_loses_its_append() {
    let _serial = crate::SERIAL.lock().await;
    let app = TestApp::spawn().await;
    let (one, two) = (instance(&app), instance(&app));
    let sub = Subject::new();
    let before = app.scrape().await;

    // Instance one: the first command reads the (empty) log, the second is served from memory.
    assert!(sub.run(&one, sub.payment("in_1")).await.is_some());
    assert!(sub.run(&one, sub.payment("in_2")).await.is_some());
    let after = app.scrape().await;
    assert_eq!(after.delta(&before, CACHE, &cache("miss")), 1.0);
    assert_eq!(after.delta(&before, CACHE, &cache("hit")), 1.0);

    // Instance two records in_3; instance one's kept state (as of in_2) does not know it, so
    // it appends in_3 again, at the sequence two took: the append is refused, and the command
    // runs again against the log, which has in_3 already: nothing more is appended.
    assert!(sub.run(&two, sub.payment("in_3")).await.is_some());
    let before = app.scrape().await;
    assert_eq!(sub.run(&one, sub.payment("in_3")).await, None);
    let after = app.scrape().await;
    assert_eq!(after.delta(&before, CACHE, &cache("hit")), 1.0);
    assert_eq!(after.delta(&before, CACHE, &cache("rerun")), 1.0);
    assert_eq!(
        after.delta(&before, RETRIES, &[("aggregate", "Subscription")]),
        0.0,
        "a stale kept state is not a conflict retry"
    );
    let invoices: Vec<String> = sub.events(&app).await.into_iter().map(|e| e.2).collect();
    assert_eq!(invoices, ["in_1", "in_2", "in_3"]);

    // The run against the log kept what it read: the next command is served from memory.
    let before = app.scrape().await;
    assert!(sub.run(&one, sub.payment("in_4")).await.is_some());
    let after = app.scrape().await;
    assert_eq!(after.delta(&before, CACHE, &cache("hit")), 1.0);
    assert_eq!(after.delta(&before, CACHE, &cache("rerun")), 0.0);
    assert_eq!(sub.events(&app).await.len(), 4);
}

#[tokio::test]
async fn a_kept_state_that_leads_to_no_append_is_checked_against_the_log() {
    let _serial = crate::SERIAL.lock().await;
    let app = TestApp::spawn().await;
    let (one, two) = (instance(&app), instance(&app));
    let sub = Subject::new();
    assert!(sub.run(&one, sub.payment("in_1")).await.is_some());

    // Instance two starts a site purchase; instance one's kept state does not know it, and
    // would complete nothing ("a no-op unless pending"). Nothing appended, nothing verified
    // it: the command runs again against the log, where the purchase is pending.
    let purchase_id = Uuid::now_v7();
    let start = SubscriptionCommand::StartSitePurchase {
        purchase_id,
        session_id: format!("cs_{}", purchase_id.simple()),
        member_id: sub.member_id,
        sites: vec!["cache.example.com".to_owned()],
        price_id: "price_site".to_owned(),
        amount: 500,
        currency: "usd".to_owned(),
        at: Utc::now(),
    };
    assert!(sub.run(&two, start).await.is_some());
    let before = app.scrape().await;
    let completed = sub
        .run(
            &one,
            SubscriptionCommand::CompletePurchase {
                purchase: purchase_id.to_string(),
                at: Utc::now(),
            },
        )
        .await;
    let after = app.scrape().await;
    assert!(completed.is_some(), "the purchase is completed");
    assert_eq!(after.delta(&before, CACHE, &cache("hit")), 1.0);
    assert_eq!(after.delta(&before, CACHE, &cache("rerun")), 1.0);
    let types: Vec<String> = sub.events(&app).await.into_iter().map(|e| e.1).collect();
    assert_eq!(
        types,
        [
            "PaymentRecorded",
            "SitePurchaseStarted",
            "SitePurchaseCompleted"
        ]
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM pending_sites WHERE subscription_id = $1")
            .bind(&sub.id)
            .fetch_one(&app.pool)
            .await
            .expect("the pending site");
    assert_eq!(status, "paid", "the inline read model saw the completion");
}

#[tokio::test]
async fn a_member_the_server_created_is_kept_and_an_erased_one_is_read_from_the_log() {
    let _serial = crate::SERIAL.lock().await;
    let app = TestApp::spawn().await;
    let member = |outcome| [("aggregate", "Member"), ("outcome", outcome)];
    let before = app.scrape().await;

    // The creation keeps the new member: the rename after it reads no events.
    let created = app.member("kept@example.com").await;
    let id = created["id"].as_str().expect("an id").to_owned();
    let resp = app
        .patch_member(&id, serde_json::json!({ "name": "Kept" }))
        .await;
    assert_eq!(resp.status(), 200);
    let after = app.scrape().await;
    assert_eq!(after.delta(&before, CACHE, &member("hit")), 1.0);
    assert_eq!(after.delta(&before, CACHE, &member("miss")), 0.0);

    // Erased (served from memory, and appending), the member is kept without personal data;
    // a command on it is refused, which no append verified: it runs again against the log,
    // which refuses it too.
    let path = format!("/v1/members/{id}");
    let resp = app.admin(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(resp.status(), 204, "{:?}", resp.text().await);
    let before = app.scrape().await;
    let resp = app
        .patch_member(&id, serde_json::json!({ "name": "Back" }))
        .await;
    assert_eq!(resp.status(), 404);
    let after = app.scrape().await;
    assert_eq!(after.delta(&before, CACHE, &member("hit")), 1.0);
    assert_eq!(after.delta(&before, CACHE, &member("rerun")), 1.0);
}
