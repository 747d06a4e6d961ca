//! Several instances on one database: three `memberledger serve` processes share the webhook
//! load (each delivery to the next one in turn) and end in the state one instance reaches
//! with in-order delivery.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::crash_support::{
    assert_same_state, assert_stored, customers, fake_stripe_for, final_state, in_order_state,
    settle, shuffled_deliveries, Answer, Load, ServeProcess,
};
use crate::helpers::fresh_database;

#[tokio::test]
async fn three_instances_under_webhook_load_converge_on_the_one_instance_state() {
    let customers = customers("three", 24);
    let stripe = fake_stripe_for(&customers).await;
    let database_url = fresh_database().await;
    let pool = memberledger::db::pool(&database_url, 2)
        .await
        .expect("connecting");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut servers = Vec::new();
    for n in 0..3 {
        servers.push(
            ServeProcess::start_any(&database_url, &stripe, &format!("instances-{run}-{n}")).await,
        );
    }
    let bases = servers.iter().map(|s| s.base.clone()).collect();

    let deliveries = shuffled_deliveries(&customers, 3);
    let delivered = Load::start(bases, deliveries, 12, Arc::new(AtomicBool::new(false)))
        .finish()
        .await;
    for d in &delivered {
        assert_eq!(d.answer, Answer::Ok, "{}", d.event_id);
    }
    assert_stored(&pool, &delivered).await;
    settle(&pool).await;

    // None of them fell over on the others' locks or duplicates.
    for server in &mut servers {
        assert!(server.is_running());
    }
    let got = final_state(&pool, &customers).await;
    let reference = in_order_state(&customers, &stripe).await;
    assert_same_state(&customers, &got, &reference);
}
