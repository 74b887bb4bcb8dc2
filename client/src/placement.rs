//! Choosing peers for a segment's shards, and retrying refused ones on
//! others: decisions only (an rng is passed in; no sockets, no clock).
//!
//! Each segment's n shards go to n distinct peers. Peers already holding
//! shards of the same object are preferred (an object touches few peers
//! overall, so a device talks to few peers and a lost peer hurts few
//! objects); the rest are drawn at random, weighted by free capacity.
//! [`SegmentPlan`] runs the rounds of one segment: who gets which shard,
//! what a receipt or a failure changes, and what is left unplaced after
//! [`ATTEMPTS`] rounds. [`Pool`] is what the segments of one job share.

use std::collections::{HashMap, HashSet};

use net::PeerId;
use rand::Rng;

/// A peer that may take shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// Bytes it has free.
    pub free: u64,
    /// How likely it is drawn, against the others: what it has proven
    /// (the SPN's choice; [`Candidate::new`] uses `free`).
    pub weight: u64,
    /// Directly reachable (not only through a relay): preferred for data
    /// shards, the ones devices read first.
    pub direct: bool,
    /// The failure domains it belongs to (household, network, region,
    /// operator, as labels such as `h:203.0.113.7`): no segment puts more
    /// than [`Pool::max_per_domain`] shards in one.
    pub domains: Vec<String>,
}

impl Candidate {
    /// A directly reachable peer in no known domain, weighted by its free space.
    pub fn new(peer: PeerId, free: u64) -> Candidate {
        Candidate { peer, free, weight: free, direct: true, domains: Vec::new() }
    }
}

/// What a segment's shards already use of each failure domain, and the cap.
#[derive(Debug, Clone)]
pub struct Spread {
    /// Most shards of one segment in one domain.
    pub max_per_domain: usize,
    /// Shards of the segment per domain so far.
    pub used: HashMap<String, usize>,
}

impl Spread {
    /// No shard placed yet; at most `max_per_domain` per domain.
    pub fn new(max_per_domain: usize) -> Spread {
        Spread { max_per_domain, used: HashMap::new() }
    }

    fn allows(&self, domains: &[String]) -> bool {
        domains.iter().all(|d| self.used.get(d).copied().unwrap_or(0) < self.max_per_domain)
    }

    /// A shard went to a peer in `domains`.
    pub fn add(&mut self, domains: &[String]) {
        for d in domains {
            *self.used.entry(d.clone()).or_default() += 1;
        }
    }

    /// A shard left a peer in `domains` (its put failed).
    pub fn remove(&mut self, domains: &[String]) {
        for d in domains {
            if let Some(n) = self.used.get_mut(d) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// Up to `n` distinct peers with room for `shard_len` bytes: first from
/// `sticky` (in order), then drawn by weight. Never one in `exclude`, nor
/// one whose failure domain already holds `spread`'s cap of this segment
/// (`spread` counts the peers chosen). Fewer than `n` when there are not
/// enough.
pub fn choose(
    n: usize,
    shard_len: u64,
    candidates: &[Candidate],
    sticky: &[PeerId],
    exclude: &HashSet<PeerId>,
    spread: &mut Spread,
    rng: &mut impl Rng,
) -> Vec<PeerId> {
    let fits = |c: &Candidate| c.free >= shard_len && !exclude.contains(&c.peer);
    let mut out: Vec<PeerId> = Vec::with_capacity(n);
    for p in sticky {
        if out.len() == n {
            return out;
        }
        if let Some(c) = candidates.iter().find(|c| c.peer == *p)
            && !out.contains(p)
            && fits(c)
            && spread.allows(&c.domains)
        {
            spread.add(&c.domains);
            out.push(*p);
        }
    }
    let mut pool: Vec<&Candidate> = candidates.iter().filter(|c| fits(c) && !out.contains(&c.peer)).collect();
    while out.len() < n {
        pool.retain(|c| spread.allows(&c.domains));
        if pool.is_empty() {
            break;
        }
        let total: u128 = pool.iter().map(|c| u128::from(c.weight.max(1))).sum();
        let mut pick = rng.random_range(0..total.max(1));
        let mut idx = pool.len() - 1;
        for (i, c) in pool.iter().enumerate() {
            let w = u128::from(c.weight.max(1));
            if pick < w {
                idx = i;
                break;
            }
            pick -= w;
        }
        let c = pool.swap_remove(idx);
        spread.add(&c.domains);
        out.push(c.peer);
    }
    out
}

/// Rounds per segment (first try plus retries on other peers).
pub const ATTEMPTS: usize = 4;

/// The peers the segments of one job may use, and what they did.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Peers that may take shards, with their free space as the job sees it.
    pub candidates: Vec<Candidate>,
    /// Peers holding shards of this object, preferred for the next ones.
    pub sticky: Vec<PeerId>,
    /// Shards given to another peer after a failure.
    pub retries: u64,
    /// Puts started on a second peer because the first was too slow (see [`LongTail`]).
    pub hedged: u64,
    /// Most shards of one segment in one failure domain (m, so that losing
    /// any one domain leaves k; `usize::MAX` when the operator relaxed it).
    pub max_per_domain: usize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::new(Vec::new())
    }
}

impl Pool {
    /// A pool of `candidates`, with no cap per domain.
    pub fn new(candidates: Vec<Candidate>) -> Pool {
        Pool { candidates, sticky: Vec::new(), retries: 0, hedged: 0, max_per_domain: usize::MAX }
    }

