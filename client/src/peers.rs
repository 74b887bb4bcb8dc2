//! Which peer to ask for a shard, how long to wait for it, and what to do
//! when it fails, is late or lies: decisions only, no sockets and no clock
//! of its own. The fetcher passes `now`; the tests pass a made-up one.
//!
//! - A peer that lied (bytes that fail their proof, or an answer of the
//!   wrong kind) is never asked again this fetch.
//! - A peer that failed or was late rests for [`PeerBook::REST`] and is
//!   asked again afterwards (it may have been busy, or moving networks).
//!   The fetcher asks a late range once more of a peer that answered
//!   within a deadline of asking ([`PeerBook::heard_since`]) before it
//!   counts it late.
//! - The deadline of a request is four times the median of the last 64
//!   answer times, within `[min_late, max_wait]`; before four answers are
//!   measured it is four times `min_late`.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use chunker::Cid;
use net::PeerId;
use serde::Serialize;

/// A peer dropped during a fetch, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Dropped {
    /// The peer.
    pub peer: String,
    /// Why it was set aside (for a while; for good if it lied).
    pub reason: String,
    /// True if it sent bytes that failed verification.
    pub lied: bool,
}

/// What one peer sent during a fetch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerUse {
    /// The peer.
    pub peer: String,
    /// Bytes received (ranges and proofs).
    pub bytes: u64,
    /// Answers received.
    pub answers: u64,
}

/// Whether to ask a peer now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Ask it, and wait this long for its answer.
    Yes(Duration),
    /// Skip it, for this reason.
    No(String),
}

/// Answer times kept for the deadline.
const LATENCIES: usize = 64;

/// Answers whose sender is remembered, to be named if they fail their
/// proof: far more than are in flight and unchecked at once.
const ANSWERS_KEPT: usize = 4096;

/// The peers of one fetch, and what they did.
#[derive(Debug)]
pub struct PeerBook {
    min_late: Duration,
    max_wait: Duration,
    dropped: HashMap<PeerId, Dropped>,
    resting: HashMap<PeerId, Instant>,
    /// Who answered each request (shard and ranges), to name a liar once
    /// its bytes fail: the last [`ANSWERS_KEPT`] answers (an answer is
    /// checked soon after it comes).
    answered_by: HashMap<(Cid, Vec<Range<u64>>), PeerId>,
    /// The requests in `answered_by`, oldest first.
    answer_order: VecDeque<(Cid, Vec<Range<u64>>)>,
    latencies: VecDeque<Duration>,
    by_peer: HashMap<PeerId, (u64, u64)>,
    /// When each peer last answered.
    heard: HashMap<PeerId, Instant>,
}

impl PeerBook {
    /// How long a peer that failed or was late is left alone.
    pub const REST: Duration = Duration::from_secs(15);

    /// A book whose deadlines are at least `min_late` and at most `max_wait`.
    pub fn new(min_late: Duration, max_wait: Duration) -> PeerBook {
        PeerBook {
            min_late,
            max_wait: max_wait.max(min_late),
            dropped: HashMap::new(),
            resting: HashMap::new(),
            answered_by: HashMap::new(),
            answer_order: VecDeque::new(),
            latencies: VecDeque::new(),
            by_peer: HashMap::new(),
            heard: HashMap::new(),
        }
    }

    /// Ask `peer` at `now`, and how long to wait; or why not.
    pub fn ask(&self, peer: &PeerId, now: Instant) -> Ask {
        if let Some(d) = self.dropped.get(peer) {
            let resting = self.resting.get(peer).is_some_and(|until| now < *until);
            if d.lied || resting {
                return Ask::No(format!("peer {peer} dropped earlier: {}", d.reason));
            }
        }
        Ask::Yes(self.deadline())
    }

    /// How long to wait for an answer now.
    pub fn deadline(&self) -> Duration {
        if self.latencies.len() < 4 {
            // Nothing measured yet: a generous multiple of the floor.
            return (self.min_late * 4).min(self.max_wait);
        }
        let mut l: Vec<Duration> = self.latencies.iter().copied().collect();
        l.sort();
        (l[l.len() / 2] * 4).clamp(self.min_late, self.max_wait)
    }

