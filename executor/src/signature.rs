//! `X-Aegis-Signature`: hex HMAC-SHA256 of the exact body bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs `body` with `secret`; hex.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
    match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// True when `signature` (hex, case-insensitive) is the HMAC of `body`; constant time in the
/// signature's content.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(expected) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let s = sign(b"secret", b"{\"a\":1}");
        assert_eq!(s.len(), 64);
        assert!(verify(b"secret", b"{\"a\":1}", &s));
        assert!(verify(b"secret", b"{\"a\":1}", &s.to_uppercase()));
        assert!(
            !verify(b"secret", b"{\"a\": 1}", &s),
            "the exact bytes are signed"
        );
        assert!(!verify(b"other", b"{\"a\":1}", &s));
        assert!(!verify(b"secret", b"{\"a\":1}", "zz"));
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
