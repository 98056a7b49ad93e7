//! Pure account selection: given the candidates of one request (in routing order) with their
//! live load and health, which one to try next. No I/O, no clock, no shared state — the caller
//! passes the time and the round-robin turn, so every rule is unit-tested here.
//!
//! The rule (README → Routing):
//! 1. the account a conversation was moved to is chosen while it is healthy (not cooling down),
//!    has room and is of the best priority that has a usable account (a conversation that fell
//!    back to a worse tier returns as soon as the better one is usable);
//! 2. otherwise the lowest priority number among accounts that are not cooling down and have
//!    room. Inside that tier, a request naming a conversation (a session id, or its prefix)
//!    goes to the account its rendezvous hash ranks first, unless that one has more than its
//!    load bound in flight above the tier's least loaded account; anything else goes to the
//!    fewest requests in flight, ties by round robin;
//! 3. when no account qualifies: if one that is not cooling down is merely full, the request
//!    waits ([`Choice::AllFull`]); if every remaining account is cooling down, the one whose
//!    cooldown ends first is tried anyway ([`Choice::LastResort`]) rather than refusing outright.

use shared::time::UnixMillis;

/// What the scheduler knows about one candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// 1–100, lower first.
    pub priority: u8,
    /// Requests holding one of its slots right now.
    pub in_flight: u32,
    /// Its concurrency cap.
    pub capacity: u32,
    /// When set and in the future, the account is cooling down until then.
    pub cooling_until: Option<UnixMillis>,
    /// Already tried by this request (failover never retries an account).
    pub tried: bool,
    /// Its rendezvous weight for the request's conversation (0 without one).
    pub rank: u64,
    /// How many more requests in flight than the tier's least loaded account it may have and
    /// still take a conversation it ranks first for.
    pub bound: u32,
}

impl View {
    fn cooling(&self, now: UnixMillis) -> bool {
        self.cooling_until.is_some_and(|until| until > now)
    }

    fn has_room(&self) -> bool {
        self.in_flight < self.capacity
    }

    fn usable(&self, now: UnixMillis) -> bool {
        !self.tried && !self.cooling(now) && self.has_room()
    }
}

/// The scheduler's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Try this candidate (index into the slice).
    Account(usize),
    /// Every remaining candidate is cooling down; this one's cooldown ends first.
    LastResort(usize),
    /// Remaining candidates that are not cooling down are all at their cap: wait for a slot.
    AllFull,
    /// Every candidate has been tried.
    Exhausted,
}

/// What the request's conversation asks of the choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Affinity {
    /// The index of the account the conversation was moved to, if it was.
    pub moved_to: Option<usize>,
    /// Whether the request names a conversation, so [`View::rank`] orders the accounts.
    pub keyed: bool,
}

/// The conversation's home: among the candidates of the best priority (whatever their state),
/// the one its rendezvous hash ranks first. A request served elsewhere has moved.
pub fn home(candidates: &[View]) -> Option<usize> {
    let best = candidates.iter().map(|v| v.priority).min()?;
    candidates
        .iter()
        .enumerate()
        .filter(|(_, v)| v.priority == best)
        .max_by_key(|(_, v)| v.rank)
        .map(|(i, _)| i)
}

/// How a conversation's request was placed, which decides what is remembered of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On its home account: nothing to remember.
    Home,
    /// Away from a home that could not take it (cooling down, full, failed), or on the account
    /// it had moved to: remembered, so its next turns follow.
    Moved,
    /// Away from a home that was merely loaded past its bound: a passing imbalance, not a move
    /// (the home still holds all but this turn's cache).
    Spilled,
}

/// How choosing `chosen` for a request with `affinity` placed it.
pub fn placement(
    candidates: &[View],
    affinity: Affinity,
    chosen: usize,
    now: UnixMillis,
) -> Placement {
    match home(candidates) {
        Some(h) if h == chosen => Placement::Home,
        _ if affinity.moved_to == Some(chosen) => Placement::Moved,
        Some(h) if candidates[h].usable(now) => Placement::Spilled,
        _ => Placement::Moved,
    }
}

/// Chooses among `candidates` at `now` for a request with `affinity`; `turn` is a round-robin
/// counter that advances once per request.
pub fn choose(candidates: &[View], affinity: Affinity, now: UnixMillis, turn: usize) -> Choice {
    let best_priority = candidates
        .iter()
        .filter(|v| v.usable(now))
        .map(|v| v.priority)
        .min();
    if let Some(i) = affinity.moved_to
        && candidates
            .get(i)
            .is_some_and(|v| v.usable(now) && Some(v.priority) == best_priority)
    {
        return Choice::Account(i);
    }
    if let Some(priority) = best_priority {
        let tier = candidates
            .iter()
            .enumerate()
            .filter(|(_, v)| v.usable(now) && v.priority == priority);
        let least = tier.clone().map(|(_, v)| v.in_flight).min().unwrap_or(0);
        if affinity.keyed {
            return Choice::Account(placed(tier, least));
        }
        let tied: Vec<usize> = tier
            .filter(|(_, v)| v.in_flight == least)
            .map(|(i, _)| i)
            .collect();
        if !tied.is_empty() {
            return Choice::Account(tied[turn % tied.len()]);
        }
    }
    let remaining = candidates.iter().filter(|v| !v.tried);
    if remaining.clone().any(|v| !v.cooling(now)) {
        // Healthy but full: a slot frees when one of their requests ends.
        return Choice::AllFull;
    }
    let soonest = candidates
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.tried && v.has_room())
        .min_by_key(|(_, v)| v.cooling_until.unwrap_or(UnixMillis::MIN));
    match soonest {
        Some((i, _)) => Choice::LastResort(i),
        None if remaining.count() > 0 => Choice::AllFull,
        None => Choice::Exhausted,
    }
}