    /// `peer` answered a request for `ranges` of `cid` with `bytes` bytes
    /// after `took`.
    pub fn answered(&mut self, peer: PeerId, cid: Cid, ranges: &[Range<u64>], bytes: u64, took: Duration) {
        if self.latencies.len() >= LATENCIES {
            self.latencies.pop_front();
        }
        self.latencies.push_back(took);
        let key = (cid, ranges.to_vec());
        if self.answered_by.insert(key.clone(), peer).is_none() {
            self.answer_order.push_back(key);
        }
        while self.answer_order.len() > ANSWERS_KEPT {
            if let Some(old) = self.answer_order.pop_front() {
                self.answered_by.remove(&old);
            }
        }
        let e = self.by_peer.entry(peer).or_default();
        e.0 += bytes;
        e.1 += 1;
    }

    /// `peer` failed (`lied`: sent what it must not) at `now`: it rests, or
    /// is dropped for good. A later lie replaces an earlier reason.
    pub fn failed(&mut self, peer: PeerId, reason: String, lied: bool, now: Instant) {
        self.resting.insert(peer, now + Self::REST);
        let e = self.dropped.entry(peer).or_insert_with(|| Dropped {
            peer: peer.to_string(),
            reason: reason.clone(),
            lied,
        });
        if lied && !e.lied {
            *e = Dropped { peer: peer.to_string(), reason, lied };
        }
    }

    /// The bytes of `ranges` of `cid` failed their proof: the peer that
    /// sent them (if known) lied, and is dropped. Returns it.
    pub fn rejected(&mut self, cid: &Cid, ranges: &[Range<u64>], reason: &str, now: Instant) -> Option<PeerId> {
        let peer = self.answered_by.get(&(*cid, ranges.to_vec())).copied()?;
        self.failed(peer, format!("sent bytes of {cid} that fail verification: {reason}"), true, now);
        Some(peer)
    }

    /// `peer` answered at `now`.
    pub fn heard(&mut self, peer: PeerId, now: Instant) {
        self.heard.insert(peer, now);
    }

    /// Whether `peer` answered at `since` or later (a peer that did is
    /// alive: an answer late now is more likely a connection waiting out
    /// losses than the peer gone).
    pub fn heard_since(&self, peer: &PeerId, since: Instant) -> bool {
        self.heard.get(peer).is_some_and(|t| *t >= since)
    }

    /// Whether `peer` lied during this fetch.
    pub fn lied(&self, peer: &PeerId) -> bool {
        self.dropped.get(peer).is_some_and(|d| d.lied)
    }

