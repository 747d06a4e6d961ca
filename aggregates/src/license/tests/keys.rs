use super::*;

#[test]
fn a_well_formed_key_parses() {
    assert_eq!(key("KEY-ABCD-EFGH-JK23").as_str(), "KEY-ABCD-EFGH-JK23");
    assert_eq!(key("KEY-2345-6789-ZZZZ").to_string(), "KEY-2345-6789-ZZZZ");
}

#[test]
fn a_lower_case_key_is_normalised_to_upper_case() {
    assert_eq!(key("key-abcd-efgh-jk23").as_str(), "KEY-ABCD-EFGH-JK23");
    assert_eq!(key("Key-aBcD-EFGH-jk23").as_str(), "KEY-ABCD-EFGH-JK23");
}

#[test]
fn a_key_with_a_wrong_prefix_is_rejected() {
    for raw in ["LIC-ABCD-EFGH-JK23", "KEYABCD-EFGH-JK23X", "ABCD-EFGH-JK23"] {
        assert_eq!(
            LicenseKey::parse(raw),
            Err(LicenseKeyError::WrongShape),
            "{raw}"
        );
    }
}

#[test]
fn a_key_of_the_wrong_length_or_grouping_is_rejected() {
    for raw in [
        "",
        "KEY-",
        "KEY-ABCD-EFGH-JK2",
        "KEY-ABCD-EFGH-JK234",
        "KEY-ABCD-EFGH-JK23-ABCD",
        "KEY-ABCDE-FGH-JK23",
        "KEY-ABCD-EFGHJ-K23",
        "KEY-ABCD-EFGH-JK23 ",
        " KEY-ABCD-EFGH-JK23",
    ] {
        assert_eq!(
            LicenseKey::parse(raw),
            Err(LicenseKeyError::WrongShape),
            "{raw:?}"
        );
    }
}

#[test]
fn look_alike_characters_are_rejected() {
    for (raw, c) in [
        ("KEY-0BCD-EFGH-JK23", '0'),
        ("KEY-OBCD-EFGH-JK23", 'O'),
        ("KEY-ABCD-1FGH-JK23", '1'),
        ("KEY-ABCD-EFGH-JKI3", 'I'),
        ("KEY-ABCD-EFGH-oK23", 'O'),
        ("KEY-AB_D-EFGH-JK23", '_'),
    ] {
        assert_eq!(
            LicenseKey::parse(raw),
            Err(LicenseKeyError::InvalidCharacter(c)),
            "{raw}"
        );
    }
}

#[test]
fn non_ascii_input_is_rejected_without_panicking() {
    assert!(LicenseKey::parse("KEY-ÄBCD-EFGH-JK2").is_err());
    assert!(LicenseKey::parse("KEY-ÄBC-EFGH-JK23").is_err());
}

#[test]
fn keys_round_trip_through_serde() {
    let json = serde_json::to_string(&key("key-abcd-efgh-jk23")).expect("serialises");
    assert_eq!(json, "\"KEY-ABCD-EFGH-JK23\"");
    let back: LicenseKey = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back, key("KEY-ABCD-EFGH-JK23"));
    assert!(serde_json::from_str::<LicenseKey>("\"KEY-0000-0000-0000\"").is_err());
}

#[test]
fn a_key_from_random_bytes_always_parses() {
    for start in 0..=255u8 {
        let mut bytes = [0u8; 12];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = start
                .wrapping_mul(31)
                .wrapping_add((i as u8).wrapping_mul(97));
        }
        let generated = LicenseKey::from_random_bytes(bytes);
        assert_eq!(LicenseKey::parse(generated.as_str()), Ok(generated.clone()));
    }
}

#[test]
fn random_bytes_map_onto_the_alphabet_modulo_32() {
    let bytes = [0, 1, 2, 3, 31, 32, 33, 255, 8, 9, 10, 11];
    assert_eq!(
        LicenseKey::from_random_bytes(bytes).as_str(),
        "KEY-ABCD-9AB9-JKLM"
    );
}
