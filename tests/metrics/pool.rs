//! The pool metrics: tasks waiting for a connection, and how long acquisitions waited.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, fresh_database, test_settings, TestApp};

const WAITERS: &str = "memberledger_db_pool_waiters";
const ACQUIRED: &str = "memberledger_db_pool_acquire_seconds_count";
const WAITED: &str = "memberledger_db_pool_acquire_seconds_sum";

#[tokio::test]
async fn an_exhausted_pool_shows_its_waiters_and_their_acquisitions_in_the_scrape() {
    let _serial = crate::SERIAL.lock().await;
    let url = fresh_database().await;
    // A small API pool whose requests wait long for a connection, so the waits last until the
    // test releases the connections it holds.
    let pool = memberledger::db::pool_with(&url, 3, Duration::from_secs(60))
        .await
        .expect("connecting");
    let app = TestApp::spawn_with_pool(&url, pool.clone(), test_settings().await).await;
    let main = [("pool", "main")];
    let before = app.scrape().await;
    assert_eq!(
        before.get("memberledger_db_pool_max_connections", &main),
        3.0
    );
    assert!(
        before.get(
            "memberledger_db_pool_max_connections",
            &[("pool", "background")]
        ) > 0.0,
        "the background pool is reported: {before:?}"
    );
    assert!(before.has(WAITERS, &main));
    assert!(before.has(WAITERS, &[("pool", "background")]));
    app.member("pool-before@example.com").await;

    // The test takes every connection the server's pool has left (the server's own tasks
    // may hold some a moment: it takes what is idle or not opened yet until nothing is).
    let max = pool.options().get_max_connections();
    let mut held = Vec::new();
    let free = || pool.size() < max || pool.num_idle() > 0;
    loop {
        while free() {
            held.push(pool.acquire().await.expect("a connection"));
        }
        // One the server held a moment ago may come back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !free() {
            break;
        }
    }
    let started = app.scrape().await;
    // Commands and the mailer now wait: the mailer looks at its outbox every two seconds, in a
    // transaction; the members' commands append in one.
    let creates = futures::future::join_all((0..3).map(|i| {
        let app = &app;
        async move {
            app.create_member(json!({ "email": format!("pool-{i}@example.com") }))
                .await
                .status()
        }
    }));
    let waiting = async {
        let mut seen = app.scrape().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while seen.get(WAITERS, &main) < 1.0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = app.scrape().await;
        }
        // Let go: the waiting tasks get the connections.
        held.clear();
        seen
    };
    let (statuses, seen) = futures::future::join(creates, waiting).await;
    assert!(seen.get(WAITERS, &main) >= 1.0, "{seen:?}");
    assert_eq!(
        statuses,
        [201, 201, 201],
        "every request is served once the pool frees"
    );

    eventually("no waiter left", || async {
        app.scrape().await.get(WAITERS, &main) == 0.0
    })
    .await;
    let after = app.scrape().await;
    // At least the creations' append (the three may share one transaction: group commit) and
    // the mailer's wait, each recorded once it ended, and together they waited.
    assert!(
        after.delta(&started, ACQUIRED, &main) >= 2.0,
        "{}",
        after.delta(&started, ACQUIRED, &main)
    );
    assert!(after.delta(&started, WAITED, &main) > 0.0);
    assert!(
        after.get(ACQUIRED, &[("pool", "background")]) >= 1.0,
        "runners and inbox"
    );
    app.stop().await;
}
