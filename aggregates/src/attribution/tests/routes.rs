use super::*;

#[test]
fn default_routes_resolve_paths() {
    let routes = RoutePatterns::default();
    let cases: &[(&str, ResourceType, Option<&str>)] = &[
        ("/", ResourceType::Url, None),
        ("", ResourceType::Url, None),
        ("/hello-world/", ResourceType::Post, Some("hello-world")),
        ("/hello-world", ResourceType::Post, Some("hello-world")),
        (
            "/hello-world/?ref=x#top",
            ResourceType::Post,
            Some("hello-world"),
        ),
        (
            "/hello-world?utm_source=x",
            ResourceType::Post,
            Some("hello-world"),
        ),
        ("/p/0af3b2/", ResourceType::Post, Some("0af3b2")),
        ("/tag/news/", ResourceType::Tag, Some("news")),
        ("/tag/news", ResourceType::Tag, Some("news")),
        ("/tag/news/?page=2", ResourceType::Tag, Some("news")),
        ("/author/ada/", ResourceType::Author, Some("ada")),
        ("/tag/news/page/2/", ResourceType::Url, None),
        ("/tag/news/rss/", ResourceType::Url, None),
        ("/blog/2024/post/", ResourceType::Url, None),
        ("/tag//", ResourceType::Url, None),
        ("/tag/news//", ResourceType::Url, None),
        ("//", ResourceType::Url, None),
        ("/?q=x", ResourceType::Url, None),
        ("#top", ResourceType::Url, None),
        // no static pages configured by default: a one-segment path is a post
        ("/about/", ResourceType::Post, Some("about")),
    ];
    for &(path, kind, slug) in cases {
        assert_eq!(
            routes.resolve(path),
            (kind, slug.map(str::to_owned)),
            "{path}"
        );
    }
}

#[test]
fn custom_routes_and_static_pages_resolve_paths() {
    let routes = RoutePatterns::new(
        "/topics/{slug}",
        "/people/{slug}/",
        &["/blog/{slug}/", "/{slug}/amp/"],
        &["about", "contact"],
    )
    .expect("valid patterns");
    let cases: &[(&str, ResourceType, Option<&str>)] = &[
        ("/about/", ResourceType::Page, Some("about")),
        ("/contact?x=1", ResourceType::Page, Some("contact")),
        ("/topics/rust/", ResourceType::Tag, Some("rust")),
        ("/topics/rust", ResourceType::Tag, Some("rust")),
        ("/people/ada/", ResourceType::Author, Some("ada")),
        ("/blog/hello/", ResourceType::Post, Some("hello")),
        ("/hello/amp/", ResourceType::Post, Some("hello")),
        ("/hello/", ResourceType::Url, None),
        ("/tag/rust/", ResourceType::Url, None),
        ("/about/team/", ResourceType::Url, None),
        ("/About/", ResourceType::Url, None),
        ("/", ResourceType::Url, None),
    ];
    for &(path, kind, slug) in cases {
        assert_eq!(
            routes.resolve(path),
            (kind, slug.map(str::to_owned)),
            "{path}"
        );
    }
}

#[test]
fn static_pages_win_over_the_one_segment_post_route() {
    let routes = RoutePatterns::new(
        RoutePatterns::DEFAULT_TAG,
        RoutePatterns::DEFAULT_AUTHOR,
        RoutePatterns::DEFAULT_POSTS,
        &["about"],
    )
    .expect("valid");
    assert_eq!(
        routes.resolve("/about/"),
        (ResourceType::Page, Some("about".to_owned()))
    );
    assert_eq!(
        routes.resolve("/welcome/"),
        (ResourceType::Post, Some("welcome".to_owned()))
    );
}

#[test]
fn invalid_patterns_are_rejected() {
    let cases: &[(&str, &str)] = &[
        ("tag/{slug}/", "must start with /"),
        ("/tag/", "must contain {slug}"),
        ("/{slug}/{slug}/", "must contain {slug} only once"),
        (
            "/tag-{slug}/",
            "may hold {slug} only as a whole segment, and no other placeholder",
        ),
        (
            "/{year}/{slug}/",
            "may hold {slug} only as a whole segment, and no other placeholder",
        ),
        ("/tag//{slug}/", "must not contain empty segments (//)"),
        (
            "/tag/{slug}/?x",
            "must not contain spaces, control characters, ? or #",
        ),
        (
            "/my tag/{slug}/",
            "must not contain spaces, control characters, ? or #",
        ),
    ];
    for &(pattern, reason) in cases {
        for attempt in [
            RoutePatterns::new(pattern, "/author/{slug}/", &["/{slug}/"], &[]),
            RoutePatterns::new("/tag/{slug}/", pattern, &["/{slug}/"], &[]),
            RoutePatterns::new(
                "/tag/{slug}/",
                "/author/{slug}/",
                &["/{slug}/", pattern],
                &[],
            ),
        ] {
            assert_eq!(
                attempt,
                Err(PatternError::new(pattern, reason)),
                "{pattern}"
            );
        }
    }
    for slug in ["", " ", "a/b", "a b", "a?b"] {
        let got = RoutePatterns::new("/tag/{slug}/", "/author/{slug}/", &[], &[slug]);
        assert!(got.is_err(), "{slug:?}");
    }
    let error = PatternError::new("/tag/", "must contain {slug}");
    assert_eq!(
        error.to_string(),
        "route pattern \"/tag/\" must contain {slug}"
    );
}
