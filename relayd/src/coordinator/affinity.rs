//! Conversation affinity: which account a conversation was moved to.
//!
//! A conversation is named by an [`AffinityKey`]: a 128-bit hash of the relay key and the
//! client's session id, or of the relay key and the request's stable prefix (see
//! `crate::routing`). Routing ranks a conversation's accounts by rendezvous hashing on that key,
//! so every instance finds the same *home* account without asking anyone. Only a conversation
//! that had to leave its home (full, cooling down, over the load bound) needs remembering: that
//! is what an [`AffinityMap`] holds, each entry for `ttl` after its last use and at most `max` of
//! them (the least recently used go first). With Redis, the coordinator shares each change, so
//! the next turn finds the moved conversation wherever it arrives.
//!
//! The hash is xxh3: the same on every instance and build (a rolling upgrade keeps routing), and
//! fast enough to hash a Claude Code prompt's tools on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shared::account::AccountId;
use shared::key::KeyId;
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64_with_seed};

/// A conversation's name for routing: per relay key, so two keys never share a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AffinityKey(pub u128);

impl AffinityKey {
    /// The conversation of client session `session` under relay key `key`.
    pub fn session(key: &KeyId, session: &str) -> Self {
        Self::of(key, b's', &[session.as_bytes()])
    }

    /// The conversation whose stable prefix hashes to `prefix` under relay key `key`.
    pub fn prefix(key: &KeyId, prefix: u128) -> Self {
        Self::of(key, b'p', &[&prefix.to_le_bytes()])
    }

    fn of(key: &KeyId, kind: u8, parts: &[&[u8]]) -> Self {
        let mut hasher = Xxh3Default::new();
        hasher.update(key.0.as_bytes());
        // The separator keeps ("ab", "c") and ("a", "bc") apart; the kind keeps a session id
        // from ever naming the same conversation as a prefix.
        hasher.update(&[0, kind]);
        for part in parts {
            hasher.update(part);
        }
        Self(hasher.digest128())
    }

    /// The rendezvous weight of `account` for this conversation: the account with the highest
    /// weight is its home.
    pub fn rank(&self, account: &AccountId) -> u64 {
        // Folding both halves into the seed keeps every bit of the key in play.
        let seed = (self.0 as u64) ^ ((self.0 >> 64) as u64);
        xxh3_64_with_seed(account.as_str().as_bytes(), seed)
    }

    /// 32 hex digits, for shared storage.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Reads [`AffinityKey::to_hex`] back.
    pub fn from_hex(text: &str) -> Option<Self> {
        (text.len() == 32)
            .then(|| u128::from_str_radix(text, 16).ok())
            .flatten()
            .map(Self)
    }
}

/// How long an entry lives after its last use, and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinitySettings {
    /// Life after last use.
    pub ttl: Duration,
    /// Most entries kept.
    pub max: usize,
}

impl Default for AffinitySettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            max: 10_000,
        }
    }
}

/// What [`AffinityMap::put`] changed, for the coordinator to share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Nothing anyone else needs to hear.
    Unchanged,
    /// A new or different account, an entry removed, or one whose shared copy is half way to
    /// expiring: tell the others.
    Share,
}

/// Moved conversations and their accounts, bounded in time and size.
#[derive(Debug, Default)]
pub struct AffinityMap {
    settings: AffinitySettings,
    // std mutex: a hash-map operation per request, never held across an await.
    entries: Mutex<HashMap<AffinityKey, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    account: AccountId,
    /// Last use here: the entry ends `ttl` after it.
    used: Instant,
    /// Last time this instance shared it: refreshed once half the ttl has gone.
    shared: Instant,
}

