use serde_json::{json, Value};

use crate::helpers::{assert_problem, problem_fields, TestApp};

/// A member detail without the parts only `GET /v1/members/{id}` has.
fn member_fields(mut detail: Value) -> Value {
    if let Some(object) = detail.as_object_mut() {
        for key in [
            "subscriptions",
            "license_count",
            "active_license_count",
            "attribution",
            "unsubscribe_url",
            "email_disabled",
            "complimentary",
        ] {
            object.remove(key);
        }
    }
    detail
}

#[tokio::test]
async fn created_member_is_returned_located_and_immediately_readable() {
    let app = TestApp::spawn().await;
    let resp = app
        .create_member(json!({
            "email": " Ada@Example.com ",
            "name": "Ada Lovelace",
            "note": "met at a conference",
            "labels": ["vip", "VIP", "beta"]
        }))
        .await;
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let created: Value = resp.json().await.expect("json");
    let id = created["id"].as_str().expect("id");
    assert_eq!(location, format!("/v1/members/{id}"));
    assert_eq!(created["email"], "Ada@Example.com");
    assert_eq!(created["name"], "Ada Lovelace");
    assert_eq!(created["labels"], json!(["vip", "beta"]));
    assert_eq!(created["status"], "free");
    assert_eq!(created["source"], "admin");

    // Read-your-writes: no waiting between the write and the reads.
    let fetched: Value = app.get(&location).await.json().await.expect("json");
    assert_eq!(member_fields(fetched.clone()), created);
    assert_eq!(fetched["subscriptions"], json!([]));
    assert_eq!(fetched["license_count"], 0);
    assert_eq!(
        fetched["attribution"]["referrer_source"], "Admin",
        "the fixed attribution of its context"
    );
    let page: Value = app.get("/v1/members").await.json().await.expect("json");
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    assert_eq!(page["items"][0]["id"], created["id"]);
    assert!(page["next_cursor"].is_null());

    let (source,): (String,) =
        sqlx::query_as("SELECT source FROM members_created_events WHERE member_id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .expect("members_created_events row");
    assert_eq!(source, "admin");
}

#[tokio::test]
async fn email_is_unique_ignoring_case() {
    let app = TestApp::spawn().await;
    app.member("grace@example.com").await;
    let problem = assert_problem(
        app.create_member(json!({"email": "GRACE@example.COM"}))
            .await,
        409,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["email"]);

    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MemberCreated'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(count, 1, "the refused member left no event");
}

#[tokio::test]
async fn concurrent_creates_with_one_email_make_one_member() {
    let app = TestApp::spawn().await;
    let attempts = (0..8).map(|i| {
        let email = if i % 2 == 0 {
            "race@example.com"
        } else {
            "RACE@example.com"
        };
        app.create_member(json!({ "email": email }))
    });
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn invalid_fields_are_reported_by_name() {
    let app = TestApp::spawn().await;
    let problem = assert_problem(
        app.create_member(json!({"email": "not-an-email", "labels": ["ok", "  "]}))
            .await,
        422,
    )
    .await;
    let mut fields = problem_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["email", "labels"], "{problem}");

    let long_name = "x".repeat(192);
    let problem = assert_problem(
        app.create_member(json!({"email": "a@example.com", "name": long_name}))
            .await,
        422,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["name"], "{problem}");

    let problem = assert_problem(app.create_member(json!({"name": "no email"})).await, 400).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("CreateMemberRequest"),
        "{problem}"
    );

    let page: Value = app.get("/v1/members").await.json().await.expect("json");
    assert_eq!(page["items"], json!([]), "nothing was half-written");
}

#[tokio::test]
async fn unknown_member_is_404_and_malformed_id_is_400() {
    let app = TestApp::spawn().await;
    let unknown = uuid::Uuid::now_v7();
    assert_problem(app.get_member(&unknown.to_string()).await, 404).await;
    assert_problem(
        app.patch_member(&unknown.to_string(), json!({"name": "x"}))
            .await,
        404,
    )
    .await;
    assert_problem(
        app.patch_member(&unknown.to_string(), json!({"email": "x@example.com"}))
            .await,
        404,
    )
    .await;
    assert_problem(app.get_member("not-a-uuid").await, 400).await;

    // The refused email change left no reservation behind.
    app.member("x@example.com").await;
}

