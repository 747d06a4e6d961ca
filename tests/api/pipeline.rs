//! The write pipeline: inline read models commit or roll back with their events, and an
//! asynchronous projection pays nothing for the events it does not handle.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, test_stripe_settings, TestApp};
use crate::stripe_support::Lifecycle;

async fn events_of(app: &TestApp, aggregate_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(aggregate_type)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_failing_inline_write_leaves_no_event_and_answers_a_problem() {
    let app = TestApp::spawn().await;
    app.member("before@example.com").await;
    // The inline `member_list` write fails for one address, as a full disk or a broken
    // constraint would.
    sqlx::query(
        "CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.email = 'doomed@example.com' THEN
                 RAISE EXCEPTION 'member_list is broken for this row';
             END IF;
             RETURN NEW;
         END $$",
    )
    .execute(&app.pool)
    .await
    .expect("function");
    sqlx::query(
        "CREATE TRIGGER refuse_doomed BEFORE INSERT OR UPDATE ON member_list
         FOR EACH ROW EXECUTE FUNCTION refuse_doomed()",
    )
    .execute(&app.pool)
    .await
    .expect("trigger");

    let resp = app
        .create_member(json!({ "email": "doomed@example.com", "name": "Doomed" }))
        .await;
    let problem = assert_problem(resp, 500).await;
    assert_eq!(problem["status"], 500, "{problem}");

    // Neither the event nor any inline row of the refused command was written.
    assert_eq!(events_of(&app, "Member").await, 1);
    let claimed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM member_emails WHERE email = 'doomed@example.com'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(claimed, 0, "the email lookup rolled back with the event");
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM members_created_events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(created, 1, "only the first member's attribution row");

    // The address is free: once the read model works again, the same request succeeds.
    sqlx::query("DROP TRIGGER refuse_doomed ON member_list")
        .execute(&app.pool)
        .await
        .expect("drop");
    let member = app.member("doomed@example.com").await;
    assert_eq!(member["email"], "doomed@example.com");
    assert_eq!(events_of(&app, "Member").await, 2);
}

#[tokio::test]
async fn a_refused_inline_write_leaves_no_event_and_answers_409() {
    let app = TestApp::spawn().await;
    app.member("taken@example.com").await;
    let resp = app
        .create_member(json!({ "email": "TAKEN@example.com" }))
        .await;
    let problem = assert_problem(resp, 409).await;
    assert_eq!(problem["type"], "/problems/email-taken", "{problem}");
    assert_eq!(events_of(&app, "Member").await, 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_projection_commits_nothing_for_events_it_does_not_handle() {
    let app = TestApp::spawn().await;
    app.settle().await;
    // Counts every write of a checkpoint: a runner commits a transaction only together with
    // its checkpoint (a batch, or the position moved past ignored events).
    sqlx::raw_sql(
        "CREATE TABLE checkpoint_writes (name text PRIMARY KEY, writes bigint NOT NULL);
         CREATE FUNCTION count_checkpoint_write() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO checkpoint_writes VALUES (NEW.name, 1)
             ON CONFLICT (name) DO UPDATE SET writes = checkpoint_writes.writes + 1;
             RETURN NEW;
         END $$;
         CREATE TRIGGER count_checkpoint_write AFTER UPDATE ON projection_checkpoints
         FOR EACH ROW EXECUTE FUNCTION count_checkpoint_write();",
    )
    .execute(&app.pool)
    .await
    .expect("instrumentation");

    let started = std::time::Instant::now();
    const MEMBERS: i64 = 40;
    for i in 0..MEMBERS {
        app.member(&format!("ignored{i}@example.com")).await;
    }
    // `member_timeline` handles member creations; `members_status_events` only status changes.
    eventually("the timeline has every creation", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM member_timeline")
            .fetch_one(&app.pool)
            .await
            .expect("count");
        rows == MEMBERS
    })
    .await;
    app.settle().await;
    let elapsed_secs = i64::try_from(started.elapsed().as_secs()).expect("seconds");

    let writes = |name: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT writes FROM checkpoint_writes WHERE name = $1")
                .bind(name)
                .fetch_optional(&pool)
                .await
                .expect("writes")
                .unwrap_or(0)
        }
    };
    let (applied, status_events_writes): (i64, i64) = (
        sqlx::query_scalar(
            "SELECT events_applied FROM projection_checkpoints WHERE name = 'members_status_events'",
        )
        .fetch_one(&app.pool)
        .await
        .expect("checkpoint"),
        writes("members_status_events").await,
    );
    assert_eq!(applied, 0, "it was given none of the creations");
    // Its position follows the log at most once a second, never once per append.
    assert!(
        status_events_writes <= elapsed_secs + 2,
        "{status_events_writes} checkpoint writes in {elapsed_secs} s for {MEMBERS} ignored events"
    );
    assert!(status_events_writes < MEMBERS / 4, "{status_events_writes}");
    // Inline read models have no runner: nothing writes their checkpoints.
    assert_eq!(writes("member_list").await, 0);
    // The timeline applied every creation exactly once.
    let timeline: i64 = sqlx::query_scalar(
        "SELECT events_applied FROM projection_checkpoints WHERE name = 'member_timeline'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("checkpoint");
    assert_eq!(timeline, MEMBERS);
}

#[tokio::test]
async fn a_creation_whose_new_id_is_taken_after_all_runs_against_the_stored_events() {
    use std::sync::Arc;

    use aggregates::cqrs_es::AggregateError;
    use aggregates::{EmailAddress, Labels, Member, MemberCommand, MemberError, MemberSource};
    use memberledger::eventlog::{Wakeups, EVENTS_APPENDED};
    use memberledger::store::{Actor, Appender, CommandBus, EventMetadata};
    use projections::{Mode, Projection};

    let app = TestApp::spawn().await;
    let inline: Arc<[Arc<dyn Projection>]> = projections::all()
        .into_iter()
        .map(Arc::<dyn Projection>::from)
        .filter(|p| p.mode() == Mode::Inline)
        .collect();
    let bus = CommandBus::<Member>::new(
        app.pool.clone(),
        Appender::new(app.pool.clone(), inline),
        Wakeups::new(app.pool.clone(), EVENTS_APPENDED),
        (),
    );
    let id = uuid::Uuid::now_v7();
    let create = |email: &str| MemberCommand::CreateMember {
        member_id: id,
        email: EmailAddress::parse(email).expect("email"),
        name: None,
        note: None,
        labels: Labels::default(),
        source: MemberSource::Admin,
        attribution: None,
        newsletters: Vec::new(),
        at: chrono::Utc::now(),
    };
    let metadata = || EventMetadata::for_request("test", Actor::Admin);
    bus.execute_new(&id.to_string(), create("first@example.com"), metadata())
        .await
        .expect("the first creation");

    // `execute_new` guesses that the id has no events; here it has. The append meets the
    // optimistic lock, and the command re-runs against the stored member, which refuses it.
    let err = bus
        .execute_new(&id.to_string(), create("second@example.com"), metadata())
        .await
        .expect_err("a member is created once");
    assert!(
        matches!(err, AggregateError::UserError(MemberError::AlreadyExists)),
        "{err:?}"
    );
    assert_eq!(events_of(&app, "Member").await, 1);
    let email: String = sqlx::query_scalar("SELECT email FROM member_list WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("the member's row");
    assert_eq!(email, "first@example.com");
    assert!(
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM member_emails WHERE email = 'second@example.com')"
        )
        .fetch_one(&app.pool)
        .await
        .expect("emails"),
        "the refused creation claimed no address"
    );
}

