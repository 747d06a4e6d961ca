//! Crash safety under load: while many customers' Stripe lifecycles are delivered shuffled,
//! duplicated and in parallel, the server is SIGKILLed and restarted, or PostgreSQL crashes
//! and comes back. Every delivery answered 200 is stored and processed once; what got no 200
//! is redelivered; the final state equals in-order delivery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use memberledger::localpg::LocalPostgres;

use crate::crash_support::{
    assert_same_state, assert_stored, customers, fake_stripe_for, final_state, in_order_state,
    redeliver_until_ok, settle, shuffled_deliveries, unique_events, Answer, Load, ServeProcess,
};
use crate::helpers::{free_port, fresh_database};

const CUSTOMERS: usize = 24;

#[tokio::test]
async fn a_sigkilled_server_loses_no_acknowledged_event_and_converges_after_restart() {
    let customers = customers("kill", CUSTOMERS);
    let stripe = fake_stripe_for(&customers).await;
    let database_url = fresh_database().await;
    let pool = memberledger::db::pool(&database_url, 2)
        .await
        .expect("connecting");
    let port = free_port();
    let log = format!("crash-kill-{}", uuid::Uuid::new_v4().simple());
    let mut server = ServeProcess::start(&database_url, port, &stripe, &log).await;

    let deliveries = shuffled_deliveries(&customers, 7);
    let mut load = Load::start(
        vec![server.base.clone()],
        deliveries.clone(),
        12,
        Arc::new(AtomicBool::new(false)),
    );
    // Killed a third of the way in: requests in flight are cut off, the inbox's claimed
    // events are left with their leases, its runners mid-batch.
    load.wait_for(deliveries.len() / 3).await;
    server.kill9();
    let server = ServeProcess::start(&database_url, port, &stripe, &log).await;
    let delivered = load.finish().await;

    for d in &delivered {
        assert!(
            matches!(d.answer, Answer::Ok | Answer::None),
            "{} got {:?} with the database up",
            d.event_id,
            d.answer
        );
    }
    assert!(
        delivered.iter().any(|d| d.answer == Answer::Ok),
        "some deliveries were acknowledged"
    );
    assert!(
        delivered.iter().any(|d| d.answer == Answer::None),
        "some deliveries were cut off by the kill"
    );
    assert_stored(&pool, &delivered).await;
    redeliver_until_ok(&server.base, &deliveries, &delivered).await;
    settle(&pool).await;

    let got = final_state(&pool, &customers).await;
    let reference = in_order_state(&customers, &stripe).await;
    assert_same_state(&customers, &got, &reference);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        stored,
        i64::try_from(unique_events(&deliveries).len()).expect("small"),
        "each event stored once"
    );
}

/// A cluster of this test's own (never the shared test cluster), durable (no `fast_unsafe`:
/// an immediate stop must not lose a commit).
async fn private_cluster(dir: &std::path::Path) -> LocalPostgres {
    LocalPostgres::start(dir)
        .await
        .expect("starting a private PostgreSQL")
}

#[tokio::test]
async fn a_postgres_crash_answers_503_meanwhile_and_the_server_recovers_without_restart() {
    let name = format!("crash-pg-{}", uuid::Uuid::new_v4().simple());
    let dir = crate::crash_support::scratch_dir().join(&name);
    let cluster = private_cluster(&dir).await;
    let database_url = cluster.url_for("memberledger");
    memberledger::db::create_database_if_missing(cluster.url(), "memberledger")
        .await
        .expect("creating the database");
    let pool = memberledger::db::pool(&database_url, 2)
        .await
        .expect("connecting");
    memberledger::db::migrate(&pool).await.expect("migrating");

    let customers = customers("pgcrash", CUSTOMERS);
    let stripe = fake_stripe_for(&customers).await;
    let mut server = ServeProcess::start_any(&database_url, &stripe, &name).await;

    let deliveries = shuffled_deliveries(&customers, 11);
    let outage = Arc::new(AtomicBool::new(false));
    let mut load = Load::start(
        vec![server.base.clone()],
        deliveries.clone(),
        12,
        outage.clone(),
    );
    let third = deliveries.len() / 3;
    load.wait_for(third).await;
    cluster.crash().await.expect("immediate stop");
    outage.store(true, Ordering::SeqCst);
    // Deliveries sent and answered while it is down (each waits for a connection first).
    load.wait_within_outage(12).await;
    outage.store(false, Ordering::SeqCst);
    let cluster = private_cluster(&dir).await;
    assert_eq!(
        cluster.url_for("memberledger"),
        database_url,
        "back on its port"
    );
    let delivered = load.finish().await;

    for d in &delivered {
        assert!(
            matches!(d.answer, Answer::Ok | Answer::Unavailable),
            "{} got {:?}: only 200, or 503 with Retry-After",
            d.event_id,
            d.answer
        );
        assert!(
            !d.within_outage || d.answer == Answer::Unavailable,
            "{} was answered {:?} while the database was down",
            d.event_id,
            d.answer
        );
    }
    let during = delivered.iter().filter(|d| d.within_outage).count();
    assert!(during > 0, "some deliveries were made during the outage");
    // The pool reconnects on its own: the pool of the test, after the crash too.
    let pool = memberledger::db::pool(&database_url, 2)
        .await
        .expect("reconnecting");
    assert_stored(&pool, &delivered).await;
    redeliver_until_ok(&server.base, &deliveries, &delivered).await;
    settle(&pool).await;
    assert!(server.is_running(), "the server kept running, no restart");

    let got = final_state(&pool, &customers).await;
    let reference = in_order_state(&customers, &stripe).await;
    assert_same_state(&customers, &got, &reference);
    drop(server);
    pool.close().await;
    cluster.stop().await.expect("stopping the private cluster");
    let _ = std::fs::remove_dir_all(&dir);
}
