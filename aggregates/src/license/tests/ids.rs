use super::*;

#[test]
fn license_ids_are_deterministic() {
    assert_eq!(License::id_for_site("si_1"), License::id_for_site("si_1"));
    assert_eq!(
        License::id_for_seat("si_1", 2),
        License::id_for_seat("si_1", 2)
    );
    assert_eq!(
        License::id_for_site("si_1").get_version(),
        Some(uuid::Version::Sha1)
    );
}

#[test]
fn license_ids_differ_for_different_causes() {
    let ids = [
        License::id_for_site("si_1"),
        License::id_for_site("si_2"),
        License::id_for_seat("si_1", 1),
        License::id_for_seat("si_1", 2),
        License::id_for_seat("si_2", 1),
        License::id_for_seat("si_11", 1),
        License::id_for_seat("si_1", 11),
    ];
    for (i, a) in ids.iter().enumerate() {
        for b in ids.iter().skip(i + 1) {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn the_id_namespace_never_changes() {
    assert_eq!(
        License::id_for_site("si_1"),
        Uuid::new_v5(&License::ID_NAMESPACE, b"site:si_1")
    );
    assert_eq!(
        License::ID_NAMESPACE.to_string(),
        "6d1c9a3e-52b4-4f0e-9c77-1e0b4a2d8f35"
    );
}

#[test]
fn purchase_ids_are_deterministic_per_seat_and_distinct_from_item_seats() {
    assert_eq!(
        License::id_for_purchase(purchase(), 1),
        License::id_for_purchase(purchase(), 1)
    );
    assert_ne!(
        License::id_for_purchase(purchase(), 1),
        License::id_for_purchase(purchase(), 2)
    );
    assert_ne!(
        License::id_for_purchase(purchase(), 1),
        License::id_for_seat(&purchase().to_string(), 1)
    );
}