#[tokio::test]
async fn concurrent_creations_share_transactions_and_each_is_answered_as_if_alone() {
    let app = TestApp::spawn().await;
    const MEMBERS: usize = 40;
    let answers = futures::future::join_all((0..MEMBERS).map(|i| {
        let app = &app;
        async move {
            let email = format!("together{i}@example.com");
            let resp = app.create_member(json!({ "email": email })).await;
            assert_eq!(resp.status(), 201, "creating {email}");
            let body: serde_json::Value = resp.json().await.expect("json");
            (email, body["id"].as_str().expect("id").to_owned())
        }
    }))
    .await;

    // Each answer names the member it created, with its own address and its own request as
    // the event's cause.
    for (email, id) in &answers {
        let (stored, correlation): (String, String) = sqlx::query_as(
            "SELECT l.email, e.metadata->>'correlation_id'
             FROM member_list l JOIN events e ON e.aggregate_id = l.id::text
             WHERE l.id = $1::uuid AND e.aggregate_type = 'Member'",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("the member's row and event");
        assert_eq!(&stored, email);
        assert!(!correlation.is_empty());
    }
    let correlations: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT metadata->>'correlation_id') FROM events WHERE aggregate_type = 'Member'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(correlations, MEMBERS as i64, "one request id per creation");
    // Fewer transactions than creations: some shared one.
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT transaction_id) FROM events WHERE aggregate_type = 'Member'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert!(
        transactions < MEMBERS as i64,
        "{transactions} transactions for {MEMBERS} concurrent creations"
    );
}

