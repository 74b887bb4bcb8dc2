//! Durability decisions without I/O: the settings, a peer's status and
//! failure domains, what it has proven, the repair thresholds, which blocks
//! an audit asks for and what audits cost. The loops that act on them are
//! in `heartbeat`, `audit` and `repair`.
//!
//! # Audits: how many blocks, and what they catch
//! An audit asks one peer for `c` blocks of 4 KiB drawn uniformly at random
//! over every byte of ours it holds (seeded by the ledger's newest final
//! block hash when the SPN follows a chain, else a fresh seed from the OS:
//! either way the peer cannot know which), and checks each block's range proof
//! against its shard's CID. If the peer has lost a fraction `f` of those
//! blocks (whole shards or parts of them), one audit misses every lost
//! block with probability `(1 − f)^c`, so it catches the loss with
//! `1 − (1 − f)^c`: with `c = 100`, f = 1% → 63%, f = 5% → 99.4%, f = 10% →
//! 99.997%. Audits repeat at random times (every [`Settings::audit_every`]
//! on average), so a loss that one audit misses is caught by the next ones:
//! after `r` audits, `1 − (1 − f)^(c·r)`.
//!
//! A block costs 4 KiB plus its proof (about 64 bytes per level of the
//! shard's tree, see `block_cost`). At the defaults (c = 100, one audit
//! every 6 hours), a peer holding 1 GiB of ours sends about 2 MB a day:
//! 0.2% of what it holds. For a peer holding little, `c` shrinks so that its
//! audits stay within [`Settings::audit_budget`] (0.5% a day) of what it
//! holds (at least one block); `ionshard spn health` prints the total.
//!
//! # Repair thresholds
//! Storj's four numbers per object: k needed, a repair threshold, a success
//! threshold, n. A segment whose healthy shards (held by a peer that is
//! neither lost, disqualified nor retiring, and that passed its audits of
//! them) fall to the repair threshold is rebuilt up to the success
//! threshold (n). The default threshold is `k + ⌈m / 2⌉`: with 10+6, repair
//! starts after 3 losses, while 3 more can still go before the segment is
//! unreadable.

use std::ops::Range;
use std::time::Duration;

use chunker::Cid;
use proto::api::PeerRecord;
use rand::Rng;

/// Bytes per audited block.
pub(crate) const BLOCK: u64 = 4096;

/// The SPN's durability settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How often every peer is asked for its usage (the heartbeat).
    pub heartbeat: Duration,
    /// Unseen this long, a peer is lost: its shards are repaired elsewhere.
    pub grace: Duration,
    /// Mean time between two audits of one peer (each is drawn at random
    /// between half and one and a half times this).
    pub audit_every: Duration,
    /// Blocks per audit, at most.
    pub audit_blocks: u32,
    /// Blocks per audit, at least, whatever the budget allows (1 by
    /// default; a test network holding a few megabytes and auditing every
    /// few seconds raises it so that one lost shard is caught quickly).
    pub audit_min_blocks: u32,
    /// Audit traffic per day, at most, as a share of what a peer holds.
    pub audit_budget: f64,
    /// How long a peer has to answer an audit.
    pub audit_timeout: Duration,
    /// Failed audits among the last 16 that disqualify a peer for good.
    pub disqualify_after: u32,
    /// How often segments are checked for repair.
    pub repair_every: Duration,
    /// Repair bandwidth (bytes read plus written per second), so that a
    /// large loss does not starve publishes and fetches.
    pub repair_rate: u64,
    /// Repair when a segment's healthy shards fall to this many more than
    /// k (`None`: ⌈m / 2⌉).
    pub repair_margin: Option<u8>,
    /// Let a segment put more than m shards in one failure domain when the
    /// network has too few domains (the operator's choice; off by default).
    pub relax_domains: bool,
    /// A new peer's allowance before it has proven anything (bytes it may
    /// be weighted by); it grows with what it holds and passes audits for.
    pub vetting_bytes: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            heartbeat: Duration::from_secs(30),
            grace: Duration::from_secs(4 * 3600),
            audit_every: Duration::from_secs(6 * 3600),
            audit_blocks: 100,
            audit_min_blocks: 1,
            audit_budget: 0.005,
            audit_timeout: Duration::from_secs(30),
            disqualify_after: 3,
            repair_every: Duration::from_secs(60),
            repair_rate: 16 << 20,
            repair_margin: None,
            relax_domains: false,
            vetting_bytes: 1 << 30,
        }
    }
}

