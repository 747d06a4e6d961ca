//! The site's routes: which post, page, tag or author a visited path shows.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a visited path shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Post,
    Page,
    Tag,
    Author,
    Url,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Page => "page",
            Self::Tag => "tag",
            Self::Author => "author",
            Self::Url => "url",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a route pattern or a static page slug was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route pattern {pattern:?} {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl PatternError {
    pub(super) fn new(pattern: &str, reason: impl Into<String>) -> Self {
        Self {
            pattern: pattern.to_owned(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Slug,
}

/// A parsed pattern such as `/tag/{slug}/`: literal segments and one `{slug}` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<Segment>);

impl Pattern {
    const PLACEHOLDER: &'static str = "{slug}";

    fn parse(raw: &str) -> Result<Self, PatternError> {
        let err = |reason: &str| Err(PatternError::new(raw, reason));
        let Some(rest) = raw.strip_prefix('/') else {
            return err("must start with /");
        };
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return err("must not contain spaces, control characters, ? or #");
        }
        match raw.matches(Self::PLACEHOLDER).count() {
            0 => return err("must contain {slug}"),
            1 => {}
            _ => return err("must contain {slug} only once"),
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = Vec::new();
        for segment in rest.split('/') {
            if segment.is_empty() {
                return err("must not contain empty segments (//)");
            }
            if segment == Self::PLACEHOLDER {
                segments.push(Segment::Slug);
            } else if segment.contains(['{', '}']) {
                return err("may hold {slug} only as a whole segment, and no other placeholder");
            } else {
                segments.push(Segment::Literal(segment.to_owned()));
            }
        }
        Ok(Self(segments))
    }

    /// The slug when `segments` (of a path) match.
    fn slug<'p>(&self, segments: &[&'p str]) -> Option<&'p str> {
        if segments.len() != self.0.len() {
            return None;
        }
        let mut slug = None;
        for (pattern, segment) in self.0.iter().zip(segments) {
            match pattern {
                Segment::Literal(literal) if literal.as_str() == *segment => {}
                Segment::Slug if !segment.is_empty() => slug = Some(*segment),
                _ => return None,
            }
        }
        slug
    }
}

/// The site's routes, to tell which resource a visited path shows. Patterns are paths
/// with one `{slug}` segment, e.g. `/tag/{slug}/`; matching ignores the query string and
/// fragment and a trailing slash is optional. Checked in this order: static pages
/// (`/{slug}/` with a slug of `static_pages`), tag, author, then the post patterns in
/// order; a path that matches none (`/`, nested paths, ...) is a plain URL.
///
/// Defaults: tag `/tag/{slug}/`, author `/author/{slug}/`, posts `/p/{slug}/` and
/// `/{slug}/`, no static pages (the site knows them: pass them to [`RoutePatterns::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePatterns {
    tag: Pattern,
    author: Pattern,
    posts: Vec<Pattern>,
    static_pages: BTreeSet<String>,
}

impl RoutePatterns {
    pub const DEFAULT_TAG: &'static str = "/tag/{slug}/";
    pub const DEFAULT_AUTHOR: &'static str = "/author/{slug}/";
    pub const DEFAULT_POSTS: &'static [&'static str] = &["/p/{slug}/", "/{slug}/"];

    pub fn new(
        tag: &str,
        author: &str,
        post: &[&str],
        static_pages: &[&str],
    ) -> Result<Self, PatternError> {
        let static_pages = static_pages
            .iter()
            .map(|slug| {
                let trimmed = slug.trim();
                let valid = !trimmed.is_empty()
                    && !trimmed
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "/?#{}".contains(c));
                if valid {
                    Ok(trimmed.to_owned())
                } else {
                    Err(PatternError::new(
                        slug,
                        "is not a page slug (one path segment, no spaces)",
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tag: Pattern::parse(tag)?,
            author: Pattern::parse(author)?,
            posts: post
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<_, _>>()?,
            static_pages,
        })
    }

    /// The resource a visited path shows, with its slug (`None` for a plain URL).
    pub fn resolve(&self, path: &str) -> (ResourceType, Option<String>) {
        let path = strip_query(path.trim());
        let Some(rest) = path.strip_prefix('/') else {
            return (ResourceType::Url, None);
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return (ResourceType::Url, None);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        if let [slug] = segments.as_slice() {
            if self.static_pages.contains(*slug) {
                return (ResourceType::Page, Some((*slug).to_owned()));
            }
        }
        let candidates = [
            (&self.tag, ResourceType::Tag),
            (&self.author, ResourceType::Author),
        ]
        .into_iter()
        .chain(self.posts.iter().map(|p| (p, ResourceType::Post)));
        for (pattern, kind) in candidates {
            if let Some(slug) = pattern.slug(&segments) {
                return (kind, Some(slug.to_owned()));
            }
        }
        (ResourceType::Url, None)
    }
}

impl Default for RoutePatterns {
    fn default() -> Self {
        let pattern = |raw: &str| match Pattern::parse(raw) {
            Ok(pattern) => pattern,
            Err(e) => unreachable!("default route pattern is valid: {e}"),
        };
        Self {
            tag: pattern(Self::DEFAULT_TAG),
            author: pattern(Self::DEFAULT_AUTHOR),
            posts: Self::DEFAULT_POSTS.iter().map(|p| pattern(p)).collect(),
            static_pages: BTreeSet::new(),
        }
    }
}

/// `path` without its query string and fragment.
pub(super) fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}