    /// The domains of `peer`, if it is a candidate.
    fn domains_of(&self, peer: &PeerId) -> Vec<String> {
        self.candidates.iter().find(|c| c.peer == *peer).map(|c| c.domains.clone()).unwrap_or_default()
    }

    /// How many shards of one segment these candidates can hold at most,
    /// with the cap per domain: fewer than n means a segment cannot be
    /// spread (the network is too small, or too few households).
    pub fn spreadable(&self, n: usize) -> usize {
        let mut spread = Spread::new(self.max_per_domain);
        choose(n, 0, &self.candidates, &[], &HashSet::new(), &mut spread, &mut rand::rng()).len()
    }
}

/// Why a put failed, as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Busy, or a passing fault: the peer may take other shards this job.
    Passing,
    /// Unreachable, untrusting, full or lying: offered nothing more this job.
    Drop,
}

/// The long-tail cut of one round of a segment's puts: once at least half
/// of them have ended, a put still running [`LongTail::FACTOR`] times the
/// median time of those (and at least [`LongTail::MIN`]) after the round
/// began is hedged on another peer, up to a few per round (a quarter of
/// the puts, at least 2). One slow peer then costs a publish the cut, not
/// its own time; a network slow everywhere is not loaded twice over.
#[derive(Debug, Clone)]
pub struct LongTail {
    started: usize,
    took: Vec<std::time::Duration>,
    hedges_left: usize,
}

impl LongTail {
    /// How many times the median put a slow one may take.
    pub const FACTOR: u32 = 3;
    /// The cut is never shorter than this.
    pub const MIN: std::time::Duration = std::time::Duration::from_secs(2);

    /// A round of `started` puts.
    pub fn new(started: usize) -> LongTail {
        LongTail { started, took: Vec::new(), hedges_left: (started / 4).max(2) }
    }

    /// A put of the round ended (a receipt or a failure) `took` after the round began.
    pub fn ended(&mut self, took: std::time::Duration) {
        self.took.push(took);
    }

    /// How long after the round began the puts still running are hedged;
    /// `None` until half of the round's puts have ended.
    pub fn cut(&self) -> Option<std::time::Duration> {
        if self.took.is_empty() || self.took.len() * 2 < self.started {
            return None;
        }
        let mut t = self.took.clone();
        t.sort();
        Some((t[t.len() / 2] * Self::FACTOR).max(Self::MIN))
    }

    /// Whether the round has hedges left.
    pub fn has_hedges(&self) -> bool {
        self.hedges_left > 0
    }

    /// Whether one more hedge may start this round (counted if so).
    pub fn may_hedge(&mut self) -> bool {
        let ok = self.hedges_left > 0;
        self.hedges_left = self.hedges_left.saturating_sub(1);
        ok
    }
}

#[derive(Debug, Clone)]
struct Slot {
    shard: usize,
    peer: Option<PeerId>,
    why: Vec<String>,
}

/// One segment's placement, round by round.
#[derive(Debug)]
pub struct SegmentPlan {
    shard_len: u64,
    /// Shards below this index carry data (direct peers preferred).
    data: usize,
    /// Shards this plan places.
    total: usize,
    slots: Vec<Slot>,
    /// Peers that hold or failed a shard of this segment (never asked twice).
    used: HashSet<PeerId>,
    spread: Spread,
    round: usize,
}

