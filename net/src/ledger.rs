//! The ledger's two ways over the swarm, as bytes this crate does not
//! read: gossipsub on one topic per chain (proposals, votes, transactions,
//! status), and a question-and-answer stream protocol for syncing final
//! blocks (`/ionshard/ledger-sync/1`: one frame each way, each bounded).

use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::{PeerId, StreamProtocol, gossipsub};
use tokio::sync::mpsc;

use crate::codec::{read_frame, write_frame};
use crate::error::{Error, Result};
use crate::node::Client;

pub(crate) const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/ledger-sync/1");
/// A sync question's bytes, at most.
const MAX_QUESTION: usize = 4096;
/// Sync questions answered at once, in all and for one peer.
const MAX_ANSWERING: usize = 32;
const MAX_ANSWERING_PER_PEER: usize = 2;
/// How long an asker has to send its question once the stream is open.
const QUESTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Gossip for a ledger: the topic, where what arrives goes, the size bound.
#[derive(Debug, Clone)]
pub struct Gossip {
    /// The topic's name (one per chain).
    pub topic: String,
    /// Messages that arrive, with the peer that wrote them (checked by
    /// gossipsub's signature). Full: the message is dropped.
    pub inbound: mpsc::Sender<(PeerId, Vec<u8>)>,
    /// Bytes of one message, at most (larger ones are refused unread).
    pub max_bytes: usize,
}

pub(crate) fn behaviour(key: &libp2p::identity::Keypair, max_bytes: usize) -> Result<gossipsub::Behaviour> {
    let config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(max_bytes)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .map_err(|e| Error::Config(format!("gossipsub: {e}")))?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
        .map_err(|e| Error::Config(format!("gossipsub: {e}")))
}

impl Client {
    /// Ask `peer` the ledger's sync question; the answer is bounded by `max` bytes.
    pub async fn ask_ledger(&self, peer: PeerId, question: &[u8], max: usize) -> Result<Vec<u8>> {
        let mut control = self.control.clone();
        let work = async {
            let mut s = control
                .open_stream(peer, SYNC_PROTOCOL)
                .await
                .map_err(|e| Error::Unreachable { peer: peer.to_string(), reason: e.to_string() })?;
            write_frame(&mut s, question)
                .await
                .map_err(|e| Error::Protocol(format!("ledger sync with {peer}: {e}")))?;
            read_frame(&mut s, max).await.map_err(|e| Error::Protocol(format!("ledger sync with {peer}: {e}")))
        };
        tokio::time::timeout(self.request_timeout, work)
            .await
            .map_err(|_| Error::Protocol(format!("ledger sync with {peer}: no answer in time")))?
    }

    /// Answer the ledger's sync questions with `answer` until the node stops.
    pub fn serve_ledger<F, Fut>(&self, answer: F) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<u8>> + Send + 'static,
    {
        let answer = Arc::new(answer);
        let mut control = self.control.clone();
        let mut incoming =
            control.accept(SYNC_PROTOCOL).map_err(|e| Error::Config(format!("registering ledger sync: {e}")))?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ANSWERING));
        let per_peer: Arc<std::sync::Mutex<std::collections::HashMap<PeerId, usize>>> = Arc::default();
        let timeout = self.request_timeout;
        Ok(tokio::spawn(async move {
            while let Some((peer, mut stream)) = incoming.next().await {
                // Busy (in all, or for this peer): the stream is dropped, and
                // the asker asks someone else.
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                {
                    let mut m = per_peer.lock().unwrap_or_else(|p| p.into_inner());
                    let n = m.entry(peer).or_default();
                    if *n >= MAX_ANSWERING_PER_PEER {
                        continue;
                    }
                    *n += 1;
                }
                let (answer, per_peer) = (answer.clone(), per_peer.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let work = async {
                        let q = tokio::time::timeout(QUESTION_TIMEOUT, read_frame(&mut stream, MAX_QUESTION))
                            .await
                            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no question"))??;
                        let a = answer(q).await;
                        write_frame(&mut stream, &a).await
                    };
                    let _ = tokio::time::timeout(timeout, work).await;
                    let mut m = per_peer.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Gossip `bytes` on the ledger's topic (dropped when no peer listens).
    pub async fn publish_ledger(&self, bytes: Vec<u8>) -> Result<()> {
        self.command(crate::node::Command::Publish(bytes)).await
    }
}
