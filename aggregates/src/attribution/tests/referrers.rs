use super::*;

fn with_utm(
    mut entry: UrlHistoryEntry,
    source: Option<&str>,
    medium: Option<&str>,
) -> UrlHistoryEntry {
    entry.utm_source = source.map(str::to_owned);
    entry.utm_medium = medium.map(str::to_owned);
    entry.utm_campaign = Some("spring".to_owned());
    entry
}

type Expected = (&'static str, Option<&'static str>, Option<&'static str>);

fn referrer_of(entries: Vec<UrlHistoryEntry>) -> (String, Option<String>, Option<String>) {
    let got = attribution_of(entries);
    (
        got.referrer_source.expect("always a source"),
        got.referrer_medium,
        got.referrer_url,
    )
}

fn check(cases: Vec<(Vec<UrlHistoryEntry>, Expected)>) {
    for (entries, (source, medium, url)) in cases {
        assert_eq!(
            referrer_of(entries.clone()),
            (
                source.to_owned(),
                medium.map(str::to_owned),
                url.map(str::to_owned)
            ),
            "{entries:?}"
        );
    }
}

#[test]
fn known_referring_sites_are_named() {
    let r = |url: &str| vec![with_referrer(visit("/post/", 1), url)];
    check(vec![
        (
            r("https://google.com/"),
            ("Google", Some("search"), Some("https://google.com/")),
        ),
        (
            r("https://www.google.co.uk/"),
            ("Google", Some("search"), Some("https://www.google.co.uk/")),
        ),
        (
            r("https://www.google.de/search?q=x"),
            (
                "Google",
                Some("search"),
                Some("https://www.google.de/search"),
            ),
        ),
        (
            r("https://WWW.GOOGLE.COM.AU"),
            ("Google", Some("search"), Some("https://www.google.com.au")),
        ),
        (
            r("https://mail.google.com/mail/u/0/"),
            (
                "Gmail",
                Some("email"),
                Some("https://mail.google.com/mail/u/0/"),
            ),
        ),
        (
            r("android-app://com.google.android.gm/"),
            (
                "Gmail",
                Some("email"),
                Some("android-app://com.google.android.gm/"),
            ),
        ),
        (
            r("https://www.bing.com/"),
            ("Bing", Some("search"), Some("https://www.bing.com/")),
        ),
        (
            r("https://duckduckgo.com/"),
            (
                "DuckDuckGo",
                Some("search"),
                Some("https://duckduckgo.com/"),
            ),
        ),
        (
            r("https://uk.search.yahoo.com/"),
            (
                "Yahoo",
                Some("search"),
                Some("https://uk.search.yahoo.com/"),
            ),
        ),
        (
            r("https://mail.yahoo.com/"),
            ("Yahoo Mail", Some("email"), Some("https://mail.yahoo.com/")),
        ),
        (
            r("https://yandex.ru/"),
            ("Yandex", Some("search"), Some("https://yandex.ru/")),
        ),
        (
            r("https://www.ecosia.org/"),
            ("Ecosia", Some("search"), Some("https://www.ecosia.org/")),
        ),
        (
            r("https://www.baidu.com/"),
            ("Baidu", Some("search"), Some("https://www.baidu.com/")),
        ),
        (
            r("https://t.co/abc"),
            ("Twitter", Some("social"), Some("https://t.co/abc")),
        ),
        (
            r("https://x.com/"),
            ("Twitter", Some("social"), Some("https://x.com/")),
        ),
        (
            r("https://mobile.twitter.com/"),
            (
                "Twitter",
                Some("social"),
                Some("https://mobile.twitter.com/"),
            ),
        ),
        (
            r("https://l.facebook.com/"),
            ("Facebook", Some("social"), Some("https://l.facebook.com/")),
        ),
        (
            r("https://m.facebook.com/"),
            ("Facebook", Some("social"), Some("https://m.facebook.com/")),
        ),
        (
            r("https://lnkd.in/x"),
            ("LinkedIn", Some("social"), Some("https://lnkd.in/x")),
        ),
        (
            r("https://old.reddit.com/r/rust/"),
            (
                "Reddit",
                Some("social"),
                Some("https://old.reddit.com/r/rust/"),
            ),
        ),
        (
            r("https://news.ycombinator.com/item?id=1"),
            (
                "Hacker News",
                Some("social"),
                Some("https://news.ycombinator.com/item"),
            ),
        ),
        (
            r("https://www.instagram.com/"),
            (
                "Instagram",
                Some("social"),
                Some("https://www.instagram.com/"),
            ),
        ),
        (
            r("https://m.youtube.com/"),
            ("YouTube", Some("social"), Some("https://m.youtube.com/")),
        ),
        (
            r("https://mastodon.social/@ada"),
            (
                "Mastodon",
                Some("social"),
                Some("https://mastodon.social/@ada"),
            ),
        ),
        (
            r("https://bsky.app/"),
            ("Bluesky", Some("social"), Some("https://bsky.app/")),
        ),
        (
            r("https://www.threads.net/"),
            ("Threads", Some("social"), Some("https://www.threads.net/")),
        ),
        (
            r("https://outlook.live.com/"),
            ("Outlook", Some("email"), Some("https://outlook.live.com/")),
        ),
    ]);
}

#[test]
fn lookalike_hosts_are_not_known_sources() {
    let r = |url: &str| vec![with_referrer(visit("/post/", 1), url)];
    check(vec![
        (
            r("https://google.evil.com/"),
            ("google.evil.com", None, Some("https://google.evil.com/")),
        ),
        (
            r("https://notgoogle.com/"),
            ("notgoogle.com", None, Some("https://notgoogle.com/")),
        ),
        (
            r("https://nott.co/"),
            ("nott.co", None, Some("https://nott.co/")),
        ),
        (
            r("https://twitter.com.evil.io/"),
            (
                "twitter.com.evil.io",
                None,
                Some("https://twitter.com.evil.io/"),
            ),
        ),
        (
            r("https://docs.google.com/"),
            ("docs.google.com", None, Some("https://docs.google.com/")),
        ),
    ]);
}

#[test]
fn unknown_referrers_are_named_by_host_and_urls_cleaned() {
    let r = |url: &str| vec![with_referrer(visit("/post/", 1), url)];
    check(vec![
        (
            r("https://www.someblog.org/a/b?utm=1#c"),
            ("someblog.org", None, Some("https://www.someblog.org/a/b")),
        ),
        (
            r("https://user:pw@Blog.Example.net:8443/x"),
            (
                "blog.example.net",
                None,
                Some("https://blog.example.net:8443/x"),
            ),
        ),
        (
            r("http://m.someblog.org"),
            ("m.someblog.org", None, Some("http://m.someblog.org")),
        ),
        (
            r("//someblog.org/x"),
            ("someblog.org", None, Some("someblog.org/x")),
        ),
        // not a URL: ignored
        (r("not a url"), ("Direct", None, None)),
        (r("javascript:alert(1)"), ("Direct", None, None)),
        (r("https://"), ("Direct", None, None)),
    ]);
}

#[test]
fn refs_and_utm_sources_are_named() {
    let entry = |source: Option<&str>, utm: Option<&str>, medium: Option<&str>| {
        let mut e = with_utm(visit("/post/", 1), utm, medium);
        e.referrer_source = source.map(str::to_owned);
        vec![e]
    };
    check(vec![
        // Ghost newsletter refs
        (
            entry(Some("weekly-newsletter"), None, None),
            ("weekly newsletter", Some("email"), None),
        ),
        (
            entry(Some("Newsletter"), None, None),
            ("Newsletter", Some("email"), None),
        ),
        (
            entry(None, Some("the-daily-newsletter"), None),
            ("the daily newsletter", Some("email"), None),
        ),
        // known names, aliases and domains, any case
        (
            entry(Some("twitter"), None, None),
            ("Twitter", Some("social"), None),
        ),
        (
            entry(Some("hacker-news"), None, None),
            ("Hacker News", Some("social"), None),
        ),
        (
            entry(Some("HN"), None, None),
            ("Hacker News", Some("social"), None),
        ),
        (
            entry(Some("news.ycombinator.com"), None, None),
            ("Hacker News", Some("social"), None),
        ),
        (
            entry(Some("www.linkedin.com"), None, None),
            ("LinkedIn", Some("social"), None),
        ),
        // Ghost sites tag their outbound links ?ref=<their domain>: a web referral
        (
            entry(Some("otherblog.ghost.io"), None, None),
            ("otherblog.ghost.io", None, None),
        ),
        // utm-only entries
        (
            entry(None, Some("google"), Some("cpc")),
            ("Google", Some("search"), None),
        ),
        (
            entry(None, Some("partner-site"), Some("affiliate")),
            ("partner-site", Some("affiliate"), None),
        ),
        (
            entry(None, Some("partner-site"), None),
            ("partner-site", None, None),
        ),
        // ref wins over utm_source
        (
            entry(Some("podcast"), Some("twitter"), Some("paid")),
            ("podcast", Some("paid"), None),
        ),
    ]);
}

#[test]
fn precedence_between_ref_referring_site_and_utm() {
    let mut unknown_ref_known_site = with_referrer(visit("/post/", 1), "https://www.google.com/");
    unknown_ref_known_site.referrer_source = Some("my-podcast".to_owned());
    let known_site_and_utm = with_utm(
        with_referrer(visit("/post/", 1), "https://t.co/x"),
        Some("spring-promo"),
        Some("banner"),
    );
    let unknown_site_and_utm = with_utm(
        with_referrer(visit("/post/", 1), "https://someblog.org/"),
        Some("spring-promo"),
        Some("banner"),
    );
    let unknown_site_and_medium_only = with_utm(
        with_referrer(visit("/post/", 1), "https://someblog.org/"),
        None,
        Some("cpc"),
    );
    let mut explicit_medium = with_ref(visit("/post/", 1), "partner");
    explicit_medium.referrer_medium = Some("affiliate".to_owned());
    explicit_medium.utm_medium = Some("ignored".to_owned());
    check(vec![
        (
            vec![unknown_ref_known_site],
            (
                "my-podcast",
                Some("search"),
                Some("https://www.google.com/"),
            ),
        ),
        (
            vec![known_site_and_utm],
            ("Twitter", Some("social"), Some("https://t.co/x")),
        ),
        (
            vec![unknown_site_and_utm],
            (
                "spring-promo",
                Some("banner"),
                Some("https://someblog.org/"),
            ),
        ),
        (
            vec![unknown_site_and_medium_only],
            ("someblog.org", Some("cpc"), Some("https://someblog.org/")),
        ),
        (vec![explicit_medium], ("partner", Some("affiliate"), None)),
    ]);
}

#[test]
fn internal_and_payment_referrers_are_skipped() {
    check(vec![
        // the newest entry's referrer is the site itself: an older external one counts
        (
            vec![
                with_referrer(visit("/landing/", 10), "https://www.google.com/"),
                with_referrer(visit("/post/", 1), "https://example.com/landing/"),
            ],
            ("Google", Some("search"), Some("https://www.google.com/")),
        ),
        (
            vec![
                with_referrer(visit("/landing/", 10), "https://t.co/x"),
                with_referrer(visit("/post/", 1), "https://WWW.Example.com:443/landing/"),
            ],
            ("Twitter", Some("social"), Some("https://t.co/x")),
        ),
        // returning from Stripe Checkout says nothing about where the member came from
        (
            vec![
                with_referrer(visit("/landing/", 10), "https://news.ycombinator.com/"),
                with_ref(
                    with_referrer(
                        visit("/welcome/", 1),
                        "https://checkout.stripe.com/c/pay/cs_123",
                    ),
                    "x",
                ),
            ],
            (
                "Hacker News",
                Some("social"),
                Some("https://news.ycombinator.com/"),
            ),
        ),
        (
            vec![
                with_referrer(visit("/landing/", 10), "https://bsky.app/"),
                with_referrer(
                    visit("/welcome/", 2),
                    "https://billing.stripe.com/p/session",
                ),
                with_referrer(visit("/welcome/", 1), "https://www.paypal.com/checkoutnow"),
            ],
            ("Bluesky", Some("social"), Some("https://bsky.app/")),
        ),
        // only internal or payment referrers: Direct
        (
            vec![
                with_referrer(visit("/a/", 10), "https://example.com/"),
                with_referrer(visit("/b/", 1), "https://checkout.stripe.com/"),
            ],
            ("Direct", None, None),
        ),
        // the site's own domain as a ref is internal too
        (
            vec![
                with_ref(visit("/a/", 10), "reddit"),
                with_ref(visit("/b/", 1), "www.example.com"),
            ],
            ("Reddit", Some("social"), None),
        ),
        // a ref on an entry with an internal referrer counts, without the internal URL
        (
            vec![with_ref(
                with_referrer(visit("/post/", 1), "https://example.com/"),
                "weekly-newsletter",
            )],
            ("weekly newsletter", Some("email"), None),
        ),
        // no referrer at all
        (
            vec![visit("/a/", 10), visit("/b/", 1)],
            ("Direct", None, None),
        ),
        // medium alone does not make a referrer
        (
            vec![UrlHistoryEntry {
                referrer_medium: Some("social".to_owned()),
                ..visit("/a/", 1)
            }],
            ("Direct", None, None),
        ),
    ]);
}

#[test]
fn without_a_site_host_nothing_is_internal() {
    let entries = history(vec![with_referrer(
        visit("/post/", 1),
        "https://example.com/x",
    )]);
    let got = attribute(&entries, &RoutePatterns::default(), None);
    assert_eq!(got.referrer_source.as_deref(), Some("example.com"));
    let got = attribute(
        &entries,
        &RoutePatterns::default(),
        Some("https://Example.com/blog/"),
    );
    assert_eq!(got.referrer_source.as_deref(), Some("Direct"));
}

#[test]
fn utm_fields_come_from_the_chosen_referrer_entry() {
    let got = attribution_of(vec![
        UrlHistoryEntry {
            utm_source: Some("newsletter-partner".to_owned()),
            utm_medium: Some("email".to_owned()),
            utm_campaign: Some("launch".to_owned()),
            utm_term: Some("rust".to_owned()),
            utm_content: Some("header-link".to_owned()),
            ..visit("/older-post/", 30)
        },
        visit("/tag/news/", 20),
        with_referrer(visit("/", 10), "https://example.com/"),
    ]);
    assert_eq!(
        got,
        Attribution {
            attribution_type: Some(ResourceType::Post),
            attribution_id: Some("older-post".to_owned()),
            attribution_url: Some("/older-post/".to_owned()),
            referrer_source: Some("newsletter-partner".to_owned()),
            referrer_medium: Some("email".to_owned()),
            referrer_url: None,
            utm_source: Some("newsletter-partner".to_owned()),
            utm_medium: Some("email".to_owned()),
            utm_campaign: Some("launch".to_owned()),
            utm_term: Some("rust".to_owned()),
            utm_content: Some("header-link".to_owned()),
        }
    );
    // Direct: no UTM fields
    let got = attribution_of(vec![UrlHistoryEntry {
        utm_campaign: Some("launch".to_owned()),
        ..visit("/post/", 1)
    }]);
    assert_eq!(got.referrer_source.as_deref(), Some("Direct"));
    assert_eq!(got.utm_campaign, None);
}

#[test]
fn attribution_serialises_with_snake_case_names_and_values() {
    let got = attribution_of(vec![with_referrer(
        visit("/tag/news/", 1),
        "https://t.co/x",
    )]);
    let json = serde_json::to_value(&got).expect("serialises");
    assert_eq!(json["attribution_type"], "tag");
    assert_eq!(json["attribution_id"], "news");
    assert_eq!(json["referrer_source"], "Twitter");
    assert_eq!(json["utm_source"], serde_json::Value::Null);
    let back: Attribution = serde_json::from_value(json).expect("deserialises");
    assert_eq!(back, got);
}