impl SegmentPlan {
    /// The first assignment of segment `index`'s `n` shards (`data` of them
    /// data shards). It turns with the segment: every peer holds data shards
    /// (the ones devices read) in most segments, not parity in all of them;
    /// and directly reachable peers get the data shards where there are
    /// enough of them.
    pub fn new(index: usize, n: usize, data: usize, shard_len: u64, pool: &Pool, rng: &mut impl Rng) -> SegmentPlan {
        let mut spread = Spread::new(pool.max_per_domain);
        let mut first = choose(n, shard_len, &pool.candidates, &pool.sticky, &HashSet::new(), &mut spread, rng);
        if !first.is_empty() {
            let turn = index % first.len();
            first.rotate_left(turn);
        }
        let direct = |p: &PeerId| pool.candidates.iter().any(|c| c.peer == *p && c.direct);
        first.sort_by_key(|p| !direct(p));
        let slots = (0..n).map(|i| Slot { shard: i, peer: first.get(i).copied(), why: Vec::new() }).collect();
        SegmentPlan { shard_len, data, total: n, slots, used: first.into_iter().collect(), spread, round: 0 }
    }

    /// A repair's plan: the `missing` shards of a segment whose other
    /// shards are held by `holders` (with their failure domains), which
    /// count against the cap and are never given a second shard.
    pub fn repair(
        shard_len: u64,
        data: usize,
        missing: &[usize],
        holders: &[(PeerId, Vec<String>)],
        pool: &Pool,
    ) -> SegmentPlan {
        let mut spread = Spread::new(pool.max_per_domain);
        for (_, d) in holders {
            spread.add(d);
        }
        let slots = missing.iter().map(|&i| Slot { shard: i, peer: None, why: Vec::new() }).collect();
        SegmentPlan {
            shard_len,
            data,
            total: missing.len(),
            slots,
            used: holders.iter().map(|(p, _)| *p).collect(),
            spread,
            round: 0,
        }
    }

    /// The puts of the next round, `(shard, peer)`: shards without a peer
    /// get one now if any is left. Empty when everything is placed or the
    /// rounds are used up.
    pub fn next_round(&mut self, pool: &mut Pool, rng: &mut impl Rng) -> Vec<(usize, PeerId)> {
        if self.slots.is_empty() || self.round >= ATTEMPTS {
            return Vec::new();
        }
        let open: Vec<usize> = self.slots.iter().filter(|s| s.peer.is_none()).map(|s| s.shard).collect();
        for shard in open {
            let pick = self.pick(shard, pool, rng);
            let Some(slot) = self.slots.iter_mut().find(|s| s.shard == shard) else { continue };
            match pick {
                Some(peer) => {
                    slot.peer = Some(peer);
                    if self.round > 0 {
                        pool.retries += 1;
                    }
                }
                None => slot.why.push(
                    "no other live peer with room outside the failure domains that already hold their share"
                        .to_string(),
                ),
            }
        }
        self.round += 1;
        self.slots.iter().filter_map(|s| s.peer.map(|p| (s.shard, p))).collect()
    }

    /// A peer this segment has not used for `shard`: a data shard on a
    /// direct peer if one is left, else anywhere; within the caps per domain.
    fn pick(&mut self, shard: usize, pool: &Pool, rng: &mut impl Rng) -> Option<PeerId> {
        let mut pick = Vec::new();
        if shard < self.data {
            let direct: Vec<Candidate> = pool.candidates.iter().filter(|c| c.direct).cloned().collect();
            pick = choose(1, self.shard_len, &direct, &pool.sticky, &self.used, &mut self.spread, rng);
        }
        if pick.is_empty() {
            pick = choose(1, self.shard_len, &pool.candidates, &pool.sticky, &self.used, &mut self.spread, rng);
        }
        let peer = *pick.first()?;
        self.used.insert(peer);
        Some(peer)
    }