/// Sends the events at once; each one's id, status and body.
async fn deliver_at_once(app: &TestApp, events: &[Value]) -> Vec<(String, u16, Value)> {
    futures::future::join_all(events.iter().map(|event| async move {
        let resp = app.send_webhook(event).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("json");
        (event["id"].as_str().expect("id").to_owned(), status, body)
    }))
    .await
}

async fn store_only() -> TestApp {
    let mut store_only = test_stripe_settings();
    store_only.workers = 0;
    TestApp::spawn_with(store_only).await
}

#[tokio::test]
async fn concurrent_webhooks_share_statements_and_each_gets_its_own_answer() {
    let app = store_only().await;
    // Thirty events, the first of them four more times.
    let mut events: Vec<Value> = (0..30)
        .map(|i| Lifecycle::new(&format!("intake{i}")).checkout_completed(1))
        .collect();
    events.extend(std::iter::repeat_n(events[0].clone(), 4));
    let first = events[0]["id"].as_str().expect("id");
    let mut copies = Vec::new();
    for (id, status, body) in deliver_at_once(&app, &events).await {
        assert_eq!(status, 200, "{body}");
        if id == first {
            copies.push(body["duplicate"].as_bool().expect("duplicate"));
        } else {
            assert_eq!(body["duplicate"], false, "{body}");
        }
    }
    copies.sort_unstable();
    assert_eq!(copies, [false, true, true, true, true], "one copy stored");
    let (stored, transactions): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT xmin::text) FROM stripe_events")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(stored, 30, "each event once");
    // Fewer transactions than events: some shared one.
    assert!(
        stored > transactions,
        "{transactions} transactions for {stored} events"
    );
}

#[tokio::test]
async fn an_event_the_database_refuses_among_concurrent_ones_is_refused_alone() {
    let app = store_only().await;
    // Twenty events and one PostgreSQL cannot store (a checkout with a NUL character, which
    // the index on a checkout's subscription cannot read out of its payload): wherever it
    // lands in a batch, only it gets the 503.
    let mut events: Vec<Value> = (0..20)
        .map(|i| Lifecycle::new(&format!("intakeok{i}")).checkout_completed(1))
        .collect();
    let mut unstorable = Lifecycle::new("intakenul").checkout_completed(1);
    unstorable["data"]["object"]["client_reference_id"] = json!("nul\u{0}here");
    events.insert(10, unstorable.clone());
    for (id, status, body) in deliver_at_once(&app, &events).await {
        if id == unstorable["id"].as_str().expect("id") {
            assert_eq!(status, 503, "{body}");
        } else {
            assert_eq!((status, &body["duplicate"]), (200, &json!(false)), "{body}");
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 20, "every other event, once");
}

#[tokio::test]
async fn a_refused_creation_among_concurrent_ones_refuses_only_itself() {
    let app = TestApp::spawn().await;
    app.member("taken@example.com").await;
    // Thirty new addresses, the taken one twice, and one new address three times.
    let mut emails: Vec<String> = (0..30).map(|i| format!("fresh{i}@example.com")).collect();
    emails.extend(["taken@example.com", "taken@example.com"].map(str::to_owned));
    emails.extend(["thrice@example.com"; 3].map(str::to_owned));
    let statuses = futures::future::join_all(emails.iter().map(|email| {
        let app = &app;
        async move {
            let resp = app.create_member(json!({ "email": email })).await;
            (email.clone(), resp.status().as_u16())
        }
    }))
    .await;

    for (email, status) in &statuses {
        if email.starts_with("fresh") {
            assert_eq!(*status, 201, "{email}");
        }
        if email == "taken@example.com" {
            assert_eq!(*status, 409, "{email}");
        }
    }
    let thrice: Vec<u16> = statuses
        .iter()
        .filter(|(email, _)| email == "thrice@example.com")
        .map(|(_, status)| *status)
        .collect();
    assert_eq!(
        thrice.iter().filter(|s| **s == 201).count(),
        1,
        "{thrice:?}"
    );
    assert_eq!(
        thrice.iter().filter(|s| **s == 409).count(),
        2,
        "{thrice:?}"
    );
    // One event and one row per member made; nothing of the refused ones.
    assert_eq!(events_of(&app, "Member").await, 32);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows, 32);
    let keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM personal_data_keys WHERE aggregate_type = 'Member'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(keys, 32, "no key left by a refused creation");
}