impl Settings {
    /// Settings for tests and the sandbox: heartbeats every second, lost
    /// after `grace`, audits every few seconds, repair every second.
    pub fn quick(grace: Duration) -> Settings {
        Settings {
            heartbeat: Duration::from_secs(1),
            grace,
            audit_every: Duration::from_secs(4),
            audit_timeout: Duration::from_secs(5),
            repair_every: Duration::from_secs(1),
            repair_rate: 256 << 20,
            audit_budget: 1.0,
            ..Settings::default()
        }
    }

    /// The repair and success thresholds of a k+m coding.
    pub fn thresholds(&self, k: u8, m: u8) -> (u8, u8) {
        let margin = self.repair_margin.unwrap_or(m.div_ceil(2)).min(m.saturating_sub(1));
        (k.saturating_add(margin), k.saturating_add(m))
    }

    /// What `ionshard spn health` prints of these.
    pub(crate) fn view(&self) -> proto::api::DurabilitySettings {
        proto::api::DurabilitySettings {
            heartbeat_secs: self.heartbeat.as_secs(),
            grace_secs: self.grace.as_secs(),
            audit_every_secs: self.audit_every.as_secs(),
            audit_blocks: self.audit_blocks,
            disqualify_after: self.disqualify_after,
            repair_rate: self.repair_rate,
        }
    }
}

/// Unseen past the grace period.
pub(crate) fn is_lost(p: &PeerRecord, now: u64, s: &Settings) -> bool {
    p.last_seen.saturating_add(s.grace.as_secs()) < now
}

/// Its shards count toward a segment's health: not lost, disqualified or retiring.
pub(crate) fn is_healthy(p: &PeerRecord, now: u64, s: &Settings) -> bool {
    p.disqualified.is_none() && !p.retiring && !is_lost(p, now, s)
}

/// What the SPN makes of `p` now (see [`PeerRecord::status`]).
pub(crate) fn status(p: &PeerRecord, now: u64, s: &Settings) -> &'static str {
    if p.disqualified.is_some() {
        "disqualified"
    } else if p.retiring {
        if p.shards == 0 { "retired" } else { "retiring" }
    } else if is_lost(p, now, s) {
        "lost"
    } else if p.returned.is_some_and(|t| t.saturating_add(s.grace.as_secs()) >= now) {
        "returning"
    } else if p.failures > 0 || p.last_seen.saturating_add(3 * s.heartbeat.as_secs().max(1)) < now {
        "offline"
    } else {
        "live"
    }
}

/// The failure domains of a peer: its household (the address it was seen
/// at), its network (that address's /24, or /48 for IPv6; a loopback
/// address stands for a home of its own in tests), and the region and
/// operator its SPN's operator set. A peer seen only through a relay is a
/// household of its own until a direct connection shows where it is.
pub(crate) fn domains(p: &PeerRecord) -> Vec<String> {
    let mut out = Vec::new();
    match p.address.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            out.push(format!("h:{ip}"));
            out.push(format!("n:{}", network_of(ip)));
        }
        Err(_) => out.push(format!("h:peer:{}", p.peer)),
    }
    if !p.region.is_empty() {
        out.push(format!("r:{}", p.region));
    }
    if !p.operator.is_empty() {
        out.push(format!("o:{}", p.operator));
    }
    out
}