/// A conversation's account inside a non-empty tier whose least loaded account has `least` in
/// flight: the one ranked first unless it is loaded past its bound, else the least loaded (the
/// better ranked among those, so every instance agrees).
fn placed<'a>(tier: impl Iterator<Item = (usize, &'a View)> + Clone, least: u32) -> usize {
    let ranked = |(_, v): &(usize, &View)| v.rank;
    let (first, preferred) = tier
        .clone()
        .max_by_key(ranked)
        .expect("the tier is not empty");
    if preferred.in_flight <= least.saturating_add(preferred.bound) {
        return first;
    }
    tier.filter(|(_, v)| v.in_flight == least)
        .max_by_key(ranked)
        .map_or(first, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_000_000;

    fn v(priority: u8, in_flight: u32, capacity: u32) -> View {
        View {
            priority,
            in_flight,
            capacity,
            cooling_until: None,
            tried: false,
            rank: 0,
            bound: 0,
        }
    }

    const NONE: Affinity = Affinity {
        moved_to: None,
        keyed: false,
    };

    fn moved(i: usize) -> Affinity {
        Affinity {
            moved_to: Some(i),
            keyed: false,
        }
    }

    fn ranked(mut view: View, rank: u64, bound: u32) -> View {
        view.rank = rank;
        view.bound = bound;
        view
    }

    const KEYED: Affinity = Affinity {
        moved_to: None,
        keyed: true,
    };

    fn cooling(mut view: View, until: UnixMillis) -> View {
        view.cooling_until = Some(until);
        view
    }

    #[test]
    fn lowest_priority_number_wins() {
        let c = [v(50, 0, 5), v(10, 3, 5), v(90, 0, 5)];
        assert_eq!(choose(&c, NONE, NOW, 0), Choice::Account(1));
    }

    #[test]
    fn fewest_in_flight_inside_a_tier() {
        let c = [v(10, 4, 5), v(10, 1, 5), v(10, 2, 5), v(5, 9, 9)];
        // index 3 is the best tier but full.
        assert_eq!(choose(&c, NONE, NOW, 0), Choice::Account(1));
    }

    #[test]
    fn ties_rotate_round_robin() {
        let c = [v(10, 1, 5), v(10, 0, 5), v(10, 0, 5), v(10, 0, 5)];
        let picks: Vec<Choice> = (0..6).map(|turn| choose(&c, NONE, NOW, turn)).collect();
        assert_eq!(
            picks,
            [1, 2, 3, 1, 2, 3].map(Choice::Account).to_vec(),
            "every tied account in turn, never the busier one"
        );
    }

    #[test]
    fn moved_conversation_stays_when_busier_but_returns_to_a_better_tier() {
        let c = [v(10, 0, 5), v(10, 4, 5)];
        assert_eq!(choose(&c, moved(1), NOW, 0), Choice::Account(1));
        let c = [v(10, 0, 5), v(20, 0, 5)];
        assert_eq!(choose(&c, moved(1), NOW, 0), Choice::Account(0));
        let c = [cooling(v(10, 0, 5), NOW + 1), v(20, 0, 5), v(20, 0, 5)];
        assert_eq!(choose(&c, moved(2), NOW, 0), Choice::Account(2));
    }

    #[test]
    fn moved_conversation_leaves_an_account_cooling_down_or_full() {
        let c = [v(10, 0, 5), cooling(v(10, 0, 5), NOW + 1)];
        assert_eq!(choose(&c, moved(1), NOW, 1), Choice::Account(0));
        let c = [v(10, 0, 5), v(10, 5, 5)];
        assert_eq!(choose(&c, moved(1), NOW, 1), Choice::Account(0));
        // A cooldown in the past is over.
        let c = [v(10, 0, 5), cooling(v(10, 0, 5), NOW)];
        assert_eq!(choose(&c, moved(1), NOW, 0), Choice::Account(1));
    }

    #[test]
    fn full_tier_falls_through_to_the_next() {
        let c = [v(10, 2, 2), v(10, 1, 1), v(20, 7, 8)];
        assert_eq!(choose(&c, NONE, NOW, 0), Choice::Account(2));
    }

    #[test]
    fn cooling_tier_falls_through_to_the_next() {
        let c = [cooling(v(10, 0, 2), NOW + 5), v(20, 0, 2)];
        assert_eq!(choose(&c, NONE, NOW, 0), Choice::Account(1));
    }

    #[test]
    fn everything_full_waits_but_everything_cooling_tries_the_soonest() {
        let full = [v(10, 2, 2), v(20, 1, 1)];
        assert_eq!(choose(&full, NONE, NOW, 0), Choice::AllFull);
        let mixed = [v(10, 2, 2), cooling(v(20, 0, 1), NOW + 9)];
        assert_eq!(
            choose(&mixed, NONE, NOW, 0),
            Choice::AllFull,
            "a full healthy account is worth waiting for"
        );
        let all_cooling = [cooling(v(10, 0, 2), NOW + 9), cooling(v(20, 0, 1), NOW + 3)];
        assert_eq!(choose(&all_cooling, NONE, NOW, 0), Choice::LastResort(1));
        let cooling_and_full = [cooling(v(10, 2, 2), NOW + 9)];
        assert_eq!(choose(&cooling_and_full, NONE, NOW, 0), Choice::AllFull);
    }

    #[test]
    fn tried_accounts_are_never_chosen_again() {
        let mut c = [v(10, 0, 5), v(20, 0, 5)];
        c[0].tried = true;
        assert_eq!(choose(&c, moved(0), NOW, 0), Choice::Account(1));
        c[1].tried = true;
        assert_eq!(choose(&c, NONE, NOW, 0), Choice::Exhausted);
        assert_eq!(choose(&[], NONE, NOW, 0), Choice::Exhausted);
    }

    #[test]
    fn a_conversation_goes_to_its_best_ranked_account_of_the_best_tier() {
        let c = [
            ranked(v(10, 2, 8), 5, 2),
            ranked(v(10, 0, 8), 1, 2),
            ranked(v(5, 0, 8), 3, 2),
            ranked(v(5, 1, 8), 9, 2),
        ];
        assert_eq!(choose(&c, KEYED, NOW, 0), Choice::Account(3));
        assert_eq!(home(&c), Some(3));
        // Not round robin: every turn agrees.
        assert_eq!(choose(&c, KEYED, NOW, 1), Choice::Account(3));
    }

    #[test]
    fn a_preferred_account_past_its_bound_gives_way_to_the_least_loaded() {
        // Bound 2: taken at 2 above the least loaded, left at 3.
        let at_bound = [ranked(v(10, 3, 8), 9, 2), ranked(v(10, 1, 8), 1, 2)];
        assert_eq!(choose(&at_bound, KEYED, NOW, 0), Choice::Account(0));
        let past = [ranked(v(10, 4, 8), 9, 2), ranked(v(10, 1, 8), 1, 2)];
        assert_eq!(choose(&past, KEYED, NOW, 0), Choice::Account(1));
        assert_eq!(home(&past), Some(0), "its home is still the first ranked");
        // Among equally least loaded, the better ranked.
        let three = [
            ranked(v(10, 4, 8), 9, 0),
            ranked(v(10, 1, 8), 1, 0),
            ranked(v(10, 1, 8), 2, 0),
        ];
        assert_eq!(choose(&three, KEYED, NOW, 0), Choice::Account(2));
    }

    #[test]
    fn placements_say_what_to_remember() {
        let at_home = [ranked(v(10, 0, 8), 9, 2), ranked(v(10, 0, 8), 1, 2)];
        assert_eq!(placement(&at_home, KEYED, 0, NOW), Placement::Home);
        let past_bound = [ranked(v(10, 4, 8), 9, 2), ranked(v(10, 1, 8), 1, 2)];
        assert_eq!(placement(&past_bound, KEYED, 1, NOW), Placement::Spilled);
        let full = [ranked(v(10, 8, 8), 9, 2), ranked(v(10, 0, 8), 1, 2)];
        assert_eq!(placement(&full, KEYED, 1, NOW), Placement::Moved);
        let mut failed = at_home;
        failed[0].tried = true;
        assert_eq!(placement(&failed, KEYED, 1, NOW), Placement::Moved);
        let back = Affinity {
            moved_to: Some(1),
            keyed: true,
        };
        assert_eq!(placement(&at_home, back, 1, NOW), Placement::Moved);
    }

    #[test]
    fn a_full_or_cooling_home_sends_the_conversation_to_the_next_ranked() {
        let full = [ranked(v(10, 8, 8), 9, 2), ranked(v(10, 0, 8), 1, 2)];
        assert_eq!(choose(&full, KEYED, NOW, 0), Choice::Account(1));
        assert_eq!(home(&full), Some(0));
        let cooling = [
            ranked(cooling(v(10, 0, 8), NOW + 5), 9, 2),
            ranked(v(10, 0, 8), 1, 2),
        ];
        assert_eq!(choose(&cooling, KEYED, NOW, 0), Choice::Account(1));
    }
}
