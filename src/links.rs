//! Links that work without a session: the unsubscribe link of every email names the member and
//! carries an HMAC-SHA256 of the member's id, keyed with a secret every instance shares
//! (`server_secrets`, `WebKeys::links`). Nothing is stored per member, any instance can check a
//! link, and a link cannot be made for another member without the key.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Kept apart from any other use of the same key.
const UNSUBSCRIBE: &[u8] = b"memberledger unsubscribe v1:";

fn mac(key: &[u8; 32], member_id: Uuid) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(UNSUBSCRIBE);
    mac.update(member_id.as_bytes());
    mac
}

/// The `key` of `member_id`'s unsubscribe link (hex).
pub fn unsubscribe_key(key: &[u8; 32], member_id: Uuid) -> String {
    hex::encode(mac(key, member_id).finalize().into_bytes())
}

/// Whether `given` is `member_id`'s unsubscribe key, compared in constant time.
pub fn unsubscribe_key_valid(key: &[u8; 32], member_id: Uuid, given: &str) -> bool {
    match hex::decode(given.trim()) {
        Ok(bytes) => mac(key, member_id).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// The page where `member_id` unsubscribes without signing in, for the emails sent to them.
pub fn unsubscribe_url(public_url: &str, key: &[u8; 32], member_id: Uuid) -> String {
    format!(
        "{}/account/unsubscribe?member={member_id}&key={}",
        public_url.trim_end_matches('/'),
        unsubscribe_key(key, member_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_opens_only_its_members_link_and_only_with_the_secret() {
        let secret = [7u8; 32];
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let key = unsubscribe_key(&secret, a);
        assert_eq!(key.len(), 64);
        assert!(unsubscribe_key_valid(&secret, a, &key));
        assert!(!unsubscribe_key_valid(&secret, b, &key));
        assert!(!unsubscribe_key_valid(&[8u8; 32], a, &key));
        assert!(!unsubscribe_key_valid(&secret, a, &key[..62]));
        assert!(!unsubscribe_key_valid(&secret, a, "not hex"));
        assert!(!unsubscribe_key_valid(&secret, a, ""));
        assert_eq!(
            unsubscribe_url("https://m.test/", &secret, a),
            format!("https://m.test/account/unsubscribe?member={a}&key={key}")
        );
    }
}