    /// The peers dropped, and what each peer that answered sent (by peer id).
    pub fn into_report(self) -> (Vec<Dropped>, Vec<PeerUse>) {
        let mut dropped: Vec<Dropped> = self.dropped.into_values().collect();
        dropped.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut used: Vec<PeerUse> = self
            .by_peer
            .into_iter()
            .map(|(p, (bytes, answers))| PeerUse { peer: p.to_string(), bytes, answers })
            .collect();
        used.sort_by(|a, b| a.peer.cmp(&b.peer));
        (dropped, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn cid(n: u8) -> Cid {
        Cid::of_raw(&[n])
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_late_peer_rests_then_is_asked_again() {
        let mut b = PeerBook::new(S, 30 * S);
        let (p, t0) = (peer(), Instant::now());
        assert!(matches!(b.ask(&p, t0), Ask::Yes(_)));
        b.failed(p, "late".into(), false, t0);
        assert!(matches!(b.ask(&p, t0 + 14 * S), Ask::No(r) if r.contains("late")));
        assert!(matches!(b.ask(&p, t0 + PeerBook::REST), Ask::Yes(_)));
    }

    #[test]
    fn a_liar_is_never_asked_again() {
        let mut b = PeerBook::new(S, 30 * S);
        let (p, t0) = (peer(), Instant::now());
        b.answered(p, cid(1), &[0..10], 100, S);
        assert_eq!(b.rejected(&cid(1), &[0..10], "proof does not verify", t0), Some(p));
        assert!(matches!(b.ask(&p, t0 + 3600 * S), Ask::No(r) if r.contains("fail verification")));
        // A bare failure afterwards does not wash the lie away.
        b.failed(p, "timeout".into(), false, t0 + 10 * S);
        let (dropped, used) = b.into_report();
        assert_eq!(dropped.len(), 1);
        assert!(dropped[0].lied && dropped[0].reason.contains("fail verification"));
        assert_eq!(used, vec![PeerUse { peer: p.to_string(), bytes: 100, answers: 1 }]);
    }

    #[test]
    fn a_lie_after_a_failure_replaces_the_reason() {
        let mut b = PeerBook::new(S, 30 * S);
        let (p, t0) = (peer(), Instant::now());
        b.failed(p, "busy".into(), false, t0);
        b.failed(p, "wrong answer".into(), true, t0);
        let (dropped, _) = b.into_report();
        assert_eq!(dropped[0].reason, "wrong answer");
        assert!(dropped[0].lied);
    }

    #[test]
    fn the_deadline_follows_the_median_answer_within_bounds() {
        let mut b = PeerBook::new(S, 30 * S);
        assert_eq!(b.deadline(), 4 * S, "before anything is measured: four times the floor");
        let p = peer();
        for ms in [100, 200, 300, 400, 500] {
            b.answered(p, cid(0), &[0..1], 1, Duration::from_millis(ms));
        }
        assert_eq!(b.deadline(), Duration::from_millis(1200), "four times the median (300 ms)");
    }

    #[test]
    fn slow_answers_push_the_deadline_to_its_cap_and_old_ones_are_forgotten() {
        let mut b = PeerBook::new(S, 30 * S);
        let p = peer();
        for _ in 0..LATENCIES {
            b.answered(p, cid(0), &[0..1], 1, 20 * S);
        }
        assert_eq!(b.deadline(), 30 * S);
        for _ in 0..LATENCIES {
            b.answered(p, cid(0), &[0..1], 1, Duration::from_millis(10));
        }
        assert_eq!(b.deadline(), S, "fast answers bring it back to the floor");
    }

    #[test]
    fn a_rejection_of_a_shard_nobody_sent_names_nobody() {
        let mut b = PeerBook::new(S, 30 * S);
        assert_eq!(b.rejected(&cid(9), &[0..1], "bad", Instant::now()), None);
        assert!(b.into_report().0.is_empty());
    }

    /// Two holders of one shard answer different ranges of it; the second
    /// answers last. The first one's bytes fail: the first is named, not
    /// the honest one that happened to answer after it.
    #[test]
    fn the_liar_is_the_peer_that_sent_the_failing_ranges_not_the_last_to_answer_the_shard() {
        let mut b = PeerBook::new(S, 30 * S);
        let (liar, honest, t0) = (peer(), peer(), Instant::now());
        b.answered(liar, cid(1), &[0..4096], 4096, S);
        b.answered(honest, cid(1), &[4096..8192], 4096, S);
        assert_eq!(b.rejected(&cid(1), &[0..4096], "proof does not verify", t0), Some(liar));
        assert!(b.lied(&liar) && !b.lied(&honest));
        assert!(matches!(b.ask(&honest, t0), Ask::Yes(_)));
    }

    #[test]
    fn only_the_last_answers_are_remembered() {
        let mut b = PeerBook::new(S, 30 * S);
        let p = peer();
        for i in 0..(ANSWERS_KEPT as u64 + 10) {
            b.answered(p, cid(1), &[i..i + 1], 1, S);
        }
        assert_eq!(b.answered_by.len(), ANSWERS_KEPT);
        assert_eq!(b.rejected(&cid(1), &[0..1], "bad", Instant::now()), None, "forgotten");
        assert!(b.rejected(&cid(1), &[ANSWERS_KEPT as u64..ANSWERS_KEPT as u64 + 1], "bad", Instant::now()).is_some());
    }
}
