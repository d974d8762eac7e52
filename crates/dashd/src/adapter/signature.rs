//! Webhook signature primitives shared by the providers: HMAC-SHA256 (Cloud API,
//! bridges), HMAC-SHA1 (Twilio), SHA-256 digests, and token comparison. Every check
//! compares in constant time.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest as _;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<sha2::Sha256>;
type HmacSha1 = Hmac<sha1::Sha1>;

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC-SHA1 of `message` under `key`.
pub fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = match HmacSha1::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string (either case); None when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

/// Whether two byte strings are equal, in time that depends only on their lengths.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whether a hex signature (`sha256=` already stripped) is the HMAC-SHA256 of `message`.
pub fn verify_sha256_hex(key: &[u8], message: &[u8], signature_hex: &str) -> bool {
    match unhex(signature_hex.trim()) {
        Some(given) => equal(&hmac_sha256(key, message), &given),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_hex_round_trip() {
        // Meta's Node SDK test vector (../shared/vectors/meta_cloud.json).
        let mac = hmac_sha256(b"TEST_APP_SECRET", b"test");
        assert_eq!(
            hex(&mac),
            "0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221"
        );
        assert!(verify_sha256_hex(
            b"TEST_APP_SECRET",
            b"test",
            &hex(&mac).to_uppercase()
        ));
        assert!(!verify_sha256_hex(b"TEST_APP_SECRET", b"tesT", &hex(&mac)));
        assert!(!verify_sha256_hex(b"TEST_APP_SECRET", b"test", "zz"));
        assert!(!verify_sha256_hex(b"TEST_APP_SECRET", b"test", ""));
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"ab"));
    }
}
