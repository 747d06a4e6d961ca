//! Signed license files, verified offline by the two examples in docs/examples (the Rust one
//! compiled in here as it is, the Python one run with python3 and `cryptography`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::checkout::app_with_stripe;
use crate::helpers::{assert_problem, TestApp};
use crate::license_purchases::subscribed;
use crate::stripe_support::FakeStripe;

#[path = "../../docs/examples/verify_license.rs"]
mod example;

async fn file_of(app: &TestApp, key: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/licenses/file"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("sent")
}

async fn public_keys(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(app.url("/v1/licenses/public-key"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

fn pairs(keys: &Value) -> Vec<(String, String)> {
    keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().expect("kid").to_owned(),
                k["public_key"].as_str().expect("key").to_owned(),
            )
        })
        .collect()
}

/// Runs docs/examples/verify_license.py: the facts when it accepts, the reason when not.
fn python_verifies(certificate: &str, keys: &Value) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("ml-license-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    std::fs::write(dir.join("license.lic"), certificate).expect("writing");
    std::fs::write(dir.join("keys.json"), keys.to_string()).expect("writing");
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/examples/verify_license.py"
        ))
        .arg(dir.join("license.lic"))
        .arg(dir.join("keys.json"))
        .output()
        .expect("python3 runs (with the `cryptography` package; .ci/run installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.stderr.is_empty(),
        "the Python example failed to run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(serde_json::from_str(&stdout).expect("the facts as JSON"))
    } else {
        Err(stdout)
    }
}

/// `certificate` with its payload changed by one byte and the envelope re-encoded, so only
/// the signature can tell.
fn with_payload_byte_changed(certificate: &str) -> String {
    let body: String = certificate
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut envelope: Value =
        serde_json::from_slice(&STANDARD.decode(body).expect("base64")).expect("json");
    let mut data = STANDARD
        .decode(envelope["data"].as_str().expect("data"))
        .expect("base64");
    let at = data
        .windows(8)
        .position(|w| w == b"\"active\"")
        .expect("an active license");
    data[at + 1] = b'A';
    envelope["data"] = json!(STANDARD.encode(data));
    format!(
        "-----BEGIN LICENSE FILE-----\n{}\n-----END LICENSE FILE-----\n",
        STANDARD.encode(envelope.to_string())
    )
}

#[tokio::test]
async fn a_license_file_verifies_offline_in_rust_and_python_and_fails_when_changed_or_after_rotation(
) {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let (l, token, _) = subscribed(&app, "file").await;
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    let license = &dashboard["licenses"][0];
    let key = license["key"].as_str().expect("key").to_owned();

    let resp = file_of(&app, &key.to_lowercase()).await;
    assert_eq!(resp.status(), 200);
    let file: Value = resp.json().await.expect("json");
    let certificate = file["certificate"]
        .as_str()
        .expect("certificate")
        .to_owned();
    assert!(certificate.starts_with("-----BEGIN LICENSE FILE-----\n"));
    let keys = public_keys(&app).await;
    assert_eq!(keys["active_kid"], file["kid"]);
    assert_eq!(keys["keys"][0]["algorithm"], "ed25519");

    // Both examples accept it and read the same facts.
    let now = chrono::Utc::now();
    let facts = example::verify(&certificate, &pairs(&keys), now).expect("the Rust example");
    assert_eq!(facts["key"], key.as_str());
    assert_eq!(facts["status"], "active");
    assert_eq!(facts["purchase_type"], "site");
    assert_eq!(facts["domains"], json!([l.site]));
    assert_eq!(facts["license_id"], license["id"]);
    let instant = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
    };
    assert_eq!(instant(&facts["expires_at"]), instant(&file["expires_at"]));
    assert_eq!(
        python_verifies(&certificate, &keys).expect("the Python example"),
        facts
    );
    // Stale after its 30 days.
    let later = now + chrono::Duration::days(31);
    assert!(example::verify(&certificate, &pairs(&keys), later)
        .expect_err("stale")
        .contains("expired"));

    // One byte of the payload changed: the signature no longer matches, in both.
    let forged = with_payload_byte_changed(&certificate);
    let why = example::verify(&forged, &pairs(&keys), now).expect_err("forged");
    assert!(why.contains("signature does not match"), "{why}");
    let why = python_verifies(&forged, &keys).expect_err("forged");
    assert!(why.contains("signature does not match"), "{why}");
    // One character of the file itself changed.
    let mut bytes = certificate.clone().into_bytes();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let garbled = String::from_utf8(bytes).expect("ascii");
    assert!(example::verify(&garbled, &pairs(&keys), now).is_err());
    assert!(python_verifies(&garbled, &keys).is_err());

    // Rotation: new files carry the new key id; the old file verifies only with the old key.
    let new_kid = memberledger::license_files::rotate(&app.pool)
        .await
        .expect("rotating");
    let rotated = public_keys(&app).await;
    assert_eq!(rotated["active_kid"], new_kid.as_str());
    assert_eq!(rotated["keys"].as_array().expect("keys").len(), 2);
    assert!(rotated["keys"][1]["retired_at"].is_string());
    let only_new = json!({ "active_kid": new_kid, "keys": [rotated["keys"][0].clone()] });
    let why = example::verify(&certificate, &pairs(&only_new), now).expect_err("rotated out");
    assert!(why.contains("does not have"), "{why}");
    assert!(python_verifies(&certificate, &only_new).is_err());
    assert!(example::verify(&certificate, &pairs(&rotated), now).is_ok());
    let renewed: Value = file_of(&app, &key).await.json().await.expect("json");
    assert_eq!(renewed["kid"], new_kid.as_str());
    let renewed = renewed["certificate"].as_str().expect("certificate");
    assert!(example::verify(renewed, &pairs(&only_new), now).is_ok());
    assert!(python_verifies(renewed, &only_new).is_ok());

    // A key nobody has: 404, as for a malformed one.
    assert_problem(file_of(&app, "KEY-AAAA-BBBB-CCCC").await, 404).await;
    assert_problem(file_of(&app, "nonsense").await, 404).await;
}
