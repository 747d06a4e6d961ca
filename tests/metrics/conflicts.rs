//! Optimistic-lock conflicts, as the commands metric counts them: many concurrent changes of
//! one member through the HTTP API.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::TestApp;

const COMMANDS: &str = "memberledger_commands_total";
const RETRIES: &str = "memberledger_command_retries_total";

#[tokio::test]
async fn concurrent_commands_on_one_aggregate_count_their_conflicts_and_retries() {
    let _serial = crate::SERIAL.lock().await;
    let app = TestApp::spawn().await;
    let member = app.member("conflicts@example.com").await;
    let id = member["id"].as_str().expect("an id").to_owned();
    let before = app.scrape().await;

    // Forty renames at once: each loads the member, and all but one of those that loaded the
    // same version lose the append and are retried (three times at most).
    const RENAMES: usize = 40;
    let answers = futures::future::join_all((0..RENAMES).map(|i| {
        let (app, id) = (&app, &id);
        async move {
            let name = format!("Name {i}");
            let resp = app.patch_member(id, json!({ "name": name })).await;
            let status = resp.status().as_u16();
            let retry_after = resp.headers().contains_key("retry-after");
            let body: Value = resp.json().await.expect("a JSON body");
            (name, status, retry_after, body)
        }
    }))
    .await;
    let renamed: BTreeSet<&str> = answers
        .iter()
        .filter(|a| a.1 == 200)
        .map(|a| a.0.as_str())
        .collect();
    let refused = answers.iter().filter(|a| a.1 == 503).count();
    for (name, status, retry_after, body) in &answers {
        assert!(*status == 200 || *status == 503, "{name}: {status} {body}");
        if *status == 503 {
            assert!(retry_after, "a conflict says when to retry: {body}");
        }
    }
    assert_eq!(renamed.len() + refused, RENAMES);

    let after = app.scrape().await;
    let member_outcome = |outcome| [("aggregate", "Member"), ("outcome", outcome)];
    let retries = after.delta(&before, RETRIES, &[("aggregate", "Member")]);
    assert!(retries > 0.0, "concurrent renames were retried");
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    {
        assert_eq!(
            after.delta(&before, COMMANDS, &member_outcome("ok")),
            renamed.len() as f64
        );
        // A conflict that outlasted its retries is the `conflict` outcome and a 503.
        assert_eq!(
            after.delta(&before, COMMANDS, &member_outcome("conflict")),
            refused as f64
        );
    }

    // The final state: one event per accepted rename, none for the refused ones, and the
    // member named by the last of them.
    // Read as the server reads the log: names are stored sealed (crypto-shredding).
    let mut events: Vec<projections::StoredEvent> = sqlx::query_as(&format!(
        "SELECT {} FROM events e WHERE aggregate_type = 'Member' AND aggregate_id = $1 ORDER BY sequence",
        memberledger::eventlog::EVENT_COLUMNS
    ))
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .expect("the member's events");
    memberledger::store::personal::open_events(&app.pool, &mut events)
        .await
        .expect("opened");
    let names: Vec<Value> = events.iter().map(|e| (*e.payload).clone()).collect();
    assert_eq!(names.len(), 1 + renamed.len(), "{names:?}");
    let last = names.last().expect("an event").to_string();
    let final_name = renamed
        .iter()
        .find(|name| last.contains(&format!("\"{name}\"")))
        .unwrap_or_else(|| panic!("the last event is an accepted rename: {last}"));
    let shown: Value = app.get_member(&id).await.json().await.expect("json");
    assert_eq!(shown["name"], *final_name);
    app.stop().await;
}
