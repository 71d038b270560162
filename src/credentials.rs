//! The secrets clicktermd mints and how it checks them: App Keys, admin tokens and session ids (random,
//! stored only as SHA-256 digests, compared in constant time), webhook signing secrets (random, stored
//! as is because they must sign) and admin passwords (argon2id).
//!
//! Random values come from the operating system's generator through `rand::rng()`.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// The password checks of the server: a few threads of their own, each checking one password at a
/// time in working memory it keeps, and a slot per thread that a login must hold to be checked at all.
///
/// Why not the runtime's blocking pool and argon2's own allocation: each argon2id check allocates
/// ~19 MiB, and the allocator keeps much of what was freed for later, so a flood of concurrent wrong
/// logins grew the process to gigabytes and it stayed there. Here the memory logins can take is
/// `threads` × the hash's cost (19 MiB by default) at most, whatever the traffic, and a login that
/// finds every slot taken is refused at once instead of queueing.
pub struct PasswordChecker {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Permission to check one password now; see [`PasswordChecker::try_slot`].
pub struct CheckSlot {
    permit: tokio::sync::OwnedSemaphorePermit,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl PasswordChecker {
    /// Starts `threads` checking threads; they end when the checker is dropped.
    pub fn new(threads: usize) -> PasswordChecker {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    // argon2's working memory, grown once to the hashes' cost and reused.
                    let mut memory = Vec::new();
                    loop {
                        let job = rx.lock().expect("password job queue").recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn a password-check thread");
        }
        PasswordChecker {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(threads)),
            jobs,
        }
    }

    /// A slot when a checking thread is free; `None` when all are busy.
    pub fn try_slot(&self) -> Option<CheckSlot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(CheckSlot {
            permit,
            jobs: self.jobs.clone(),
        })
    }
}

impl CheckSlot {
    /// [`verify_password`] on a checking thread; without a stored hash (an unknown user name), against
    /// the decoy, so the answer takes as long. The slot is released when the check has finished, even
    /// if the caller stopped waiting for it.
    pub async fn verify(self, password: String, phc: Option<String>) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let permit = self.permit;
        let job: Job = Box::new(move |memory| {
            let phc = phc.as_deref().unwrap_or_else(|| decoy_password_hash());
            let ok = verify_password_in(&password, phc, memory);
            drop(permit);
            let _ = tx.send(ok);
        });
        if self.jobs.send(job).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

/// The largest argon2 memory cost (in KiB blocks) a stored hash may ask for: 256 MiB. Our hashes ask
/// for 19 MiB; a stored hash that asks for more than this is treated as malformed.
const MAX_HASH_BLOCKS: usize = 256 * 1024;

/// [`verify_password`] with argon2's working memory supplied (and grown when it is too small), so a
/// check allocates nothing once the memory is there.
fn verify_password_in(password: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    if blocks > MAX_HASH_BLOCKS {
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let expected = expected.as_bytes();
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
        .is_err()
    {
        return false;
    }
    bool::from(out.ct_eq(expected))
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

    #[test]
    fn checks_in_kept_memory_agree_with_argon2s_own() {
        let mut memory = Vec::new();
        let pw = random_password();
        let phc = hash_password(&pw);
        // The same memory, reused across checks and hashes, gives the same answers each time.
        for _ in 0..3 {
            assert!(verify_password_in(&pw, &phc, &mut memory));
            assert!(!verify_password_in("wrong", &phc, &mut memory));
        }
        let other = hash_password("another password");
        assert!(verify_password_in("another password", &other, &mut memory));
        assert!(!verify_password_in(&pw, "not a hash", &mut memory));
        assert_eq!(memory.len(), 19 * 1024, "grown once to the default cost");
    }

    #[tokio::test]
    async fn the_checker_gives_out_one_slot_per_thread() {
        let checker = PasswordChecker::new(2);
        let a = checker.try_slot().expect("first slot");
        let _b = checker.try_slot().expect("second slot");
        assert!(checker.try_slot().is_none(), "no third check at once");
        let phc = hash_password("a password of ours");
        assert!(a.verify("a password of ours".into(), Some(phc)).await);
        let b = checker.try_slot().unwrap();
        assert!(
            !b.verify("a password of ours".into(), None).await,
            "the decoy matches nothing"
        );
        assert!(
            checker.try_slot().is_some(),
            "a finished check frees its slot"
        );
    }
}