impl AffinityMap {
    /// An empty map.
    pub fn new(settings: AffinitySettings) -> Self {
        Self {
            settings,
            entries: Mutex::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> AffinitySettings {
        self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AffinityKey, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The account `key` was moved to, while its entry lives.
    pub fn get(&self, key: &AffinityKey) -> Option<AccountId> {
        self.lock()
            .get(key)
            .filter(|e| e.used.elapsed() < self.settings.ttl)
            .map(|e| e.account.clone())
    }

    /// Records that `key` lives on `account` (`None`: on its home account, so no entry), used
    /// now. Says whether other instances should hear of it.
    pub fn put(&self, key: &AffinityKey, account: Option<&AccountId>) -> Put {
        if self.settings.max == 0 {
            return Put::Unchanged;
        }
        let mut entries = self.lock();
        let Some(account) = account else {
            return match entries.remove(key) {
                Some(_) => Put::Share,
                None => Put::Unchanged,
            };
        };
        let now = Instant::now();
        if let Some(entry) = entries.get_mut(key)
            && entry.account == *account
            && entry.used.elapsed() < self.settings.ttl
        {
            entry.used = now;
            if entry.shared.elapsed() < self.settings.ttl / 2 {
                return Put::Unchanged;
            }
            entry.shared = now;
            return Put::Share;
        }
        if entries.len() >= self.settings.max && !entries.contains_key(key) {
            self.make_room(&mut entries);
        }
        entries.insert(
            *key,
            Entry {
                account: account.clone(),
                used: now,
                shared: now,
            },
        );
        Put::Share
    }

    /// Applies what another instance shared: `account` for `key` (`None`: removed), living
    /// `ttl` from now (the shared copy's remaining life).
    pub fn apply(&self, key: &AffinityKey, account: Option<AccountId>, ttl: Duration) {
        let mut entries = self.lock();
        let Some(account) = account else {
            entries.remove(key);
            return;
        };
        if self.settings.max == 0 {
            return;
        }
        if entries.len() >= self.settings.max && !entries.contains_key(key) {
            self.make_room(&mut entries);
        }
        let now = Instant::now();
        // Aged so that it ends when the shared copy does; `shared` as now, since the sender
        // just shared it.
        let used = now
            .checked_sub(self.settings.ttl.saturating_sub(ttl))
            .unwrap_or(now);
        entries.insert(
            *key,
            Entry {
                account,
                used,
                shared: now,
            },
        );
    }

    /// Entries in the map (expired ones included until they are pushed out).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn make_room(&self, entries: &mut HashMap<AffinityKey, Entry>) {
        entries.retain(|_, e| e.used.elapsed() < self.settings.ttl);
        if entries.len() >= self.settings.max
            && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k)
        {
            entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> KeyId {
        KeyId(name.to_owned())
    }

    fn account(name: &str) -> AccountId {
        AccountId(name.to_owned())
    }

    #[test]
    fn keys_are_per_relay_key_and_kind() {
        let a = AffinityKey::session(&key("k1"), "abc");
        assert_eq!(a, AffinityKey::session(&key("k1"), "abc"), "stable");
        assert_ne!(a, AffinityKey::session(&key("k2"), "abc"));
        assert_ne!(a, AffinityKey::session(&key("k1"), "abd"));
        assert_ne!(
            AffinityKey::session(&key("k1"), "ab"),
            AffinityKey::session(&key("k1a"), "b"),
            "the separator keeps key and session apart"
        );
        assert_ne!(
            AffinityKey::prefix(&key("k1"), 7),
            AffinityKey::prefix(&key("k2"), 7)
        );
        // Huge ids cost 16 bytes like any other.
        let huge = "x".repeat(1 << 20);
        assert_eq!(
            AffinityKey::session(&key("k1"), &huge),
            AffinityKey::session(&key("k1"), &huge)
        );
    }

    #[test]
    fn hex_round_trips() {
        let a = AffinityKey::session(&key("k"), "s");
        assert_eq!(AffinityKey::from_hex(&a.to_hex()), Some(a));
        assert_eq!(AffinityKey::from_hex("zz"), None);
        assert_eq!(AffinityKey::from_hex(&"g".repeat(32)), None);
    }

    #[test]
    fn ranks_spread_homes_evenly() {
        // Rendezvous hashing over 4 accounts: each is home to about a quarter of 4,000
        // conversations.
        let accounts: Vec<AccountId> = (0..4).map(|i| account(&format!("acc_{i}"))).collect();
        let mut homes = [0u32; 4];
        for n in 0..4000 {
            let k = AffinityKey::session(&key("k"), &n.to_string());
            let home = (0..4).max_by_key(|&i| k.rank(&accounts[i])).unwrap();
            homes[home] += 1;
        }
        assert!(homes.iter().all(|&h| (850..1150).contains(&h)), "{homes:?}");
    }

    #[test]
    fn removing_an_account_moves_only_its_conversations() {
        let accounts: Vec<AccountId> = (0..4).map(|i| account(&format!("acc_{i}"))).collect();
        let home = |k: &AffinityKey, of: &[AccountId]| {
            of.iter().max_by_key(|a| k.rank(a)).unwrap().clone()
        };
        for n in 0..1000 {
            let k = AffinityKey::prefix(&key("k"), n);
            let before = home(&k, &accounts);
            let after = home(&k, &accounts[..3]);
            if before != accounts[3] {
                assert_eq!(before, after, "conversation {n} moved without cause");
            }
        }
    }

    #[test]
    fn entries_are_shared_when_new_changed_removed_or_half_expired() {
        let map = AffinityMap::new(AffinitySettings {
            ttl: Duration::from_secs(3600),
            max: 10,
        });
        let k = AffinityKey::session(&key("k"), "s");
        assert_eq!(map.put(&k, None), Put::Unchanged, "nothing to remove");
        assert_eq!(map.put(&k, Some(&account("a"))), Put::Share);
        assert_eq!(map.put(&k, Some(&account("a"))), Put::Unchanged);
        assert_eq!(map.get(&k), Some(account("a")));
        assert_eq!(map.put(&k, Some(&account("b"))), Put::Share);
        assert_eq!(map.get(&k), Some(account("b")));
        assert_eq!(map.put(&k, None), Put::Share);
        assert_eq!(map.get(&k), None);
    }

    #[test]
    fn a_zero_ttl_expires_at_once_and_a_full_map_forgets_the_oldest() {
        let map = AffinityMap::new(AffinitySettings {
            ttl: Duration::ZERO,
            max: 10,
        });
        let k = AffinityKey::session(&key("k"), "s");
        map.put(&k, Some(&account("a")));
        assert_eq!(map.get(&k), None);

        let map = AffinityMap::new(AffinitySettings {
            ttl: Duration::from_secs(3600),
            max: 2,
        });
        let keys: Vec<AffinityKey> = (0..3)
            .map(|n| AffinityKey::session(&key("k"), &n.to_string()))
            .collect();
        for k in &keys {
            map.put(k, Some(&account("a")));
        }
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&keys[0]), None, "the oldest went");
        assert_eq!(map.get(&keys[2]), Some(account("a")));
    }

    #[test]
    fn applied_entries_end_with_their_shared_copy() {
        let map = AffinityMap::new(AffinitySettings {
            ttl: Duration::from_secs(3600),
            max: 10,
        });
        let k = AffinityKey::session(&key("k"), "s");
        map.apply(&k, Some(account("a")), Duration::from_secs(60));
        assert_eq!(map.get(&k), Some(account("a")));
        map.apply(&k, Some(account("a")), Duration::ZERO);
        assert_eq!(map.get(&k), None, "the shared copy had expired");
        map.apply(&k, Some(account("b")), Duration::from_secs(60));
        map.apply(&k, None, Duration::ZERO);
        assert_eq!(map.get(&k), None);
    }
}
