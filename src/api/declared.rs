//! Request property types that declare in the spec a rule the server enforces itself.
//!
//! The handlers validate these fields with the domain's parsers (`EmailAddress`, `MemberName`,
//! `Labels`, `SiteDomain`, the URL history), which report every bad field at once under its
//! full path (`url_history[2].path`). A poem-openapi `validator` would refuse the body at the
//! first broken rule and name only the innermost property, so these types put the rule in the
//! schema only: their JSON parses as a plain string or integer. Each pattern accepts whatever
//! the parser accepts, and uses only syntax that Rust's `regex`, ECMA-262 and Python agree on.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

const EMAIL: &str = r"^\s*[^\s@]{1,64}@[^\s@.]{1,63}(\.[^\s@.]{1,63})+\s*$";
/// Text as `bounded_text` in `aggregates/src/values.rs` takes it: trimmed, then no control
/// characters but tab and newline.
const TEXT: &str = r"^\s*([^\x00-\x08\x0b-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?\s*$";
/// As [`TEXT`], not blank.
const LABEL: &str = r"^\s*[^\x00-\x08\x0b-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f]\s*$";
const PATH: &str = r"^\s*/([^\s\x00-\x1f\x7f-\x9f/\\][^\s\x00-\x1f\x7f-\x9f]*)?\s*$";
const SITE: &str = concat!(
    r"^\s*([Hh][Tt][Tt][Pp][Ss]?://)?",
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+",
    r"\.*(:[0-9]+)?([/?#][\s\S]*)?\s*$"
);

/// A schema with `ty`, `format` and, for strings, `pattern`; `minimum`/`maximum` for integers.
struct Declared {
    ty: &'static str,
    format: Option<&'static str>,
    pattern: Option<&'static str>,
    max_length: Option<usize>,
    range: Option<(f64, f64)>,
}

impl Declared {
    fn schema(self) -> MetaSchemaRef {
        let mut meta = MetaSchema::new(self.ty);
        meta.format = self.format;
        meta.pattern = self.pattern.map(str::to_owned);
        meta.max_length = self.max_length;
        if let Some((min, max)) = self.range {
            meta.minimum = Some(min);
            meta.maximum = Some(max);
        }
        MetaSchemaRef::Inline(Box::new(meta))
    }
}

/// A `String` newtype whose schema is `$declared`; it parses like `String`.
macro_rules! declared_string {
    ($(#[$doc:meta])* $name:ident, $type_name:literal, $declared:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = String;
            type RawElementValueType = String;

            fn name() -> Cow<'static, str> {
                $type_name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                $declared.schema()
            }

            fn as_raw_value(&self) -> Option<&String> {
                Some(&self.0)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
                Box::new(std::iter::once(&self.0))
            }

            fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl ParseFromJSON for $name {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                String::parse_from_json(value)
                    .map(Self)
                    .map_err(ParseError::propagate)
            }
        }

        impl ToJSON for $name {
            fn to_json(&self) -> Option<Value> {
                self.0.to_json()
            }
        }
    };
}

declared_string!(
    /// An email address as `EmailAddress::parse` accepts it: one `@`, at most 64 characters
    /// before it, a domain of at least two dot-separated labels, no spaces inside.
    EmailString,
    "string_email",
    Declared {
        ty: "string",
        format: Some("email"),
        pattern: Some(EMAIL),
        max_length: None,
        range: None,
    }
);

declared_string!(
    /// A name or note as `MemberName`/`Note` accept it.
    TextString,
    "string_text",
    Declared {
        ty: "string",
        format: None,
        pattern: Some(TEXT),
        max_length: None,
        range: None,
    }
);

declared_string!(
    /// A label as `Labels::parse` accepts it: not blank, at most 191 characters.
    LabelString,
    "string_label",
    Declared {
        ty: "string",
        format: None,
        pattern: Some(LABEL),
        max_length: Some(aggregates::Labels::MAX_LEN),
        range: None,
    }
);