/// Members made one by one (their own transactions); their ids.
async fn members(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let member = app.member(&format!("{prefix}{i}@example.com")).await;
        ids.push(member["id"].as_str().expect("id").to_owned());
    }
    ids
}

#[tokio::test]
async fn concurrent_commands_on_existing_aggregates_share_transactions_and_each_is_answered_as_if_alone(
) {
    let app = TestApp::spawn().await;
    const MEMBERS: usize = 40;
    let ids = members(&app, "renamed", MEMBERS).await;
    let answers = futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
        let app = &app;
        async move {
            let resp = app
                .patch_member(id, json!({ "name": format!("Name {i}") }))
                .await;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("json");
            (i, id, status, body)
        }
    }))
    .await;

    // Each answer is its own member, renamed, and the read model shows it.
    for (i, id, status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["id"], **id, "{body}");
        assert_eq!(body["name"], format!("Name {i}"), "{body}");
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM member_list WHERE id = $1::uuid")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .expect("row");
        assert_eq!(name.as_deref(), Some(format!("Name {i}").as_str()));
    }
    let (updates, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT transaction_id) FROM events
         WHERE aggregate_type = 'Member' AND event_type = 'MemberUpdated'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(updates, MEMBERS as i64, "one event per command");
    assert!(
        transactions < MEMBERS as i64,
        "{transactions} transactions for {MEMBERS} concurrent commands: none shared"
    );
}

#[tokio::test]
async fn a_refused_command_among_concurrent_ones_refuses_only_itself() {
    let app = TestApp::spawn().await;
    app.member("holder@example.com").await;
    let ids = members(&app, "mover", 30).await;
    // Each moves to an address of its own, but for three that ask for the holder's.
    let answers = futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
        let app = &app;
        async move {
            let email = if i % 10 == 3 {
                "holder@example.com".to_owned()
            } else {
                format!("moved{i}@example.com")
            };
            let resp = app.patch_member(id, json!({ "email": email })).await;
            (id, email, resp.status().as_u16())
        }
    }))
    .await;

    for (id, email, status) in &answers {
        let stored: String =
            sqlx::query_scalar("SELECT email FROM member_list WHERE id = $1::uuid")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .expect("row");
        if email == "holder@example.com" {
            assert_eq!(*status, 409, "{id}");
            assert!(stored.starts_with("mover"), "{stored}");
        } else {
            assert_eq!(*status, 200, "{id} to {email}");
            assert_eq!(&stored, email);
        }
    }
    let changed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MemberEmailChanged'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(changed, 27, "no event of a refused command");
    let holders: Vec<String> = sqlx::query_scalar(
        "SELECT l.email FROM member_emails e JOIN member_list l ON l.id = e.member_id
         WHERE e.email = 'holder@example.com'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("rows");
    assert_eq!(holders, ["holder@example.com"]);
}

#[tokio::test]
async fn wake_ups_share_notifications_under_load_and_none_is_lost() {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use memberledger::eventlog::{Wakeups, NOTIFY_SPACING};

    let app = TestApp::spawn().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .expect("listener");
    listener.listen("test_wakeups").await.expect("listen");
    let wakeups = Wakeups::new(app.pool.clone(), "test_wakeups");
    const CHANGES: usize = 100;
    let started = std::time::Instant::now();
    for i in 0..CHANGES {
        wakeups.announce("Member", [format!("E{i}")]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();

    let mut seen = BTreeSet::new();
    let mut notifications = 0u128;
    while seen.len() < CHANGES {
        let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {CHANGES} changes announced", seen.len()))
            .expect("a notification");
        notifications += 1;
        let (group, types) = notification.payload().split_once(':').expect("group:types");
        assert_eq!(group, "Member");
        seen.extend(types.split(',').map(str::to_owned));
    }
    // Every change reached the other instances' listeners, in at most one notification per
    // spacing (and the last one after it), not one each.
    let bound = elapsed.as_millis() / NOTIFY_SPACING.as_millis() + 3;
    assert!(
        notifications <= bound,
        "{notifications} notifications for {CHANGES} changes in {elapsed:?}"
    );
    assert!(notifications < CHANGES as u128 / 2, "{notifications}");
}
