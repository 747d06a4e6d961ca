//! Opaque page cursors: the sort key of the last item of a page, base64url-encoded.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};

/// A cursor after an item sorted by (time, id).
pub fn encode(at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
}

pub fn decode<T: FromStr>(cursor: &str) -> Option<(DateTime<Utc>, T)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = raw.split_once('|')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// A cursor after an item sorted by a log position.
pub fn encode_position(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("p{position}"))
}

pub fn decode_position(cursor: &str) -> Option<i64> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    raw.strip_prefix('p')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("valid");
        let id = uuid::Uuid::now_v7();
        assert_eq!(decode(&encode(at, &id.to_string())), Some((at, id)));
        assert_eq!(
            decode::<String>(&encode(at, "evt_1")),
            Some((at, "evt_1".to_owned()))
        );
        assert_eq!(decode::<uuid::Uuid>("not a cursor"), None);
        assert_eq!(decode::<String>(""), None);
        assert_eq!(decode_position(&encode_position(42)), Some(42));
        assert_eq!(decode_position("garbage"), None);
    }
}
