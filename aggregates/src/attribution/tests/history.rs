use super::*;

fn errors(entries: Vec<UrlHistoryEntry>) -> Vec<(String, String)> {
    UrlHistory::parse(entries, now())
        .expect_err("invalid history")
        .into_iter()
        .map(|e| (e.field, e.reason))
        .collect()
}

fn paths(history: &UrlHistory) -> Vec<&str> {
    history.entries().iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn invalid_entries_are_reported_with_indexed_field_names() {
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    let cases: Vec<(UrlHistoryEntry, &str, &str)> = vec![
        (visit("", 1), "path", "is required"),
        (visit("   ", 1), "path", "is required"),
        (visit("post/", 1), "path", "must start with /"),
        (
            visit("https://example.com/post/", 1),
            "path",
            "must start with /",
        ),
        (
            visit("//evil.example/", 1),
            "path",
            "must be a path on this site, not start with // or /\\",
        ),
        (
            visit("/a b/", 1),
            "path",
            "must not contain spaces or control characters",
        ),
        (
            visit(&format!("/{}", "a".repeat(2048)), 1),
            "path",
            "must be at most 2048 characters",
        ),
        (
            UrlHistoryEntry {
                time: 0,
                ..visit("/", 1)
            },
            "time",
            "must be a positive whole number of milliseconds since the Unix epoch",
        ),
        (
            UrlHistoryEntry {
                time: -5,
                ..visit("/", 1)
            },
            "time",
            "must be a positive whole number of milliseconds since the Unix epoch",
        ),
        (
            UrlHistoryEntry {
                time: i64::MAX,
                ..visit("/", 1)
            },
            "time",
            "must be a positive whole number of milliseconds since the Unix epoch",
        ),
        (
            with_referrer(visit("/", 1), &long_url),
            "referrer_url",
            "must be at most 2048 characters",
        ),
        (
            with_ref(visit("/", 1), &"r".repeat(192)),
            "referrer_source",
            "must be at most 191 characters",
        ),
        (
            UrlHistoryEntry {
                referrer_medium: Some("m".repeat(192)),
                ..visit("/", 1)
            },
            "referrer_medium",
            "must be at most 191 characters",
        ),
        (
            UrlHistoryEntry {
                utm_campaign: Some("c".repeat(192)),
                ..visit("/", 1)
            },
            "utm_campaign",
            "must be at most 191 characters",
        ),
        (
            UrlHistoryEntry {
                utm_term: Some("a\u{0}b".to_owned()),
                ..visit("/", 1)
            },
            "utm_term",
            "must not contain control characters",
        ),
    ];
    for (entry, field, reason) in cases {
        let got = errors(vec![visit("/fine/", 2), entry.clone()]);
        assert_eq!(
            got,
            vec![(format!("url_history[1].{field}"), reason.to_owned())],
            "{entry:?}"
        );
    }
}

#[test]
fn all_errors_of_all_entries_are_collected() {
    let got = errors(vec![
        UrlHistoryEntry {
            path: "nope".to_owned(),
            time: -1,
            utm_source: Some("s".repeat(200)),
            ..UrlHistoryEntry::default()
        },
        visit("/ok/", 1),
        // An invalid entry too old to be kept is still reported.
        UrlHistoryEntry {
            utm_content: Some("c".repeat(200)),
            ..visit("", 60 * 48)
        },
    ]);
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "url_history[0].path",
            "url_history[0].time",
            "url_history[0].utm_source",
            "url_history[2].path",
            "url_history[2].utm_content",
        ]
    );
    let error = HistoryError {
        field: "url_history[0].path".to_owned(),
        reason: "must start with /".to_owned(),
    };
    assert_eq!(error.to_string(), "url_history[0].path must start with /");
}

#[test]
fn limits_are_inclusive_and_count_characters() {
    let entry = UrlHistoryEntry {
        path: format!("/{}", "é".repeat(2047)),
        referrer_url: Some(format!("https://x.io/{}", "é".repeat(2048 - 13))),
        referrer_source: Some("é".repeat(191)),
        utm_content: Some("é".repeat(191)),
        ..visit("/", 1)
    };
    assert_eq!(history(vec![entry]).entries().len(), 1);
    let max_time = UrlHistoryEntry {
        time: UrlHistoryEntry::MAX_TIME,
        ..visit("/", 1)
    };
    // valid, but far in the future: dropped
    assert!(history(vec![max_time]).is_empty());
}

