//! License keys: their shape, parsing, and generation from random bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `KEY-XXXX-XXXX-XXXX`, each X from a 32-character alphabet without look-alikes (60 bits).
/// Generated outside the aggregate (CSPRNG, reserved unique in a lookup table) and passed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct LicenseKey(String);

/// Why a text is not a [`LicenseKey`]; the message is meant for an API client.
///
/// Its own type rather than [`crate::ValueError`], whose constructor is private to `values`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseKeyError {
    #[error("must look like KEY-XXXX-XXXX-XXXX")]
    WrongShape,
    #[error(
        "contains {0:?}, which license keys never use (they use A-Z without I and O, and 2-9)"
    )]
    InvalidCharacter(char),
}

impl LicenseKey {
    /// The characters of a key: A-Z and 2-9 without the look-alikes 0/O and 1/I. 32 of them,
    /// so a random byte maps to one without bias (256 % 32 == 0).
    pub const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

    const PREFIX: &str = "KEY-";
    const GROUPS: usize = 3;
    const GROUP_LEN: usize = 4;
    /// `KEY-XXXX-XXXX-XXXX`
    const LEN: usize = 4 + 3 * 5 - 1;

    /// Accepts exactly `KEY-XXXX-XXXX-XXXX` with each X from [`Self::ALPHABET`], in any case
    /// (normalised to upper case). No trimming: the caller trims if it wants to.
    pub fn parse(raw: &str) -> Result<Self, LicenseKeyError> {
        let key = raw.to_ascii_uppercase();
        let Some(groups) = key.strip_prefix(Self::PREFIX) else {
            return Err(LicenseKeyError::WrongShape);
        };
        if key.len() != Self::LEN {
            return Err(LicenseKeyError::WrongShape);
        }
        let groups: Vec<&str> = groups.split('-').collect();
        if groups.len() != Self::GROUPS || groups.iter().any(|g| g.len() != Self::GROUP_LEN) {
            return Err(LicenseKeyError::WrongShape);
        }
        for c in groups.iter().flat_map(|g| g.chars()) {
            if !u8::try_from(c).is_ok_and(|b| Self::ALPHABET.contains(&b)) {
                return Err(LicenseKeyError::InvalidCharacter(c));
            }
        }
        Ok(Self(key))
    }

    /// A key from 12 random bytes, each mapped to `ALPHABET[b % 32]`. The caller supplies the
    /// bytes from a CSPRNG (and reserves the key as unique).
    pub fn from_random_bytes(bytes: [u8; 12]) -> Self {
        let mut key = String::with_capacity(Self::LEN);
        key.push_str(Self::PREFIX);
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 && i % Self::GROUP_LEN == 0 {
                key.push('-');
            }
            // In bounds: the index is below 32.
            key.push(char::from(Self::ALPHABET[usize::from(b % 32)]));
        }
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LicenseKey {
    type Error = LicenseKeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<LicenseKey> for String {
    fn from(value: LicenseKey) -> Self {
        value.0
    }
}

impl fmt::Display for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
