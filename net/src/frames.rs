//! One question, one answer, each a bounded frame on its own stream: the
//! shape of the ledger's sync protocol and of the pairing mailbox. The
//! bytes are the caller's; this module bounds them, times them out, and
//! limits how many it answers at once, in all and per peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::{PeerId, StreamProtocol};

use crate::codec::{read_frame, write_frame};
use crate::error::{Error, Result};
use crate::node::Client;

/// How long an asker has to send its question once the stream is open.
const QUESTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How a protocol's questions are answered.
pub(crate) struct Serving {
    /// The protocol.
    pub(crate) protocol: StreamProtocol,
    /// A question's bytes, at most.
    pub(crate) max_question: usize,
    /// Questions answered at once, in all.
    pub(crate) at_once: usize,
    /// Questions answered at once for one peer.
    pub(crate) per_peer: usize,
    /// What the protocol is called in errors.
    pub(crate) what: &'static str,
    /// Peers whose questions may be `max_question` long; others' at most
    /// [`SHORT_QUESTION`] (enough to be told why not). `None`: anyone's.
    pub(crate) long_from: Option<Admits>,
}

/// Whether a peer may ask long questions.
pub(crate) type Admits = std::sync::Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;

/// The longest question of a peer [`Serving::long_from`] does not admit.
pub(crate) const SHORT_QUESTION: usize = 256;
/// Questions answered at once for peers [`Serving::long_from`] does not admit.
const STRANGERS_AT_ONCE: usize = 2;

impl Client {
    /// Ask `peer` `question` on `protocol`; its answer, at most `max`
    /// bytes, within the request timeout and `slack` more.
    pub(crate) async fn ask_frame(
        &self,
        protocol: StreamProtocol,
        what: &str,
        peer: PeerId,
        question: &[u8],
        max: usize,
        slack: Duration,
    ) -> Result<Vec<u8>> {
        let mut control = self.control.clone();
        let work = async {
            let mut s = control
                .open_stream(peer, protocol)
                .await
                .map_err(|e| Error::Unreachable { peer: peer.to_string(), reason: e.to_string() })?;
            write_frame(&mut s, question).await.map_err(|e| Error::Protocol(format!("{what} with {peer}: {e}")))?;
            read_frame(&mut s, max).await.map_err(|e| Error::Protocol(format!("{what} with {peer}: {e}")))
        };
        tokio::time::timeout(self.request_timeout + slack, work)
            .await
            .map_err(|_| Error::Protocol(format!("{what} with {peer}: no answer in time")))?
    }

    /// Answer `serving`'s questions with `answer` (given the asking peer)
    /// until the node stops. Over its limits, a stream is dropped unread:
    /// the asker asks again or elsewhere.
    pub(crate) fn serve_frames<F, Fut>(&self, serving: Serving, answer: F) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(PeerId, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<u8>> + Send + 'static,
    {
        let answer = Arc::new(answer);
        let mut control = self.control.clone();
        let mut incoming = control
            .accept(serving.protocol)
            .map_err(|e| Error::Config(format!("registering {}: {e}", serving.what)))?;
        let slots = Arc::new(tokio::sync::Semaphore::new(serving.at_once));
        let strangers = Arc::new(tokio::sync::Semaphore::new(STRANGERS_AT_ONCE));
        let busy: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
        let timeout = self.request_timeout;
        let (max_question, per_peer, long_from) = (serving.max_question, serving.per_peer, serving.long_from);
        Ok(tokio::spawn(async move {
            while let Some((peer, mut stream)) = incoming.next().await {
                // Peers the protocol does not admit have a small pool of
                // their own: they cannot crowd out those it does.
                let admitted = long_from.as_ref().is_none_or(|admits| admits(&peer));
                let pool = if admitted { &slots } else { &strangers };
                let Ok(slot) = pool.clone().try_acquire_owned() else { continue };
                {
                    let mut m = busy.lock().unwrap_or_else(|p| p.into_inner());
                    let n = m.entry(peer).or_default();
                    if *n >= per_peer {
                        continue;
                    }
                    *n += 1;
                }
                let (answer, busy) = (answer.clone(), busy.clone());
                let max = if admitted { max_question } else { SHORT_QUESTION.min(max_question) };
                // A long question gets a second per 256 KiB more to arrive.
                let slack = Duration::from_secs((max >> 18) as u64);
                tokio::spawn(async move {
                    let _slot = slot;
                    let work = async {
                        let q = tokio::time::timeout(QUESTION_TIMEOUT + slack, read_frame(&mut stream, max))
                            .await
                            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no question"))??;
                        let a = answer(peer, q).await;
                        write_frame(&mut stream, &a).await
                    };
                    let _ = tokio::time::timeout(timeout + slack, work).await;
                    let mut m = busy.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(n) = m.get_mut(&peer) {
                        *n -= 1;
                        if *n == 0 {
                            m.remove(&peer);
                        }
                    }
                });
            }
        }))
    }
}
