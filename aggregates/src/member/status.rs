//! What a member is, beyond the aggregate's fields: how they came to exist, whether they pay,
//! their complimentary access and how they signed in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How a member came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberSource {
    Admin,
    Api,
    Import,
    Signup,
    Stripe,
}

impl MemberSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Api => "api",
            Self::Import => "import",
            Self::Signup => "signup",
            Self::Stripe => "stripe",
        }
    }
}

/// Whether a member pays. Every member starts free.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    #[default]
    Free,
    Paid,
    Comped,
}

impl MemberStatus {
    /// The status rule, the one place it is written: a paying subscription wins (`paid`), else
    /// complimentary access (`comped`), else `free`. The subscriptions' side reaches the
    /// aggregate through `SetPaying`, the comp's through `GrantComp` and `EndComp`.
    pub fn of(paying: bool, comped: bool) -> Self {
        match (paying, comped) {
            (true, _) => Self::Paid,
            (false, true) => Self::Comped,
            (false, false) => Self::Free,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Paid => "paid",
            Self::Comped => "comped",
        }
    }
}

/// Complimentary access: a tier an admin gives a member for free, until a time or without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Comp {
    pub tier_id: Uuid,
    pub until: Option<DateTime<Utc>>,
}

/// Why complimentary access ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompEndReason {
    /// An admin took it away.
    Revoked,
    /// Its `until` passed.
    Expired,
}

impl CompEndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// How a member proved they own their email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginMethod {
    /// The 6-digit code from the email.
    Code,
    /// The magic link from the email.
    Link,
}

impl LoginMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Link => "link",
        }
    }
}
