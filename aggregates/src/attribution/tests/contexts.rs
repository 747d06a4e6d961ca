use super::*;

#[test]
fn contexts_have_fixed_sources_and_mediums() {
    let cases = [
        (AttributionContext::Admin, "Admin", "Admin"),
        (AttributionContext::Api, "Admin API", "Integration"),
        (AttributionContext::Import, "Imported", "Member Importer"),
        (
            AttributionContext::Integration,
            "Integration",
            "Integration",
        ),
        (AttributionContext::Stripe, "Stripe", "Payment"),
    ];
    for (context, source, medium) in cases {
        assert_eq!(
            for_context(context),
            Attribution {
                referrer_source: Some(source.to_owned()),
                referrer_medium: Some(medium.to_owned()),
                ..Attribution::default()
            },
            "{context:?}"
        );
    }
    assert_eq!(
        serde_json::to_value(AttributionContext::Api).expect("serialises"),
        "api"
    );
}
