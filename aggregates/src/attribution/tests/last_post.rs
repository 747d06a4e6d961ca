use super::*;

#[test]
fn the_newest_post_wins_else_the_newest_entry() {
    type Case = (
        Vec<UrlHistoryEntry>,
        Option<ResourceType>,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![visit("/older-post/", 10), visit("/tag/news/", 5)],
            Some(ResourceType::Post),
            Some("older-post"),
            Some("/older-post/"),
        ),
        (
            vec![
                visit("/first-post/", 30),
                visit("/second-post/?ref=x", 20),
                visit("/tag/news/", 10),
                visit("/", 1),
            ],
            Some(ResourceType::Post),
            Some("second-post"),
            Some("/second-post/"),
        ),
        (
            vec![visit("/about/", 10), visit("/tag/a/b/", 5)],
            Some(ResourceType::Url),
            None,
            Some("/tag/a/b/"),
        ),
        (
            vec![visit("/tag/a/b/", 10), visit("/about/", 5)],
            Some(ResourceType::Page),
            Some("about"),
            Some("/about/"),
        ),
        (
            vec![visit("/author/ada/", 10), visit("/tag/news/", 5)],
            Some(ResourceType::Tag),
            Some("news"),
            Some("/tag/news/"),
        ),
        (
            vec![visit("/?token=secret#x", 1)],
            Some(ResourceType::Url),
            None,
            Some("/"),
        ),
        (
            // entries older than 24 h do not count
            vec![visit("/old-post/", 60 * 25), visit("/tag/news/", 5)],
            Some(ResourceType::Tag),
            Some("news"),
            Some("/tag/news/"),
        ),
        (vec![], None, None, None),
    ];
    for (entries, kind, id, url) in cases {
        let got = attribution_of(entries.clone());
        assert_eq!(
            (
                got.attribution_type,
                got.attribution_id.as_deref(),
                got.attribution_url.as_deref()
            ),
            (kind, id, url),
            "{entries:?}"
        );
    }
}

#[test]
fn no_history_is_direct_with_nothing_else() {
    let got = attribute(&UrlHistory::default(), &RoutePatterns::default(), None);
    assert_eq!(
        got,
        Attribution {
            referrer_source: Some("Direct".to_owned()),
            ..Attribution::default()
        }
    );
}
