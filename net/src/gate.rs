//! What a node lets others make it hold: requests served at once (per peer
//! and in all) and bytes of answers and bodies held in memory (per peer and
//! in all). A stranger's request costs a bounded amount before it is
//! refused; a request that would go over a bound is answered `Busy` at once
//! instead of waiting, so a flood cannot queue up memory either.
//!
//! Peer ids cost nothing to make: strangers together never take the last
//! quarter of the slots nor of the bytes. Those stay for the SPNs this node
//! trusts, whose puts, audits and status checks must get through a flood
//! (an audit answered `Busy` counts against the node, and enough of them
//! have its shards moved away).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;

/// The bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Requests served at once for one peer.
    pub(crate) per_peer: usize,
    /// Requests served at once in all.
    pub(crate) total: usize,
    /// Bytes held for one untrusted peer's requests.
    pub(crate) bytes_per_peer: u64,
    /// Bytes held for all requests.
    pub(crate) bytes_total: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Per peer: requests in service, bytes held.
    peers: HashMap<PeerId, (usize, u64)>,
    requests: usize,
    bytes: u64,
    /// Of those, the strangers' (peers this node does not trust).
    stranger_requests: usize,
    stranger_bytes: u64,
}

/// The share of the slots and bytes strangers may take together: the rest
/// stays for trusted peers.
fn strangers_share(all: u64) -> u64 {
    all - all / 4
}

/// The counters, shared by the request-response path and the stream protocols.
#[derive(Debug)]
pub(crate) struct Gate {
    bounds: Bounds,
    state: Mutex<State>,
}

/// One request in service; gives back its slot and its bytes when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    peer: PeerId,
    trusted: bool,
    bytes: u64,
}

impl Gate {
    pub(crate) fn new(bounds: Bounds) -> Arc<Gate> {
        Arc::new(Gate { bounds, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one request of `peer` (`trusted`: an SPN this node
    /// trusts), or `None` if it, the strangers or the node have too many.
    pub(crate) fn enter(self: &Arc<Self>, peer: PeerId, trusted: bool) -> Option<Ticket> {
        let mut st = self.lock();
        let mine = st.peers.get(&peer).map_or(0, |p| p.0);
        let strangers_full = st.stranger_requests as u64 >= strangers_share(self.bounds.total as u64);
        if mine >= self.bounds.per_peer || st.requests >= self.bounds.total || (!trusted && strangers_full) {
            return None;
        }
        st.requests += 1;
        if !trusted {
            st.stranger_requests += 1;
        }
        st.peers.entry(peer).or_default().0 += 1;
        Some(Ticket { gate: self.clone(), peer, trusted, bytes: 0 })
    }

    /// Requests in service now (a stopping node waits for them).
    pub(crate) fn in_service(&self) -> usize {
        self.lock().requests
    }
}

impl Ticket {
    /// Hold `bytes` more for this request. A trusted peer (an SPN putting a
    /// shard; as the ticket was given) is bound only by the node's total;
    /// others also by their own share and the strangers' share. False, and
    /// nothing held, if that would go over.
    pub(crate) fn hold(&mut self, bytes: u64) -> bool {
        let gate = self.gate.clone();
        let mut st = gate.lock();
        let mine = st.peers.get(&self.peer).map_or(0, |p| p.1);
        let over_stranger = !self.trusted
            && (mine + bytes > gate.bounds.bytes_per_peer
                || st.stranger_bytes + bytes > strangers_share(gate.bounds.bytes_total));
        if st.bytes + bytes > gate.bounds.bytes_total || over_stranger {
            return false;
        }
        st.bytes += bytes;
        if !self.trusted {
            st.stranger_bytes += bytes;
        }
        st.peers.entry(self.peer).or_default().1 += bytes;
        self.bytes += bytes;
        true
    }

    /// Whose request this is.
    pub(crate) fn peer(&self) -> PeerId {
        self.peer
    }

    /// Bytes held by this request.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        st.requests = st.requests.saturating_sub(1);
        st.bytes = st.bytes.saturating_sub(self.bytes);
        if !self.trusted {
            st.stranger_requests = st.stranger_requests.saturating_sub(1);
            st.stranger_bytes = st.stranger_bytes.saturating_sub(self.bytes);
        }
        if let Some(p) = st.peers.get_mut(&self.peer) {
            p.0 = p.0.saturating_sub(1);
            p.1 = p.1.saturating_sub(self.bytes);
            if p.0 == 0 {
                st.peers.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Arc<Gate> {
        Gate::new(Bounds { per_peer: 2, total: 3, bytes_per_peer: 100, bytes_total: 250 })
    }

    #[test]
    fn slots_are_bounded_per_peer_and_in_all_and_come_back() {
        let g = gate();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t1 = g.enter(a, true).expect("first");
        let _t2 = g.enter(a, true).expect("second");
        assert!(g.enter(a, true).is_none(), "a third for the same peer");
        let _t3 = g.enter(b, true).expect("another peer");
        assert!(g.enter(b, true).is_none(), "over the node's total");
        drop(t1);
        assert!(g.enter(a, true).is_some(), "a freed slot is usable again");
    }

    /// Many made-up peer ids, each within its own bounds, take every slot
    /// and byte strangers may: the trusted SPN still gets a slot and room
    /// for its put (its audits were answered `Busy`, and counted against
    /// the node).
    #[test]
    fn strangers_with_many_peer_ids_cannot_lock_out_a_trusted_spn() {
        let g = Gate::new(Bounds { per_peer: 2, total: 8, bytes_per_peer: 100, bytes_total: 400 });
        let mut held = Vec::new();
        for _ in 0..100 {
            let Some(mut t) = g.enter(PeerId::random(), false) else { continue };
            t.hold(100);
            held.push(t);
        }
        assert_eq!(held.len(), 6, "strangers hold three quarters of the slots");
        assert_eq!(g.lock().stranger_bytes, 300, "and of the bytes");
        let spn = PeerId::random();
        let mut s = g.enter(spn, true).expect("the SPN gets a slot");
        assert!(s.hold(100), "and room for its put");
        drop(held);
        assert!(s.hold(300), "all the rest once the strangers are gone");
        drop(s);
        let st = g.lock();
        assert_eq!((st.requests, st.bytes, st.stranger_requests, st.stranger_bytes), (0, 0, 0, 0));
    }

    #[test]
    fn bytes_are_bounded_per_untrusted_peer_and_in_all() {
        let g = gate();
        let (a, spn) = (PeerId::random(), PeerId::random());
        let mut t = g.enter(a, false).expect("slot");
        assert!(t.hold(80));
        assert!(!t.hold(30), "over the peer's share");
        assert_eq!(t.held(), 80);
        let mut s = g.enter(spn, true).expect("slot");
        assert!(s.hold(170), "a trusted peer is bound by the total only");
        assert!(!s.hold(1), "over the total");
        drop(t);
        assert!(s.hold(80), "bytes come back when a ticket goes");
        drop(s);
        assert_eq!(g.lock().bytes, 0);
        assert!(g.lock().peers.is_empty());
    }
}