    /// A second peer for `shard`, whose put is taking too long (see
    /// [`LongTail`]): chosen as a retry would be, while the first put stays
    /// in flight. The first receipt is kept; the other put is cancelled
    /// ([`SegmentPlan::outrun`]). `None` when no peer is left.
    pub fn hedge(&mut self, shard: usize, pool: &mut Pool, rng: &mut impl Rng) -> Option<PeerId> {
        if !self.slots.iter().any(|s| s.shard == shard) {
            return None;
        }
        let peer = self.pick(shard, pool, rng)?;
        pool.hedged += 1;
        Some(peer)
    }

    /// `peer`'s put was cancelled because another peer signed for the same
    /// shard first: its domains are free for this segment again, and it
    /// weighs less for the rest of the job (it was the slow one).
    pub fn outrun(&mut self, peer: PeerId, pool: &mut Pool) {
        self.spread.remove(&pool.domains_of(&peer));
        pool.sticky.retain(|p| *p != peer);
        if let Some(c) = pool.candidates.iter_mut().find(|c| c.peer == peer) {
            c.weight = (c.weight / 16).max(1);
        }
    }

    /// `peer` stored `shard` and signed for it.
    pub fn placed(&mut self, shard: usize, peer: PeerId, pool: &mut Pool) {
        self.slots.retain(|s| s.shard != shard);
        if let Some(c) = pool.candidates.iter_mut().find(|c| c.peer == peer) {
            c.free = c.free.saturating_sub(self.shard_len);
        }
        if !pool.sticky.contains(&peer) {
            pool.sticky.push(peer);
        }
    }

    /// `peer` failed to store `shard`, for `reason`: its domains are free
    /// for this segment again.
    pub fn failed(&mut self, shard: usize, peer: PeerId, reason: String, kind: Failure, pool: &mut Pool) {
        self.spread.remove(&pool.domains_of(&peer));
        if kind == Failure::Drop {
            pool.candidates.retain(|c| c.peer != peer);
            pool.sticky.retain(|p| *p != peer);
        }
        if let Some(s) = self.slots.iter_mut().find(|s| s.shard == shard) {
            s.why.push(reason);
            s.peer = None;
        }
    }

