use serde_json::Value;

use crate::helpers::TestApp;

const COMMITTED: &str = include_str!("../../openapi/openapi.json");

#[tokio::test]
async fn served_spec_equals_the_committed_one() {
    let app = TestApp::spawn().await;
    let served: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let committed: Value = serde_json::from_str(COMMITTED).expect("openapi/openapi.json is JSON");
    assert!(
        served == committed,
        "openapi/openapi.json is out of date: run `cargo run -q -- openapi > openapi/openapi.json`"
    );
    let docs = app.client.get(app.url("/docs")).send().await.expect("sent");
    assert_eq!(docs.status(), 200);
}

#[test]
fn openapi_command_prints_the_committed_spec() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"))
        .arg("openapi")
        .output()
        .expect("ran memberledger openapi");
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let committed: Value = serde_json::from_str(COMMITTED).expect("JSON");
    assert!(
        printed == committed,
        "openapi/openapi.json differs from `memberledger openapi`"
    );
}

#[test]
fn every_operation_is_documented() {
    let spec: Value = serde_json::from_str(COMMITTED).expect("JSON");
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            assert!(op["tags"].is_array(), "{method} {path} has no tags");
            if op["security"].is_array() {
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path} does not document 401"
                );
            }
            if path.starts_with("/v1/") {
                assert!(
                    op["responses"]["503"].is_object(),
                    "{method} {path} does not document 503"
                );
            }
        }
    }
}

#[tokio::test]
async fn event_schemas_are_served_and_committed() {
    let committed: Value =
        serde_json::from_str(include_str!("../../docs/event-schemas.json")).expect("JSON");
    assert!(
        committed == aggregates::schema::event_schemas(),
        "docs/event-schemas.json is out of date: run `cargo run -q -- events schema > docs/event-schemas.json`"
    );
    let app = TestApp::spawn().await;
    let served: Value = app
        .get("/v1/events/schema")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(served, committed);
    assert_eq!(served["Member"]["MemberCreated"]["version"], "1.1");
}