/// The network prefix an address belongs to.
pub(crate) fn network_of(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => format!("{v4}/32"),
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// How much placement weighs a peer: its free space, but no more than it
/// has earned: the vetting allowance plus twice what it holds and passed
/// audits for, times its uptime. A peer claiming a petabyte is weighed as
/// one with the allowance until it proves more.
pub(crate) fn weight(p: &PeerRecord, s: &Settings) -> u64 {
    let free = p.capacity.saturating_sub(p.used);
    let earned = s.vetting_bytes.saturating_add(p.proven_bytes.saturating_mul(2));
    (free.min(earned) as f64 * p.uptime().max(0.05)) as u64
}

/// Bytes one audited block costs on the wire in a shard of `shard_len`:
/// the block and its proof.
pub(crate) fn block_cost(shard_len: u64) -> u64 {
    let start = 0;
    BLOCK.min(shard_len) + chunker::proof::max_proof_len(shard_len, &[start..BLOCK.min(shard_len).max(1)])
}

/// Blocks to ask a peer holding `held` bytes (in shards of about
/// `shard_len`) for, so its audits stay within the budget (at least
/// [`Settings::audit_min_blocks`], at most [`Settings::audit_blocks`]).
pub(crate) fn blocks_for(held: u64, shard_len: u64, s: &Settings) -> u32 {
    let per_day = 86_400.0 / s.audit_every.as_secs_f64().max(1.0);
    let budget = held as f64 * s.audit_budget / per_day;
    let c = (budget / block_cost(shard_len.max(1)) as f64).floor();
    let most = s.audit_blocks.max(1);
    (c as u32).clamp(s.audit_min_blocks.clamp(1, most), most)
}

/// Audit bytes a day for a peer holding `held` bytes.
pub(crate) fn audit_bytes_per_day(held: u64, shard_len: u64, s: &Settings) -> u64 {
    if held == 0 {
        return 0;
    }
    let per_day = 86_400.0 / s.audit_every.as_secs_f64().max(1.0);
    (f64::from(blocks_for(held, shard_len, s)) * block_cost(shard_len.max(1)) as f64 * per_day) as u64
}

/// Which blocks to ask for: `c` blocks drawn uniformly over every byte of
/// `shards` (CID, length), grouped by shard, each a 4 KiB range (shorter
/// at a shard's end), sorted and without repeats.
pub(crate) fn audit_plan(shards: &[(Cid, u64)], c: u32, rng: &mut impl Rng) -> Vec<(Cid, u64, Vec<Range<u64>>)> {
    let blocks: Vec<u64> = shards.iter().map(|(_, len)| len.div_ceil(BLOCK)).collect();
    let total: u64 = blocks.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    let mut picked: Vec<Vec<u64>> = vec![Vec::new(); shards.len()];
    for _ in 0..c {
        let mut b = rng.random_range(0..total);
        for (i, n) in blocks.iter().enumerate() {
            if b < *n {
                picked[i].push(b);
                break;
            }
            b -= n;
        }
    }
    let mut out = Vec::new();
    for (i, mut bs) in picked.into_iter().enumerate() {
        if bs.is_empty() {
            continue;
        }
        bs.sort_unstable();
        bs.dedup();
        let (cid, len) = shards[i];
        let ranges = bs.into_iter().map(|b| b * BLOCK..((b + 1) * BLOCK).min(len)).collect();
        out.push((cid, len, ranges));
    }
    out
}

/// The chance a segment of `k` of `n` shards is unreadable when each
/// shard's peer is offline with probability `p`, independently: fewer than
/// k of n up.
pub fn unavailable(k: u32, n: u32, p: f64) -> f64 {
    // P(up < k) = Σ_{i<k} C(n,i) (1-p)^i p^(n-i)
    let mut sum = 0.0;
    for i in 0..k {
        sum += binomial(n, i) * (1.0 - p).powi(i as i32) * p.powi((n - i) as i32);
    }
    sum
}

fn binomial(n: u32, k: u32) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn peer() -> PeerRecord {
        PeerRecord::new("p".into(), 1000)
    }

    #[test]
    fn a_peer_is_offline_then_lost_then_returning() {
        let s = Settings { heartbeat: Duration::from_secs(10), grace: Duration::from_secs(100), ..Settings::default() };
        let mut p = peer();
        assert_eq!(status(&p, 1000, &s), "live");
        assert_eq!(status(&p, 1031, &s), "offline");
        assert!(is_healthy(&p, 1100, &s));
        assert_eq!(status(&p, 1101, &s), "lost");
        assert!(!is_healthy(&p, 1101, &s));
        p.last_seen = 1200;
        p.returned = Some(1200);
        assert_eq!(status(&p, 1200, &s), "returning");
        p.last_seen = 1301;
        assert_eq!(status(&p, 1301, &s), "live", "returning for a grace period, then as any other");
        p.disqualified = Some("failed audits".into());
        assert_eq!(status(&p, 1200, &s), "disqualified");
        assert!(!is_healthy(&p, 1200, &s));
    }

    #[test]
    fn the_default_repair_threshold_leaves_half_the_parity() {
        let s = Settings::default();
        assert_eq!(s.thresholds(10, 6), (13, 16));
        assert_eq!(s.thresholds(10, 4), (12, 14));
        assert_eq!(s.thresholds(29, 51), (55, 80));
        let eager = Settings { repair_margin: Some(200), ..Settings::default() };
        assert_eq!(eager.thresholds(4, 4), (7, 8), "at most n - 1: one loss repairs");
    }

    #[test]
    fn domains_come_from_the_observed_address_and_the_operators_labels() {
        let mut p = peer();
        assert_eq!(domains(&p), vec!["h:peer:p".to_string()]);
        p.address = "203.0.113.7".into();
        p.region = "eu".into();
        assert_eq!(domains(&p), vec!["h:203.0.113.7", "n:203.0.113.0/24", "r:eu"]);
        p.address = "127.0.0.5".into();
        assert_eq!(domains(&p)[1], "n:127.0.0.5/32", "loopback addresses are separate homes in tests");
    }

    #[test]
    fn a_claimed_petabyte_weighs_no_more_than_the_vetting_allowance() {
        let s = Settings::default();
        let mut liar = peer();
        liar.capacity = 1 << 50;
        let mut proven = peer();
        proven.capacity = 100 << 30;
        proven.proven_bytes = 10 << 30;
        assert_eq!(weight(&liar, &s), s.vetting_bytes);
        assert_eq!(weight(&proven, &s), s.vetting_bytes + (20 << 30));
        proven.window = 0b0101;
        proven.window_len = 4;
        assert_eq!(weight(&proven, &s), (s.vetting_bytes + (20 << 30)) / 2, "half the uptime, half the weight");
    }

    #[test]
    fn an_audit_spreads_its_blocks_over_the_bytes_held() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let big = Cid::of_raw(b"big");
        let small = Cid::of_raw(b"small");
        let shards = [(big, 1000 * BLOCK), (small, 10 * BLOCK + 5)];
        let mut hits = [0usize; 2];
        for _ in 0..200 {
            let plan = audit_plan(&shards, 20, &mut rng);
            for (cid, len, ranges) in plan {
                assert!(ranges.windows(2).all(|w| w[0].end <= w[1].start), "sorted, no repeats");
                assert!(ranges.iter().all(|r| r.end <= len && r.start < r.end));
                hits[usize::from(cid == small)] += ranges.len();
            }
        }
        // About 1% of the blocks are the small shard's.
        assert!(hits[1] > 0 && hits[1] * 30 < hits[0], "{hits:?}");
    }

    #[test]
    fn audit_traffic_stays_under_one_percent_a_day_at_the_defaults() {
        let s = Settings::default();
        for held in [1u64 << 20, 64 << 20, 1 << 30, 1 << 40] {
            let share = audit_bytes_per_day(held, 1 << 20, &s) as f64 / held as f64;
            // One block a day is the floor: a peer holding 1 MiB pays a few percent.
            if held >= 64 << 20 {
                assert!(share < 0.01, "{held}: {share}");
            }
        }
        assert_eq!(blocks_for(1 << 40, 1 << 20, &s), 100);
        assert!(blocks_for(64 << 20, 1 << 20, &s) < 100);
    }

    #[test]
    fn a_small_test_network_auditing_every_few_seconds_still_asks_for_the_floor() {
        // Held 10 MB, audited every 4 s: the budget allows less than a block.
        let mut s = Settings { audit_every: Duration::from_secs(4), ..Settings::default() };
        assert_eq!(blocks_for(10 << 20, 1 << 20, &s), 1);
        s.audit_min_blocks = 32;
        assert_eq!(blocks_for(10 << 20, 1 << 20, &s), 32);
        // The floor never exceeds the ceiling.
        s.audit_min_blocks = 500;
        assert_eq!(blocks_for(10 << 20, 1 << 20, &s), 100);
    }

    #[test]
    fn the_issues_figures_for_catching_a_loss_and_for_availability() {
        let caught = |f: f64, c: i32| 1.0 - (1.0 - f).powi(c);
        assert!((caught(0.05, 100) - 0.994).abs() < 0.001);
        // 10+4 at 10% offline: unavailable about 0.9% of the time.
        let u = unavailable(10, 14, 0.10);
        assert!((0.008..0.010).contains(&u), "{u}");
        // 10+6: well under a tenth of that.
        assert!(unavailable(10, 16, 0.10) < 0.001);
    }
}
