//! Pure account selection: given the candidates of one request (in routing order) with their
//! live load and health, which one to try next. No I/O, no clock, no shared state — the caller
//! passes the time and the round-robin turn, so every rule is unit-tested here.
//!
//! The rule (README → Routing):
//! 1. a sticky account (the one that served the request's session) is chosen while it is
//!    healthy (not cooling down) and has room;
//! 2. otherwise the lowest priority number among accounts that are not cooling down and have
//!    room; inside that tier the fewest requests in flight; ties by round robin;
//! 3. when no account qualifies: if one that is not cooling down is merely full, the request
//!    waits ([`Choice::AllFull`]); if every remaining account is cooling down, the one whose
//!    cooldown ends first is tried anyway ([`Choice::LastResort`]) rather than refusing outright.

use shared::time::UnixMillis;

/// What the scheduler knows about one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Chooses among `candidates` at `now`. `sticky` is the index of the account that served this
/// session, if any; `turn` is a round-robin counter that advances once per request.
pub fn choose(candidates: &[View], sticky: Option<usize>, now: UnixMillis, turn: usize) -> Choice {
    if let Some(i) = sticky
        && candidates.get(i).is_some_and(|v| v.usable(now))
    {
        return Choice::Account(i);
    }
    let best_priority = candidates
        .iter()
        .filter(|v| v.usable(now))
        .map(|v| v.priority)
        .min();
    if let Some(priority) = best_priority {
        let tier = candidates
            .iter()
            .enumerate()
            .filter(|(_, v)| v.usable(now) && v.priority == priority);
        let least = tier.clone().map(|(_, v)| v.in_flight).min().unwrap_or(0);
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
        }
    }

    fn cooling(mut view: View, until: UnixMillis) -> View {
        view.cooling_until = Some(until);
        view
    }

    #[test]
    fn lowest_priority_number_wins() {
        let c = [v(50, 0, 5), v(10, 3, 5), v(90, 0, 5)];
        assert_eq!(choose(&c, None, NOW, 0), Choice::Account(1));
    }

    #[test]
    fn fewest_in_flight_inside_a_tier() {
        let c = [v(10, 4, 5), v(10, 1, 5), v(10, 2, 5), v(5, 9, 9)];
        // index 3 is the best tier but full.
        assert_eq!(choose(&c, None, NOW, 0), Choice::Account(1));
    }

    #[test]
    fn ties_rotate_round_robin() {
        let c = [v(10, 1, 5), v(10, 0, 5), v(10, 0, 5), v(10, 0, 5)];
        let picks: Vec<Choice> = (0..6).map(|turn| choose(&c, None, NOW, turn)).collect();
        assert_eq!(
            picks,
            [1, 2, 3, 1, 2, 3].map(Choice::Account).to_vec(),
            "every tied account in turn, never the busier one"
        );
    }

    #[test]
    fn sticky_account_is_kept_even_when_busier_or_worse_priority() {
        let c = [v(10, 0, 5), v(20, 4, 5)];
        assert_eq!(choose(&c, Some(1), NOW, 0), Choice::Account(1));
    }

    #[test]
    fn sticky_account_cooling_down_or_full_is_left() {
        let c = [v(10, 0, 5), cooling(v(10, 0, 5), NOW + 1)];
        assert_eq!(choose(&c, Some(1), NOW, 1), Choice::Account(0));
        let c = [v(10, 0, 5), v(10, 5, 5)];
        assert_eq!(choose(&c, Some(1), NOW, 1), Choice::Account(0));
        // A cooldown in the past is over.
        let c = [v(10, 0, 5), cooling(v(20, 0, 5), NOW)];
        assert_eq!(choose(&c, Some(1), NOW, 0), Choice::Account(1));
    }

    #[test]
    fn full_tier_falls_through_to_the_next() {
        let c = [v(10, 2, 2), v(10, 1, 1), v(20, 7, 8)];
        assert_eq!(choose(&c, None, NOW, 0), Choice::Account(2));
    }

    #[test]
    fn cooling_tier_falls_through_to_the_next() {
        let c = [cooling(v(10, 0, 2), NOW + 5), v(20, 0, 2)];
        assert_eq!(choose(&c, None, NOW, 0), Choice::Account(1));
    }

    #[test]
    fn everything_full_waits_but_everything_cooling_tries_the_soonest() {
        let full = [v(10, 2, 2), v(20, 1, 1)];
        assert_eq!(choose(&full, None, NOW, 0), Choice::AllFull);
        let mixed = [v(10, 2, 2), cooling(v(20, 0, 1), NOW + 9)];
        assert_eq!(
            choose(&mixed, None, NOW, 0),
            Choice::AllFull,
            "a full healthy account is worth waiting for"
        );
        let all_cooling = [cooling(v(10, 0, 2), NOW + 9), cooling(v(20, 0, 1), NOW + 3)];
        assert_eq!(choose(&all_cooling, None, NOW, 0), Choice::LastResort(1));
        let cooling_and_full = [cooling(v(10, 2, 2), NOW + 9)];
        assert_eq!(choose(&cooling_and_full, None, NOW, 0), Choice::AllFull);
    }

    #[test]
    fn tried_accounts_are_never_chosen_again() {
        let mut c = [v(10, 0, 5), v(20, 0, 5)];
        c[0].tried = true;
        assert_eq!(choose(&c, Some(0), NOW, 0), Choice::Account(1));
        c[1].tried = true;
        assert_eq!(choose(&c, None, NOW, 0), Choice::Exhausted);
        assert_eq!(choose(&[], None, NOW, 0), Choice::Exhausted);
    }
}
