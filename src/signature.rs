//! The clicktermSignature: the opaque token the SDK hands the customer's frontend after an end user
//! acts, and that their backend sends to `verify`. It names the event and when it was issued, and
//! carries an HMAC-SHA256 over both under a server key generated at first start, so it cannot be forged
//! or altered. Whether it was already used, and by which integration, is decided against the database.
//!
//! Layout: `cts1_` + base64url(event UUID (16 bytes) ‖ issued-at Unix ms (8 bytes, big-endian) ‖
//! HMAC-SHA256(key, "clicktermSignature/v1" ‖ the 24 bytes before it)).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::model::Timestamp;

const PREFIX: &str = "cts1_";
const DOMAIN: &[u8] = b"clicktermSignature/v1";
const BODY: usize = 24;
const MAC: usize = 32;

/// The server's signature key: 32 random bytes, stored in the database.
#[derive(Clone)]
pub struct SignatureKey([u8; 32]);

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureKey(..)")
    }
}

/// Why a token was refused before looking anything up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not a token of ours at all (wrong prefix, length or encoding).
    Malformed,
    /// Well formed but the MAC does not match: forged or altered.
    Forged,
}

impl SignatureKey {
    pub fn generate() -> SignatureKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        SignatureKey(key)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<SignatureKey> {
        bytes.try_into().ok().map(SignatureKey)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, body: &[u8]) -> Hmac {
        let mut mac = Hmac::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(body);
        mac
    }

    /// Issues the token for `event` acted on at `issued_at`.
    pub fn issue(&self, event: uuid::Uuid, issued_at: Timestamp) -> String {
        let mut raw = Vec::with_capacity(BODY + MAC);
        raw.extend_from_slice(event.as_bytes());
        raw.extend_from_slice(&issued_at.millis().to_be_bytes());
        let tag = self.mac(&raw).finalize().into_bytes();
        raw.extend_from_slice(&tag);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// Checks a token's form and MAC (in constant time) and returns the event and issue time it names.
    pub fn open(&self, token: &str) -> Result<(uuid::Uuid, Timestamp), Invalid> {
        let encoded = token
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(Invalid::Malformed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| Invalid::Malformed)?;
        if raw.len() != BODY + MAC {
            return Err(Invalid::Malformed);
        }
        let (body, tag) = raw.split_at(BODY);
        self.mac(body)
            .verify_slice(tag)
            .map_err(|_| Invalid::Forged)?;
        let event = uuid::Uuid::from_slice(&body[..16]).map_err(|_| Invalid::Malformed)?;
        let issued = i64::from_be_bytes(body[16..24].try_into().expect("8 bytes"));
        Ok((event, Timestamp(issued)))
    }
}

type Hmac = hmac::Hmac<Sha256>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let key = SignatureKey::generate();
        let event = uuid::Uuid::new_v4();
        let token = key.issue(event, Timestamp(1_700_000_000_123));
        assert_eq!(key.open(&token), Ok((event, Timestamp(1_700_000_000_123))));

        // Another key: forged.
        assert_eq!(SignatureKey::generate().open(&token), Err(Invalid::Forged));
        // Flip one bit in every position of the body and the MAC: always refused.
        let raw = URL_SAFE_NO_PAD.decode(&token[PREFIX.len()..]).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 1;
            let t = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bad));
            assert_eq!(key.open(&t), Err(Invalid::Forged), "byte {i}");
        }
        for bad in [
            "",
            "cts1_",
            "cts2_abc",
            "cts1_!!!",
            &token[..token.len() - 2],
            "nonsense",
        ] {
            assert_eq!(key.open(bad), Err(Invalid::Malformed), "{bad:?}");
        }
    }
}
