//! Choosing peers for a segment's shards (pure).
//!
//! Each segment's n shards go to n distinct peers. Peers already holding
//! shards of the same object are preferred (an object touches few peers
//! overall, so a device talks to few peers and a lost peer hurts few
//! objects); the rest are drawn at random, weighted by free capacity.

use std::collections::HashSet;

use net::PeerId;
use rand::Rng;

/// A peer that may take shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// Bytes it has free.
    pub free: u64,
}

/// Up to `n` distinct peers with room for `shard_len` bytes: first from
/// `sticky` (in order), then drawn weighted by free space. Never one in
/// `exclude`. Fewer than `n` when there are not enough.
pub fn choose(
    n: usize,
    shard_len: u64,
    candidates: &[Candidate],
    sticky: &[PeerId],
    exclude: &HashSet<PeerId>,
    rng: &mut impl Rng,
) -> Vec<PeerId> {
    let fits = |c: &Candidate| c.free >= shard_len && !exclude.contains(&c.peer);
    let mut out: Vec<PeerId> = Vec::with_capacity(n);
    for p in sticky {
        if out.len() == n {
            return out;
        }
        if !out.contains(p) && candidates.iter().any(|c| c.peer == *p && fits(c)) {
            out.push(*p);
        }
    }
    let mut pool: Vec<&Candidate> = candidates.iter().filter(|c| fits(c) && !out.contains(&c.peer)).collect();
    while out.len() < n && !pool.is_empty() {
        let total: u128 = pool.iter().map(|c| u128::from(c.free)).sum();
        let mut pick = rng.random_range(0..total.max(1));
        let mut idx = pool.len() - 1;
        for (i, c) in pool.iter().enumerate() {
            if pick < u128::from(c.free) {
                idx = i;
                break;
            }
            pick -= u128::from(c.free);
        }
        out.push(pool.swap_remove(idx).peer);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn distinct_sticky_first_and_weighted() {
        let ps = peers(10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cands: Vec<Candidate> =
            ps.iter().enumerate().map(|(i, p)| Candidate { peer: *p, free: if i == 9 { 0 } else { 1000 } }).collect();
        // Distinct, never the full one.
        for _ in 0..50 {
            let got = choose(6, 10, &cands, &[], &HashSet::new(), &mut rng);
            assert_eq!(got.len(), 6);
            assert_eq!(got.iter().collect::<HashSet<_>>().len(), 6);
            assert!(!got.contains(&ps[9]));
        }
        // Sticky peers come first; excluded never.
        let exclude: HashSet<PeerId> = [ps[1]].into_iter().collect();
        let got = choose(4, 10, &cands, &[ps[0], ps[1], ps[2]], &exclude, &mut rng);
        assert_eq!(&got[..2], &[ps[0], ps[2]]);
        assert!(!got.contains(&ps[1]));
        // Not enough room: fewer than asked.
        assert_eq!(choose(6, 5000, &cands, &[], &HashSet::new(), &mut rng).len(), 0);
        // Weighting: a peer with 9x the free space is picked far more often.
        let two = vec![Candidate { peer: ps[0], free: 9000 }, Candidate { peer: ps[1], free: 1000 }];
        let big = (0..2000).filter(|_| choose(1, 1, &two, &[], &HashSet::new(), &mut rng)[0] == ps[0]).count();
        assert!((1600..1950).contains(&big), "{big}");
    }
}
