//! Validated domain values. Each has a private field and a `parse` constructor, so a value
//! that exists is a valid one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was rejected; the message is meant for an API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ValueError {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    pub fn reason(&self) -> &str {
        &self.0
    }
}

/// An email address, trimmed, as the member typed it. Uniqueness is case-insensitive:
/// compare [`EmailAddress::normalized`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let email = raw.trim();
        if email.is_empty() {
            return Err(ValueError::new("must not be empty"));
        }
        if email.chars().count() > Self::MAX_LEN {
            return Err(ValueError::new(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValueError::new(
                "must not contain spaces or control characters",
            ));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(ValueError::new("must contain an @"));
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(ValueError::new("has an invalid part before the @"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let valid_label = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(valid_label) {
            return Err(ValueError::new("has an invalid domain"));
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form under which uniqueness is checked.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A site's domain, normalised: lower case, without scheme, port, path or trailing dot
/// (`https://Example.com/blog` → `example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteDomain(String);

impl SiteDomain {
    pub const MAX_LEN: usize = 253;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let mut domain = raw.trim().to_lowercase();
        for scheme in ["https://", "http://"] {
            if let Some(rest) = domain.strip_prefix(scheme) {
                domain = rest.to_owned();
            }
        }
        let end = domain.find(['/', '?', '#']).unwrap_or(domain.len());
        domain.truncate(end);
        if let Some((host, port)) = domain.rsplit_once(':') {
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                domain = host.to_owned();
            }
        }
        let domain = domain.trim_end_matches('.');
        if domain.is_empty() {
            return Err(ValueError::new("must not be empty"));
        }
        if domain.len() > Self::MAX_LEN {
            return Err(ValueError::new(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let valid = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(valid) {
            return Err(ValueError::new("is not a domain name like example.com"));
        }
        Ok(Self(domain.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SiteDomain {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SiteDomain> for String {
    fn from(value: SiteDomain) -> Self {
        value.0
    }
}

impl fmt::Display for SiteDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Trims `raw`; `None` when nothing is left, an error when longer than `max` characters.
fn bounded_text(raw: &str, max: usize) -> Result<Option<String>, ValueError> {
    let text = raw.trim();
    if text.chars().count() > max {
        return Err(ValueError::new(format!("must be at most {max} characters")));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ValueError::new("must not contain control characters"));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// A member's display name: trimmed, at most 191 characters. Blank means "no name".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberName(String);

impl MemberName {
    pub const MAX_LEN: usize = 191;

    /// `Ok(None)` for a blank name.
    pub fn parse(raw: &str) -> Result<Option<Self>, ValueError> {
        Ok(bounded_text(raw, Self::MAX_LEN)?.map(Self))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An admin's private note on a member: at most 2000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(String);

impl Note {
    pub const MAX_LEN: usize = 2000;

    /// `Ok(None)` for a blank note.
    pub fn parse(raw: &str) -> Result<Option<Self>, ValueError> {
        Ok(bounded_text(raw, Self::MAX_LEN)?.map(Self))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A member's labels: each trimmed, 1–191 characters; duplicates (ignoring case) dropped,
/// first spelling kept; at most 100.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels(Vec<String>);

impl Labels {
    pub const MAX_COUNT: usize = 100;
    pub const MAX_LEN: usize = 191;

    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, ValueError> {
        let mut labels: Vec<String> = Vec::with_capacity(raw.len());
        for (i, label) in raw.iter().enumerate() {
            let label = bounded_text(label.as_ref(), Self::MAX_LEN)
                .map_err(|e| ValueError::new(format!("label {i} {}", e.reason())))?
                .ok_or_else(|| ValueError::new(format!("label {i} must not be blank")))?;
            if !labels.iter().any(|l| l.eq_ignore_ascii_case(&label)) {
                labels.push(label);
            }
        }
        if labels.len() > Self::MAX_COUNT {
            return Err(ValueError::new(format!(
                "must have at most {} labels",
                Self::MAX_COUNT
            )));
        }
        Ok(Self(labels))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_inner(self) -> Vec<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_accepts_ordinary_addresses_and_trims_them() {
        let email = EmailAddress::parse("  Ada.Lovelace+news@Example.co.uk ").expect("valid");
        assert_eq!(email.as_str(), "Ada.Lovelace+news@Example.co.uk");
        assert_eq!(email.normalized(), "ada.lovelace+news@example.co.uk");
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a b@example.com",
            "a@exa mple.com",
            "a@-example.com",
            "a@example..com",
            "a@b@example.com",
        ] {
            assert!(
                EmailAddress::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(EmailAddress::parse(&long).is_err());
    }

    #[test]
    fn name_is_at_most_191_characters_and_blank_means_none() {
        assert_eq!(MemberName::parse("  ").expect("blank ok"), None);
        assert!(MemberName::parse(&"é".repeat(191))
            .expect("191 ok")
            .is_some());
        assert!(MemberName::parse(&"é".repeat(192)).is_err());
    }

    #[test]
    fn site_domains_are_normalised() {
        for (raw, want) in [
            ("Example.com", "example.com"),
            ("https://www.Example.com/blog?x=1", "www.example.com"),
            ("http://shop.example.co.uk:8080/", "shop.example.co.uk"),
            ("example.com.", "example.com"),
        ] {
            assert_eq!(SiteDomain::parse(raw).expect(raw).as_str(), want);
        }
        for bad in [
            "",
            "localhost",
            "exa mple.com",
            "-a.com",
            "a..com",
            "ünï.com",
        ] {
            assert!(SiteDomain::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_are_deduplicated_ignoring_case_and_blank_ones_rejected() {
        let labels = Labels::parse(&["VIP", " vip ", "beta"]).expect("valid");
        assert_eq!(labels.into_inner(), vec!["VIP", "beta"]);
        assert!(Labels::parse(&["ok", " "]).is_err());
    }
}
