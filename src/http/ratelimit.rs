//! Login throttling per client address: after `max_failures` failed logins inside the window, further
//! attempts from that address are answered 429 until the window ends. In memory on purpose: it protects
//! the argon2 verifier and the passwords, and a restart that forgets it costs an attacker nothing new.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when `ip` is locked out.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let map = self.failures.lock().expect("limiter lock");
        match map.get(&ip) {
            Some(&(n, since)) if n >= self.max_failures && since.elapsed() < self.window => {
                Err((self.window - since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().expect("limiter lock");
        if map.len() > 10_000 {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().expect("limiter lock").remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_per_address() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
            l.failed(a);
        }
        assert!(l.check(a).unwrap_err() >= 1);
        assert!(l.check(b).is_ok());
        l.succeeded(a);
        assert!(l.check(a).is_ok());
    }
}
