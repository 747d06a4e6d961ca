//! Plain values (ids, text, times), who a session, subscription or invoice is about, and a
//! checkout's site field.

use super::*;

#[test]
fn id_of_reads_a_plain_id_and_an_expanded_object() {
    let mut subscription = fixture("subscription");
    assert_eq!(id_of(&subscription["customer"]), Some("cus_QXg1o8vcGmoR32"));
    subscription["customer"] = fixture("customer");
    assert_eq!(id_of(&subscription["customer"]), Some("cus_QXg1o8vcGmoR32"));
}

#[test]
fn id_of_is_none_for_null_empty_or_absent_ids() {
    let session = fixture("checkout.session");
    assert_eq!(id_of(&session["customer"]), None, "null in the example");
    assert_eq!(id_of(&json!("")), None);
    assert_eq!(id_of(&json!({ "id": "" })), None);
    assert_eq!(id_of(&session["no_such_field"]), None);
}

#[test]
fn text_is_a_non_empty_string_and_time_is_unix_seconds() {
    let invoice = fixture("invoice");
    assert_eq!(text(&invoice["currency"]), Some("usd"));
    assert_eq!(text(&invoice["customer_email"]), None, "null");
    assert_eq!(text(&json!("")), None);
    assert_eq!(text(&invoice["amount_due"]), None, "a number is no text");
    assert_eq!(time(&invoice["created"]), Some(at(1_234_567_890)));
    assert_eq!(time(&invoice["status_transitions"]["paid_at"]), None);
    assert_eq!(time(&invoice["no_such_field"]), None);
}

#[test]
fn session_contact_reads_the_example_session() {
    assert_eq!(
        session_contact(&fixture("checkout.session")),
        Contact {
            email: Some("example@example.com"),
            name: None,
            member_id: None,
        }
    );
}

#[test]
fn session_contact_prefers_the_entered_details_and_the_member_our_checkout_named() {
    let mut session = fixture("checkout.session");
    session["customer_details"]["name"] = json!("Ada Lovelace");
    session["customer_email"] = json!("created-with@example.com");
    session["metadata"] = json!({ key::MEMBER_ID: "m-1" });
    session["client_reference_id"] = json!("ref-1");
    assert_eq!(
        session_contact(&session),
        Contact {
            email: Some("example@example.com"),
            name: Some("Ada Lovelace"),
            member_id: Some("m-1"),
        }
    );
}

#[test]
fn session_contact_falls_back_to_the_session_email_and_the_client_reference() {
    let mut session = without(fixture("checkout.session"), "customer_details");
    session["customer_email"] = json!("created-with@example.com");
    session["client_reference_id"] = json!("ref-1");
    assert_eq!(
        session_contact(&session),
        Contact {
            email: Some("created-with@example.com"),
            name: None,
            member_id: Some("ref-1"),
        }
    );
    assert_eq!(session_contact(&json!({})), Contact::default());
}

#[test]
fn subscription_contact_is_the_member_in_the_metadata() {
    let mut subscription = fixture("subscription");
    assert_eq!(subscription_contact(&subscription), Contact::default());
    subscription["metadata"] = json!({ key::MEMBER_ID: "m-1" });
    assert_eq!(
        subscription_contact(&subscription),
        Contact {
            member_id: Some("m-1"),
            ..Contact::default()
        }
    );
    assert_eq!(
        subscription_contact(&without(subscription, "metadata")),
        Contact::default()
    );
}

#[test]
fn invoice_contact_is_the_invoiced_email_and_name() {
    let mut invoice = fixture("invoice");
    assert_eq!(
        invoice_contact(&invoice),
        Contact::default(),
        "null in the example"
    );
    invoice["customer_email"] = json!("ada@example.com");
    invoice["customer_name"] = json!("Ada Lovelace");
    assert_eq!(
        invoice_contact(&invoice),
        Contact {
            email: Some("ada@example.com"),
            name: Some("Ada Lovelace"),
            member_id: None,
        }
    );
    assert_eq!(invoice_contact(&json!({})), Contact::default());
}

fn text_field(key: &str, value: &str) -> Value {
    json!({
        "key": key,
        "label": { "custom": "Your site", "type": "custom" },
        "optional": false,
        "type": "text",
        "text": { "maximum_length": null, "minimum_length": null, "value": value },
    })
}

#[test]
fn custom_field_site_is_none_without_a_site_field() {
    let mut session = fixture("checkout.session");
    assert_eq!(
        custom_field_site(&session),
        None,
        "no custom fields in the example"
    );
    session["custom_fields"] = json!([text_field("company", "example.com")]);
    assert_eq!(custom_field_site(&session), None, "not a site key");
    assert_eq!(custom_field_site(&without(session, "custom_fields")), None);
}

#[test]
fn custom_field_site_reads_a_text_or_dropdown_field_of_any_site_key() {
    let mut session = fixture("checkout.session");
    session["custom_fields"] = json!([text_field("Website", "Example.COM")]);
    assert_eq!(custom_field_site(&session), Some(site("example.com")));
    session["custom_fields"] = json!([{
        "key": "domain",
        "label": { "custom": "Domain", "type": "custom" },
        "optional": false,
        "type": "dropdown",
        "dropdown": { "options": [{ "label": "Shop", "value": "shop.example.com" }], "value": "shop.example.com" },
    }]);
    assert_eq!(custom_field_site(&session), Some(site("shop.example.com")));
}

#[test]
fn custom_field_site_skips_an_invalid_site() {
    let mut session = fixture("checkout.session");
    session["custom_fields"] = json!([text_field("site", "not a domain")]);
    assert_eq!(custom_field_site(&session), None);
    session["custom_fields"] = json!([
        text_field("site", "not a domain"),
        text_field("domain", "example.org")
    ]);
    assert_eq!(custom_field_site(&session), Some(site("example.org")));
}

#[test]
fn is_paid_reads_a_sessions_payment_status_and_an_intents_status() {
    let mut session = fixture("checkout.session");
    assert!(!is_paid(&session), "unpaid in the example");
    session["payment_status"] = json!("paid");
    assert!(is_paid(&session));
    session["payment_status"] = json!("unpaid");
    session["status"] = json!("succeeded");
    assert!(!is_paid(&session), "a session's status is not its payment");
    assert!(!is_paid(&without(session, "payment_status")));

    let mut intent = fixture("payment_intent");
    assert!(!is_paid(&intent), "requires_payment_method in the example");
    intent["status"] = json!("succeeded");
    assert!(is_paid(&intent));
    assert!(!is_paid(&without(intent, "status")));
}
