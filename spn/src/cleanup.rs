//! Deleting what failed jobs stored: every shard in the delete queue is
//! deleted from its peer (an owner delete): at once when a job fails, at
//! start for jobs a stop cut short, and every half minute until the peer
//! answers, for up to
//! [`GIVE_UP_AFTER`]; a peer gone for longer than that has lost the shard
//! anyway.

use std::sync::Weak;
use std::time::Duration;

use chunker::Cid;
use net::PeerId;

use crate::state::Outcome;
use crate::{Inner, now};

/// A queued delete is dropped after this long without an answer.
const GIVE_UP_AFTER: u64 = 30 * 24 * 3600;

/// How long one delete may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// Deletes at once.
const AT_ONCE: usize = 16;

/// The deleter: runs while the SPN does.
pub(crate) async fn run(inner: Weak<Inner>) {
    loop {
        // Held only while working: a stopped SPN closes its state.
        let Some(strong) = inner.upgrade() else { return };
        drain(&strong).await;
        drop(strong);
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// One pass over the queue.
pub(crate) async fn drain(inner: &Inner) {
    drain_of(inner, None).await
}

/// One pass over the queued deletes of the peers in `only` (all, if `None`).
pub(crate) async fn drain_of(inner: &Inner, only: Option<&std::collections::HashSet<String>>) {
    use futures::StreamExt;
    let _one = inner.deleting.lock().await;
    let queued = match inner.state.pending_deletes() {
        Ok(q) => q.into_iter().filter(|(_, peer, _)| only.is_none_or(|o| o.contains(peer))).collect::<Vec<_>>(),
        Err(e) => return tracing::warn!("reading the delete queue: {e}"),
    };
    if queued.is_empty() {
        return;
    }
    let attempts = futures::stream::iter(queued).map(|(shard, peer, started)| async move {
        // No answer: asked again next pass, until it has waited too long.
        let again = |why: String| {
            let mut r = started.clone();
            r.last_error = Some(why);
            r.attempts += 1;
            if now().saturating_sub(r.since) < GIVE_UP_AFTER { Outcome::Again(r) } else { Outcome::GaveUp(r) }
        };
        let outcome = match (shard.parse::<Cid>(), peer.parse::<PeerId>()) {
            (Ok(cid), Ok(id)) => {
                match tokio::time::timeout(DELETE_TIMEOUT, inner.client.delete_shard_acked(id, cid)).await {
                    // Deleted, or not there: done either way; signed if the peer signs.
                    Ok(Ok((_, ack))) => Outcome::Done(ack),
                    // Done too (nothing more to ask), but not a delete: said so.
                    Ok(Err(net::Error::Refused {
                        code: code @ (net::wire::Code::NotOwner | net::wire::Code::NotFound),
                        message,
                        ..
                    })) => Outcome::Refused(format!("{code:?}: {message}")),
                    Ok(Err(e)) => again(e.to_string()),
                    Err(_) => again("no answer in time".into()),
                }
            }
            _ => Outcome::Refused("not a shard and peer".into()),
        };
        (shard, peer, started, outcome)
    });
    let outcomes: Vec<_> = attempts.buffer_unordered(AT_ONCE).collect().await;
    for (shard, peer, started, outcome) in outcomes {
        if let Err(e) = inner.state.delete_outcome(&shard, &peer, &started, outcome) {
            tracing::warn!("recording a delete of {shard} on {peer}: {e}");
        }
    }
}
