//! The secrets clicktermd mints and how it checks them: App Keys, admin tokens and session ids (random,
//! stored only as SHA-256 digests, compared in constant time), webhook signing secrets (random, stored
//! as is because they must sign) and admin passwords (argon2id).
//!
//! Random values come from the operating system's generator through `rand::rng()`.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Prefixes make a leaked credential recognisable by secret scanners and by people.
pub const APP_KEY_PREFIX: &str = "ctk_";
pub const ADMIN_TOKEN_PREFIX: &str = "ctadm_";
pub const SIGNING_SECRET_PREFIX: &str = "whsec_";

/// `prefix` followed by 32 random bytes in URL-safe base64 (43 characters).
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A password a person can type once: 20 characters from an unambiguous alphabet (~114 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| {
            // Rejection sampling keeps the choice uniform over the alphabet.
            loop {
                let b = (rng.next_u32() & 0x3f) as usize;
                if b < ALPHABET.len() {
                    return ALPHABET[b] as char;
                }
            }
        })
        .collect()
}

/// The SHA-256 digest under which a bearer credential is stored and looked up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest(pub [u8; 32]);

impl SecretDigest {
    pub fn of(secret: &str) -> SecretDigest {
        SecretDigest(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<SecretDigest> {
        bytes.try_into().ok().map(SecretDigest)
    }

    /// Constant-time equality: the comparison does not reveal how many leading bytes matched.
    pub fn matches(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// Hashes a password with argon2id and a fresh salt; the PHC string carries the parameters.
/// CPU-heavy (tens of milliseconds): call it off the async workers.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters cannot fail on a password")
        .to_string()
}

/// Checks a password against a stored PHC string; a malformed hash is a mismatch.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, checked when the user name is unknown so that the answer takes as long
/// as for a known user and does not reveal which names exist.
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_password()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_distinct() {
        let a = random_token(APP_KEY_PREFIX);
        let b = random_token(APP_KEY_PREFIX);
        assert!(a.starts_with("ctk_") && a.len() == 4 + 43);
        assert_ne!(a, b);
    }

    #[test]
    fn digests_compare_by_value() {
        let d = SecretDigest::of("ctk_x");
        assert!(d.matches(&SecretDigest::of("ctk_x")));
        assert!(!d.matches(&SecretDigest::of("ctk_y")));
    }

    #[test]
    fn passwords_round_trip_with_argon2id() {
        let pw = random_password();
        assert_eq!(pw.len(), 20);
        let phc = hash_password(&pw);
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password(&pw, &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password(&pw, "not a hash"));
    }
}