declared_string!(
    /// A path of the site as the URL history takes it: starts with one `/`, no spaces.
    PathString,
    "string_path",
    Declared {
        ty: "string",
        format: None,
        pattern: Some(PATH),
        max_length: None,
        range: None,
    }
);

declared_string!(
    /// A site as `SiteDomain::parse` accepts it: a domain name of ASCII labels, optionally
    /// with `http(s)://`, a port and a path, which are dropped.
    SiteString,
    "string_site",
    Declared {
        ty: "string",
        format: None,
        pattern: Some(SITE),
        max_length: None,
        range: None,
    }
);

/// When a page was seen, in milliseconds since the Unix epoch: positive, at most
/// `Number.MAX_SAFE_INTEGER`, as the URL history checks it. Parses like `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochMillis(pub i64);

impl Type for EpochMillis {
    const IS_REQUIRED: bool = true;
    type RawValueType = i64;
    type RawElementValueType = i64;

    fn name() -> Cow<'static, str> {
        "integer_epoch_millis".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        Declared {
            ty: "integer",
            format: Some("int64"),
            pattern: None,
            max_length: None,
            range: Some((
                1.0,
                aggregates::attribution::UrlHistoryEntry::MAX_TIME as f64,
            )),
        }
        .schema()
    }

    fn as_raw_value(&self) -> Option<&i64> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a i64> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for EpochMillis {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        i64::parse_from_json(value)
            .map(Self)
            .map_err(ParseError::propagate)
    }
}

impl ToJSON for EpochMillis {
    fn to_json(&self) -> Option<Value> {
        self.0.to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::attribution::{UrlHistory, UrlHistoryEntry};
    use aggregates::{EmailAddress, Labels, MemberName, SiteDomain};

    /// Each pattern compiles in Rust's engine and agrees with the parser on every case.
    fn agrees(pattern: &str, accepts: impl Fn(&str) -> bool, cases: &[&str]) {
        let re = regex::Regex::new(pattern).expect("pattern compiles");
        for case in cases {
            assert_eq!(re.is_match(case), accepts(case), "{pattern} on {case:?}");
        }
    }

    #[test]
    fn patterns_accept_what_the_parsers_accept() {
        agrees(
            EMAIL,
            |s| EmailAddress::parse(s).is_ok(),
            &[
                " Ada.Lovelace+news@Example.co.uk ",
                "a@bücher.de",
                "plain",
                "a@localhost",
                "a b@example.com",
                "a@example..com",
                "a@b@example.com",
                "@example.com",
            ],
        );
        agrees(
            TEXT,
            |s| MemberName::parse(s).is_ok(),
            &[
                "Ada",
                "  ",
                "",
                "Ada\tLovelace\n",
                " a\r",
                "a\u{1}b",
                "a\u{7f}",
            ],
        );
        agrees(
            LABEL,
            |s| Labels::parse(&[s]).is_ok(),
            &["vip", " vip ", "  ", "", "a\u{0}"],
        );
        let path_ok = |path: &str| {
            let entry = UrlHistoryEntry {
                path: path.to_owned(),
                time: 1,
                ..UrlHistoryEntry::default()
            };
            UrlHistory::parse(vec![entry], chrono::Utc::now()).is_ok()
        };
        agrees(
            PATH,
            path_ok,
            &[
                "/",
                "/welcome/",
                " /a ",
                "no-slash",
                "//evil.com",
                "/\\evil",
                "/a b",
                "",
            ],
        );
        agrees(
            SITE,
            |s| SiteDomain::parse(s).is_ok(),
            &[
                "Example.com",
                "https://www.Example.com/blog?x=1",
                "http://shop.example.co.uk:8080/",
                "example.com.",
                "localhost",
                "exa mple.com",
                "-a.com",
                "a..com",
                "ünï.com",
            ],
        );
    }
}
