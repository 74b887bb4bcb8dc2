//! What a node lets others make it hold: requests served at once (per peer
//! and in all) and bytes of answers and bodies held in memory (per peer and
//! in all). A stranger's request costs a bounded amount before it is
//! refused; a request that would go over a bound is answered `Busy` at once
//! instead of waiting, so a flood cannot queue up memory either.

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
    bytes: u64,
}

impl Gate {
    pub(crate) fn new(bounds: Bounds) -> Arc<Gate> {
        Arc::new(Gate { bounds, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one request of `peer`, or `None` if it or the node has too many.
    pub(crate) fn enter(self: &Arc<Self>, peer: PeerId) -> Option<Ticket> {
        let mut st = self.lock();
        let mine = st.peers.get(&peer).map_or(0, |p| p.0);
        if mine >= self.bounds.per_peer || st.requests >= self.bounds.total {
            return None;
        }
        st.requests += 1;
        st.peers.entry(peer).or_default().0 += 1;
        Some(Ticket { gate: self.clone(), peer, bytes: 0 })
    }

    /// Requests in service now (a stopping node waits for them).
    pub(crate) fn in_service(&self) -> usize {
        self.lock().requests
    }
}

impl Ticket {
    /// Hold `bytes` more for this request. A trusted peer (an SPN putting a
    /// shard) is bound only by the node's total; others also by their own
    /// share. False, and nothing held, if that would go over.
    pub(crate) fn hold(&mut self, bytes: u64, trusted: bool) -> bool {
        let gate = self.gate.clone();
        let mut st = gate.lock();
        let mine = st.peers.get(&self.peer).map_or(0, |p| p.1);
        if st.bytes + bytes > gate.bounds.bytes_total || (!trusted && mine + bytes > gate.bounds.bytes_per_peer) {
            return false;
        }
        st.bytes += bytes;
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
        let t1 = g.enter(a).expect("first");
        let _t2 = g.enter(a).expect("second");
        assert!(g.enter(a).is_none(), "a third for the same peer");
        let _t3 = g.enter(b).expect("another peer");
        assert!(g.enter(b).is_none(), "over the node's total");
        drop(t1);
        assert!(g.enter(a).is_some(), "a freed slot is usable again");
    }

    #[test]
    fn bytes_are_bounded_per_untrusted_peer_and_in_all() {
        let g = gate();
        let (a, spn) = (PeerId::random(), PeerId::random());
        let mut t = g.enter(a).expect("slot");
        assert!(t.hold(80, false));
        assert!(!t.hold(30, false), "over the peer's share");
        assert_eq!(t.held(), 80);
        let mut s = g.enter(spn).expect("slot");
        assert!(s.hold(170, true), "a trusted peer is bound by the total only");
        assert!(!s.hold(1, true), "over the total");
        drop(t);
        assert!(s.hold(80, true), "bytes come back when a ticket goes");
        drop(s);
        assert_eq!(g.lock().bytes, 0);
        assert!(g.lock().peers.is_empty());
    }
}