#[test]
fn fields_are_trimmed_and_blank_ones_dropped() {
    let entry = UrlHistoryEntry {
        path: "  /post/ ".to_owned(),
        referrer_source: Some("  ".to_owned()),
        referrer_url: Some(" https://google.com/ ".to_owned()),
        utm_source: Some("".to_owned()),
        utm_medium: Some(" social ".to_owned()),
        ..visit("/", 1)
    };
    let history = history(vec![entry]);
    let got = &history.entries()[0];
    assert_eq!(got.path, "/post/");
    assert_eq!(got.referrer_source, None);
    assert_eq!(got.referrer_url.as_deref(), Some("https://google.com/"));
    assert_eq!(got.utm_source, None);
    assert_eq!(got.utm_medium.as_deref(), Some("social"));
}

#[test]
fn entries_outside_the_window_are_dropped() {
    let cases: &[(i64, bool)] = &[
        (0, true),
        (60, true),
        (24 * 60 - 1, true),
        (24 * 60, false), // exactly 24 h old
        (24 * 60 + 1, false),
        (60 * 24 * 365, false),
        (-5, true), // 5 minutes ahead: clock skew
        (-6, false),
    ];
    for &(minutes_ago, kept) in cases {
        let got = history(vec![visit("/a/", minutes_ago)]);
        assert_eq!(!got.is_empty(), kept, "{minutes_ago} minutes ago");
    }
    let mut just_inside = visit("/a/", 24 * 60);
    just_inside.time += 1;
    assert_eq!(history(vec![just_inside]).entries().len(), 1);
}

#[test]
fn entries_are_sorted_newest_first_whatever_the_input_order() {
    let got = history(vec![
        visit("/b/", 20),
        visit("/d/", 40),
        visit("/a/", 10),
        visit("/c/", 30),
    ]);
    assert_eq!(paths(&got), vec!["/a/", "/b/", "/c/", "/d/"]);
    // Equal times: the one appended later is the newer.
    let got = history(vec![visit("/first/", 5), visit("/second/", 5)]);
    assert_eq!(paths(&got), vec!["/second/", "/first/"]);
}

#[test]
fn at_most_the_15_newest_entries_are_kept() {
    let entries: Vec<UrlHistoryEntry> = (0..20)
        .rev()
        .map(|i| visit(&format!("/p{i}/"), i))
        .collect();
    let got = history(entries);
    let want: Vec<String> = (0..15).map(|i| format!("/p{i}/")).collect();
    assert_eq!(paths(&got), want);
    // Old entries do not take places of the 15.
    let mut entries: Vec<UrlHistoryEntry> = (0..10)
        .map(|i| visit(&format!("/old{i}/"), 2000 + i))
        .collect();
    entries.extend((0..15).map(|i| visit(&format!("/new{i}/"), i)));
    assert_eq!(history(entries).entries().len(), 15);
}

#[test]
fn entries_deserialise_from_snake_or_camel_case_and_missing_fields_are_reported() {
    let json = r#"[
        {"path": "/a/", "time": 1748779140000, "referrer_source": "ref", "utm_source": "u"},
        {"path": "/b/", "time": 1748779140000, "referrerSource": "ref", "referrerUrl": "https://t.co/x",
         "utmSource": "u", "utmMedium": "m", "utmCampaign": "c", "utmTerm": "t", "utmContent": "x",
         "id": null, "type": null},
        {"time": 1748779140000},
        {"path": "/c/"}
    ]"#;
    let entries: Vec<UrlHistoryEntry> = serde_json::from_str(json).expect("deserialises");
    assert_eq!(entries[0].referrer_source.as_deref(), Some("ref"));
    assert_eq!(entries[1].referrer_source.as_deref(), Some("ref"));
    assert_eq!(entries[1].referrer_url.as_deref(), Some("https://t.co/x"));
    assert_eq!(entries[1].utm_content.as_deref(), Some("x"));
    let got = UrlHistory::parse(entries, now()).expect_err("two incomplete entries");
    let fields: Vec<&str> = got.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, vec!["url_history[2].path", "url_history[3].time"]);
}