    /// Shards placed, and each one left unplaced with its reasons.
    pub fn finish(self) -> (u64, Vec<(usize, String)>) {
        let placed = (self.total - self.slots.len()) as u64;
        let left = self
            .slots
            .into_iter()
            .map(|s| (s.shard, if s.why.is_empty() { "no peer".to_string() } else { s.why.join("; ") }))
            .collect();
        (placed, left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn pool(n: usize) -> Pool {
        Pool::new((0..n).map(|_| Candidate::new(PeerId::random(), 1 << 30)).collect())
    }

    #[test]
    fn the_long_tail_cut_waits_for_half_the_round_then_allows_a_few_hedges() {
        use std::time::Duration;
        let mut t = LongTail::new(8);
        for ms in [100, 200, 300] {
            t.ended(Duration::from_millis(ms));
            assert_eq!(t.cut(), None, "fewer than half ended");
        }
        t.ended(Duration::from_millis(900));
        assert_eq!(t.cut(), Some(LongTail::MIN), "3 x the median is under the floor");
        for ms in [2000, 2500, 3000] {
            t.ended(Duration::from_millis(ms));
        }
        assert_eq!(t.cut(), Some(Duration::from_millis(2700)), "3 x the median (0.9 s)");
        assert!(t.may_hedge() && t.may_hedge(), "a quarter of 8 puts: 2 hedges");
        assert!(!t.may_hedge(), "no third");
    }

    #[test]
    fn a_hedge_goes_to_an_unused_peer_and_the_outrun_one_weighs_less() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut pool = pool(6);
        let mut plan = SegmentPlan::new(0, 4, 2, 100, &pool, &mut rng);
        let first = plan.next_round(&mut pool, &mut rng);
        let (slow_shard, slow) = first[3];
        for &(i, p) in &first[..3] {
            plan.placed(i, p, &mut pool);
        }
        let hedge = plan.hedge(slow_shard, &mut pool, &mut rng).expect("a spare peer");
        assert!(!first.iter().any(|(_, p)| *p == hedge), "not a peer of this segment");
        assert_eq!(pool.hedged, 1);
        plan.placed(slow_shard, hedge, &mut pool);
        plan.outrun(slow, &mut pool);
        let w = pool.candidates.iter().find(|c| c.peer == slow).map(|c| c.weight);
        assert_eq!(w, Some((1u64 << 30) / 16));
        assert!(!pool.sticky.contains(&slow));
        assert!(plan.hedge(slow_shard, &mut pool, &mut rng).is_none(), "a placed shard is not hedged");
        assert_eq!(plan.finish(), (4, vec![]));
    }

    #[test]
    fn a_refused_shard_goes_to_a_peer_not_yet_used_and_counts_as_a_retry() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pool = pool(5);
        let mut plan = SegmentPlan::new(0, 3, 3, 100, &pool, &mut rng);
        let first = plan.next_round(&mut pool, &mut rng);
        assert_eq!(first.len(), 3);
        let bad = first[1].1;
        plan.placed(first[0].0, first[0].1, &mut pool);
        plan.placed(first[2].0, first[2].1, &mut pool);
        plan.failed(first[1].0, bad, "full".into(), Failure::Drop, &mut pool);
        let second = plan.next_round(&mut pool, &mut rng);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0, first[1].0, "the same shard");
        assert!(!first.iter().any(|(_, p)| *p == second[0].1), "a peer this segment has not used");
        assert!(!pool.candidates.iter().any(|c| c.peer == bad), "a dropped peer leaves the pool");
        assert_eq!(pool.retries, 1);
        plan.placed(second[0].0, second[0].1, &mut pool);
        assert!(plan.next_round(&mut pool, &mut rng).is_empty(), "all placed");
        assert_eq!(plan.finish(), (3, vec![]));
        assert_eq!(pool.sticky.len(), 3);
    }

    #[test]
    fn a_busy_peer_stays_in_the_pool_for_other_segments() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut pool = pool(3);
        let mut plan = SegmentPlan::new(0, 1, 1, 100, &pool, &mut rng);
        let (shard, peer) = plan.next_round(&mut pool, &mut rng)[0];
        plan.failed(shard, peer, "busy".into(), Failure::Passing, &mut pool);
        assert!(pool.candidates.iter().any(|c| c.peer == peer));
    }

    #[test]
    fn what_cannot_be_placed_after_every_round_is_named_with_its_reasons() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut pool = pool(ATTEMPTS + 10);
        let mut plan = SegmentPlan::new(4, 2, 2, 100, &pool, &mut rng);
        let mut rounds = 0;
        loop {
            let puts = plan.next_round(&mut pool, &mut rng);
            if puts.is_empty() {
                break;
            }
            rounds += 1;
            for (i, (shard, peer)) in puts.into_iter().enumerate() {
                if shard == 0 {
                    plan.placed(shard, peer, &mut pool);
                } else {
                    plan.failed(shard, peer, format!("refused {i}"), Failure::Drop, &mut pool);
                }
            }
        }
        assert_eq!(rounds, ATTEMPTS);
        let (placed, left) = plan.finish();
        assert_eq!(placed, 1);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 1);
        assert_eq!(left[0].1.matches("refused").count(), ATTEMPTS);
    }

    #[test]
    fn the_first_assignment_turns_with_the_segment() {
        let mut pool = pool(4);
        pool.sticky = pool.candidates.iter().map(|c| c.peer).collect();
        let order = |index| {
            let mut p = SegmentPlan::new(index, 4, 4, 1, &pool.clone(), &mut rand::rngs::StdRng::seed_from_u64(5));
            p.next_round(&mut pool.clone(), &mut rand::rngs::StdRng::seed_from_u64(5))
        };
        let (a, b) = (order(0), order(1));
        assert_eq!(a[1].1, b[0].1, "segment 1 starts where segment 0's second shard was");
    }

    #[test]
    fn with_no_peer_left_a_shard_says_so() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut pool = Pool::new(Vec::new());
        let mut plan = SegmentPlan::new(0, 1, 1, 1, &pool, &mut rng);
        while !plan.next_round(&mut pool, &mut rng).is_empty() {}
        let (placed, left) = plan.finish();
        assert_eq!(placed, 0);
        assert!(left[0].1.contains("no other live peer with room"));
    }

    fn free() -> Spread {
        Spread::new(usize::MAX)
    }

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn distinct_sticky_first_and_weighted() {
        let ps = peers(10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cands: Vec<Candidate> =
            ps.iter().enumerate().map(|(i, p)| Candidate::new(*p, if i == 9 { 0 } else { 1000 })).collect();
        // Distinct, never the full one.
        for _ in 0..50 {
            let got = choose(6, 10, &cands, &[], &HashSet::new(), &mut free(), &mut rng);
            assert_eq!(got.len(), 6);
            assert_eq!(got.iter().collect::<HashSet<_>>().len(), 6);
            assert!(!got.contains(&ps[9]));
        }
        // Sticky peers come first; excluded never.
        let exclude: HashSet<PeerId> = [ps[1]].into_iter().collect();
        let got = choose(4, 10, &cands, &[ps[0], ps[1], ps[2]], &exclude, &mut free(), &mut rng);
        assert_eq!(&got[..2], &[ps[0], ps[2]]);
        assert!(!got.contains(&ps[1]));
        // Not enough room: fewer than asked.
        assert_eq!(choose(6, 5000, &cands, &[], &HashSet::new(), &mut free(), &mut rng).len(), 0);
        // Weighting: a peer with 9x the free space is picked far more often.
        let two = vec![Candidate::new(ps[0], 9000), Candidate::new(ps[1], 1000)];
        let big =
            (0..2000).filter(|_| choose(1, 1, &two, &[], &HashSet::new(), &mut free(), &mut rng)[0] == ps[0]).count();
        assert!((1600..1950).contains(&big), "{big}");
    }

    #[test]
    fn a_household_of_three_never_gets_more_than_its_cap_of_a_segment() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut cands: Vec<Candidate> = (0..9)
            .map(|i| {
                let mut c = Candidate::new(PeerId::random(), 1 << 30);
                c.domains = vec![format!("h:{i}")];
                c
            })
            .collect();
        // Three peers behind one address, with a huge weight to tempt the draw.
        for c in cands.iter_mut().take(3) {
            c.domains = vec!["h:home".into()];
            c.weight = 1 << 40;
        }
        let home: Vec<PeerId> = cands.iter().take(3).map(|c| c.peer).collect();
        let mut pool = Pool::new(cands);
        pool.max_per_domain = 2;
        for seg in 0..50 {
            let mut plan = SegmentPlan::new(seg, 6, 4, 100, &pool, &mut rng);
            let puts = plan.next_round(&mut pool.clone(), &mut rng);
            assert_eq!(puts.len(), 6);
            assert!(puts.iter().filter(|(_, p)| home.contains(p)).count() <= 2, "{puts:?}");
        }
        // Too few domains for 8 shards at 2 each with 7 households: 6 + 2 = 8 fits; 9 does not.
        assert_eq!(pool.spreadable(9), 8);
    }

    #[test]
    fn data_shards_go_to_direct_peers_and_parity_to_relayed_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let cands: Vec<Candidate> = (0..6)
            .map(|i| {
                let mut c = Candidate::new(PeerId::random(), 1 << 30);
                c.direct = i % 2 == 0;
                c
            })
            .collect();
        let direct: HashSet<PeerId> = cands.iter().filter(|c| c.direct).map(|c| c.peer).collect();
        let mut pool = Pool::new(cands);
        for seg in 0..10 {
            let mut plan = SegmentPlan::new(seg, 6, 3, 100, &pool, &mut rng);
            for (shard, peer) in plan.next_round(&mut pool, &mut rng) {
                assert_eq!(shard < 3, direct.contains(&peer), "shard {shard}");
            }
        }
    }

    #[test]
    fn a_repair_skips_the_holders_and_their_domains() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let cands: Vec<Candidate> = (0..6)
            .map(|i| {
                let mut c = Candidate::new(PeerId::random(), 1 << 30);
                c.domains = vec![format!("h:{}", i / 2)];
                c
            })
            .collect();
        let holders = vec![(cands[0].peer, cands[0].domains.clone()), (cands[2].peer, cands[2].domains.clone())];
        let mut pool = Pool::new(cands.clone());
        pool.max_per_domain = 1;
        let mut plan = SegmentPlan::repair(100, 2, &[1, 3], &holders, &pool);
        let puts = plan.next_round(&mut pool, &mut rng);
        let got: HashSet<PeerId> = puts.iter().map(|(_, p)| *p).collect();
        assert_eq!(puts.len(), 1, "households 0 and 1 are taken; only household 2 is left: {puts:?}");
        assert!(got.is_subset(&[cands[4].peer, cands[5].peer].into_iter().collect()));
    }
}
