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
}

impl Client {
    /// Ask `peer` `question` on `protocol`; its answer, at most `max` bytes.
    pub(crate) async fn ask_frame(
        &self,
        protocol: StreamProtocol,
        what: &str,
        peer: PeerId,
        question: &[u8],
        max: usize,
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
        tokio::time::timeout(self.request_timeout, work)
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
        let busy: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
        let timeout = self.request_timeout;
        let (max_question, per_peer) = (serving.max_question, serving.per_peer);
        Ok(tokio::spawn(async move {
            while let Some((peer, mut stream)) = incoming.next().await {
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                {
                    let mut m = busy.lock().unwrap_or_else(|p| p.into_inner());
                    let n = m.entry(peer).or_default();
                    if *n >= per_peer {
                        continue;
                    }
                    *n += 1;
                }
                let (answer, busy) = (answer.clone(), busy.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let work = async {
                        let q = tokio::time::timeout(QUESTION_TIMEOUT, read_frame(&mut stream, max_question))
                            .await
                            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no question"))??;
                        let a = answer(peer, q).await;
                        write_frame(&mut stream, &a).await
                    };
                    let _ = tokio::time::timeout(timeout, work).await;
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
