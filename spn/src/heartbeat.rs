//! Heartbeats: every [`Settings::heartbeat`](crate::Settings) the SPN asks
//! each peer the DHT knows for its status (usage, and whether its owner is
//! retiring it; peers of earlier releases are asked for usage), and keeps per peer when it last
//! answered, the last 64 answers (its uptime), where it was seen (the
//! remote address of a direct connection, never what the peer claims) and
//! whether it was reachable only through a relay. A peer unseen past the
//! grace period is *lost* (logged once); one that answers again is
//! *returning*. Lost and disqualified peers keep their record: they cannot
//! come back with a clean one.

use std::collections::HashMap;

use net::PeerId;

use crate::durability;
use crate::state::PeerRecord;
use crate::{Inner, now};

/// The IP address of a multiaddr (its first ip4 or ip6 part).
fn ip_of(addr: &net::Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        net::Protocol::Ip4(v4) => Some(v4.into()),
        net::Protocol::Ip6(v6) => Some(v6.into()),
        _ => None,
    })
}

/// Shift one heartbeat into a record's window.
fn beat(p: &mut PeerRecord, answered: bool) {
    p.window = (p.window << 1) | u64::from(answered);
    p.window_len = (p.window_len + 1).min(64);
}

impl Inner {
    /// One heartbeat round: ask every peer the DHT knows (and every peer
    /// we know of that holds shards) for its usage.
    pub(crate) async fn refresh_peers(&self) {
        let Ok(found) = self.client.peers().await else { return };
        let known: HashMap<String, PeerRecord> =
            self.state.peers().unwrap_or_default().into_iter().map(|p| (p.peer.clone(), p)).collect();
        let mut ids: Vec<PeerId> = found.into_iter().map(|p| p.peer).collect();
        // Holders the DHT has forgotten are asked too: they may be back.
        for (id, p) in &known {
            if p.held
                && let Ok(peer) = id.parse::<PeerId>()
                && !ids.contains(&peer)
            {
                ids.push(peer);
            }
        }
        let asks = ids.into_iter().map(|peer| {
            let client = self.client.clone();
            async move {
                let r = tokio::time::timeout(crate::publish::USAGE_TIMEOUT, client.peer_status(peer)).await;
                let link = client.link(peer).await.ok().flatten();
                (peer, r, link)
            }
        });
        let t = now();
        let settings = &self.settings;
        drop(known);
        for (peer, r, link) in futures::future::join_all(asks).await {
            let id = peer.to_string();
            let answered = match r {
                Ok(Ok(usage)) => Some(usage),
                // Bootstrap nodes and clients store nothing: not peers for placement.
                Ok(Err(net::Error::Refused { code: proto::wire::Code::NotFound, .. })) => continue,
                // It answered, too busy to say more: this round neither
                // counts for it nor against it.
                Ok(Err(net::Error::Refused { code: proto::wire::Code::Busy, .. })) => {
                    tracing::debug!(peer = %peer, "status: busy");
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, "status: {e}");
                    None
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "status: no answer within {:?}", crate::publish::USAGE_TIMEOUT);
                    None
                }
            };
            // Read, change and write in one transaction: an audit may have
            // changed the record since this round began.
            let saved = self.state.update_peer(&id, |cur| {
                let mut rec = match (cur, answered) {
                    (Some(k), _) => k,
                    (None, Some(_)) => PeerRecord::new(id.clone(), t),
                    (None, None) => return None,
                };
                match answered {
                    Some(st) => {
                        if rec.lost_since.take().is_some() {
                            rec.returned = Some(t);
                            tracing::warn!(peer = %id, "peer returning after it was lost");
                        }
                        if st.retiring != rec.retiring {
                            if st.retiring {
                                tracing::info!(peer = %id, shards = st.shards, "peer retiring: its shards move away");
                            } else {
                                tracing::info!(peer = %id, "peer no longer retiring");
                            }
                        }
                        rec.retiring = st.retiring;
                        rec.shards = st.shards;
                        rec.used = st.bytes;
                        rec.capacity = st.capacity;
                        rec.last_seen = t;
                        rec.failures = 0;
                        beat(&mut rec, true);
                        if let Some(link) = &link {
                            rec.relayed = link.relayed;
                            if let Some(ip) = link.remote.as_ref().and_then(ip_of) {
                                rec.address = ip.to_string();
                            }
                        }
                    }
                    None => {
                        rec.failures += 1;
                        beat(&mut rec, false);
                        if rec.lost_since.is_none() && durability::is_lost(&rec, t, settings) {
                            rec.lost_since = Some(t);
                            tracing::warn!(peer = %id, last_seen = rec.last_seen, "peer lost: unseen past the grace period");
                        }
                    }
                }
                rec.status = durability::status(&rec, t, settings).to_string();
                Some(rec)
            });
            if let Err(e) = saved {
                tracing::warn!("saving peer {id}: {e}");
            }
        }
        // Nodes that came and went without holding anything of ours; lost
        // peers that hold shards stay (repair needs their record).
        let before = now().saturating_sub(self.forget_idle_after.as_secs());
        match self.state.forget_idle_peers(before) {
            Ok(n) if n > 0 => tracing::info!("forgot {n} peer(s) unseen since {before} that never held a shard"),
            Ok(_) => {}
            Err(e) => tracing::warn!("forgetting idle peers: {e}"),
        }
    }
}

/// May take new shards now: answered its last heartbeat, within four
/// heartbeats (two minutes at the defaults), and is neither disqualified
/// nor retiring.
pub(crate) fn is_live(p: &PeerRecord, now: u64, s: &durability::Settings) -> bool {
    let recent = 4 * s.heartbeat.as_secs().max(1);
    p.failures == 0 && p.last_seen.saturating_add(recent) >= now && p.disqualified.is_none() && !p.retiring
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(last_seen: u64, failures: u64) -> PeerRecord {
        PeerRecord { last_seen, failures, ..PeerRecord::new("p".into(), 0) }
    }

    #[test]
    fn a_peer_is_live_for_two_minutes_after_it_answered_and_not_after_a_failure() {
        let s = durability::Settings::default();
        assert!(is_live(&seen(1000, 0), 1000, &s));
        assert!(is_live(&seen(1000, 0), 1000 + 120, &s));
        assert!(!is_live(&seen(1000, 0), 1001 + 120, &s));
        assert!(!is_live(&seen(1000, 1), 1000, &s), "its last request failed");
        assert!(is_live(&seen(u64::MAX, 0), 5, &s), "no overflow on a clock far ahead");
        let mut dq = seen(1000, 0);
        dq.disqualified = Some("audits".into());
        assert!(!is_live(&dq, 1000, &s));
    }

    #[test]
    fn the_window_keeps_the_last_64_heartbeats() {
        let mut p = seen(0, 0);
        for i in 0..100 {
            beat(&mut p, i % 4 != 0);
        }
        assert_eq!(p.window_len, 64);
        assert!((p.uptime() - 0.75).abs() < 0.02, "{}", p.uptime());
    }
}
