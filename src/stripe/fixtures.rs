//! Stripe's own example objects (`../shared/stripe/fixtures3.json`, what Stripe's mock server
//! serves) for the readers' unit tests.

use std::sync::OnceLock;

use serde_json::Value;

fn fixtures() -> &'static Value {
    static FIXTURES: OnceLock<Value> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/stripe/fixtures3.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).expect("fixtures3.json is JSON")
    })
}

/// Stripe's example object of a resource (`subscription`, `invoice`, `checkout.session`, ...).
pub fn fixture(resource: &str) -> Value {
    let object = fixtures()["resources"][resource].clone();
    assert!(object.is_object(), "fixtures3.json has no {resource}");
    object
}