#[tokio::test]
async fn patch_changes_given_fields_and_clears_with_null() {
    let app = TestApp::spawn().await;
    let member = app.member("linus@example.com").await;
    let id = member["id"].as_str().expect("id");

    let resp = app
        .patch_member(
            id,
            json!({"name": "Linus", "note": "kernel", "labels": ["a", "b"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.expect("json");
    assert_eq!(updated["name"], "Linus");
    assert_eq!(updated["note"], "kernel");
    assert_eq!(updated["labels"], json!(["a", "b"]));

    let updated: Value = app
        .patch_member(id, json!({"note": null}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(updated["name"], "Linus", "absent fields stay");
    assert!(updated["note"].is_null(), "null clears");
    let fetched: Value = app.get_member(id).await.json().await.expect("json");
    assert_eq!(member_fields(fetched), updated);

    let unchanged: Value = app
        .patch_member(id, json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(unchanged, updated);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(
        events, 3,
        "created, updated, updated; the empty patch wrote nothing"
    );
}

#[tokio::test]
async fn changing_email_frees_the_old_one_and_refuses_a_taken_one() {
    let app = TestApp::spawn().await;
    let first = app.member("old@example.com").await;
    let second = app.member("other@example.com").await;
    let id = first["id"].as_str().expect("id");

    let problem = assert_problem(
        app.patch_member(id, json!({"email": "OTHER@example.com"}))
            .await,
        409,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["email"]);

    let updated: Value = app
        .patch_member(id, json!({"email": "new@example.com"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(updated["email"], "new@example.com");
    // Only the case changes: still the same member's address.
    let updated: Value = app
        .patch_member(id, json!({"email": "NEW@example.com"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(updated["email"], "NEW@example.com");

    // The old address is free again; the new one is not.
    app.member("old@example.com").await;
    assert_problem(
        app.create_member(json!({"email": "new@EXAMPLE.com"})).await,
        409,
    )
    .await;
    assert_eq!(second["email"], "other@example.com");
}

#[tokio::test]
async fn list_pages_with_a_stable_cursor() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.member(&format!("page{i}@example.com")).await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/members?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path).await.json().await.expect("json");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|m| m["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/members?limit=2&cursor={cursor}"),
            None => break,
        }
        // A member created mid-way does not shift later pages.
        if seen.len() == 2 {
            app.member("late@example.com").await;
        }
    }
    created.reverse();
    assert_eq!(seen, created, "newest first, each exactly once");
}

#[tokio::test]
async fn list_filters_by_search_status_and_creation_time() {
    let app = TestApp::spawn().await;
    let before = chrono::Utc::now();
    let ada = app
        .create_member(json!({"email": "ada@example.com", "name": "Ada 100%"}))
        .await;
    assert_eq!(ada.status(), 201);
    app.member("bob@example.org").await;
    let between = chrono::Utc::now();
    app.member("carol@example.org").await;

    let emails = |page: Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["email"].as_str().expect("email").to_owned())
            .collect()
    };
    let app = &app;
    let q = |query: &str| {
        let path = format!("/v1/members?{query}");
        async move { app.get(&path).await }
    };
    assert_eq!(
        emails(q("search=EXAMPLE.ORG").await.json().await.expect("json")),
        ["carol@example.org", "bob@example.org"]
    );
    assert_eq!(
        emails(q("search=100%25").await.json().await.expect("json")),
        ["ada@example.com"]
    );
    assert_eq!(
        emails(q("search=_").await.json().await.expect("json")),
        Vec::<String>::new(),
        "_ is literal"
    );
    assert_eq!(
        emails(
            q("status=free&search=ada")
                .await
                .json()
                .await
                .expect("json")
        ),
        ["ada@example.com"]
    );
    assert_eq!(
        emails(q("status=paid").await.json().await.expect("json")),
        Vec::<String>::new()
    );
    let between = between
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    let before = before
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    assert_eq!(
        emails(
            q(&format!("created_after={between}"))
                .await
                .json()
                .await
                .expect("json")
        ),
        ["carol@example.org"]
    );
    assert_eq!(
        emails(
            q(&format!("created_after={before}&created_before={between}"))
                .await
                .json()
                .await
                .expect("json")
        ),
        ["bob@example.org", "ada@example.com"]
    );
}

#[tokio::test]
async fn the_search_ignores_case_beyond_ascii_too() {
    let app = TestApp::spawn().await;
    let jurgen = app
        .create_member(json!({"email": "JÜRGEN@example.net", "name": "Jürgen Müller"}))
        .await;
    assert_eq!(jurgen.status(), 201);
    app.member("ada@example.net").await;
    let search = |term: &str| {
        let path = format!("/v1/members?search={term}");
        let app = &app;
        async move {
            let page: Value = app.get(&path).await.json().await.expect("json");
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|m| m["email"].as_str().expect("email").to_owned())
                .collect::<Vec<_>>()
        }
    };
    // The cluster's C locale lowercases only ASCII: these found nobody before.
    for term in ["jürgen", "JÜRGEN", "müller", "MÜLLER", "ürgen@EXAMPLE"] {
        assert_eq!(search(term).await, ["JÜRGEN@example.net"], "{term}");
    }
    assert_eq!(search("über").await, Vec::<String>::new());
    assert_eq!(search("ADA").await, ["ada@example.net"], "ASCII, as before");
}

#[tokio::test]
async fn list_rejects_bad_parameters_with_problems() {
    let app = TestApp::spawn().await;
    for (query, status, field) in [
        ("limit=0", 422, "limit"),
        ("limit=101", 422, "limit"),
        ("limit=ten", 400, "limit"),
        ("status=gold", 400, "status"),
        ("created_after=yesterday", 400, "created_after"),
        ("cursor=garbage", 400, "cursor"),
    ] {
        let problem = assert_problem(app.get(&format!("/v1/members?{query}")).await, status).await;
        assert_eq!(problem_fields(&problem), [field], "{query}: {problem}");
    }
    let problem = assert_problem(
        app.get(
            "/v1/members?created_after=2026-01-02T00:00:00Z&created_before=2026-01-01T00:00:00Z",
        )
        .await,
        422,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["created_before"]);
}
