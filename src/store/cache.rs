//! The credentials cache: integrations' authentication facts by App ID, so that a public-API request
//! does not need a database read to know who is calling.
//!
//! Correctness rests on one counter, the generation. The writer connection's update hook bumps it
//! whenever a row of `integrations` is inserted, updated or deleted, and the writer bumps it once more
//! after such a batch commits, before any caller is answered. An entry remembers the generation taken
//! *before* the read that produced it and is used only while the generation is unchanged, so no entry
//! read before a change (committed or not) outlives it. Other processes never change an existing
//! integration (the command line only creates them), so changes made elsewhere cannot be missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::integrations::Credentials as Facts;

/// Entries kept at most; beyond it the cache starts over (integrations are few, App IDs that do not
/// exist are never cached).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct Credentials {
    generation: Generation,
    entries: Mutex<HashMap<String, (u64, Facts)>>,
}

/// A shared handle on the generation counter.
#[derive(Clone, Default)]
pub struct Generation(Arc<AtomicU64>);

impl Generation {
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Credentials {
    pub fn generation(&self) -> Generation {
        self.generation.clone()
    }

    pub fn get(&self, app_id: &str) -> Option<Facts> {
        let entries = self.entries.lock().expect("credentials cache lock");
        match entries.get(app_id) {
            Some((seen, facts)) if *seen == self.generation.current() => Some(facts.clone()),
            _ => None,
        }
    }

    /// Keeps `facts`, read after the generation was `seen`.
    pub fn put(&self, app_id: &str, seen: u64, facts: Facts) {
        let mut entries = self.entries.lock().expect("credentials cache lock");
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(app_id) {
            entries.clear();
        }
        entries.insert(app_id.to_string(), (seen, facts));
    }
}
