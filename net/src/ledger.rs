//! The ledger's two ways over the swarm, as bytes this crate does not
//! read: gossipsub on one topic per chain (proposals, votes, transactions,
//! status), and a question-and-answer stream protocol for syncing final
//! blocks (`/ionshard/ledger-sync/1`: one frame each way, each bounded).

use std::time::Duration;

use libp2p::{PeerId, StreamProtocol, gossipsub};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::frames::Serving;
use crate::node::Client;

pub(crate) const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/ledger-sync/1");
/// A sync question's bytes, at most.
const MAX_QUESTION: usize = 4096;
/// Sync questions answered at once, in all and for one peer.
const MAX_ANSWERING: usize = 32;
const MAX_ANSWERING_PER_PEER: usize = 2;

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
        self.ask_frame(SYNC_PROTOCOL, "ledger sync", peer, question, max, std::time::Duration::ZERO).await
    }

    /// Answer the ledger's sync questions with `answer` until the node stops.
    pub fn serve_ledger<F, Fut>(&self, answer: F) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<u8>> + Send + 'static,
    {
        let serving = Serving {
            protocol: SYNC_PROTOCOL,
            max_question: MAX_QUESTION,
            at_once: MAX_ANSWERING,
            per_peer: MAX_ANSWERING_PER_PEER,
            what: "ledger sync",
            long_from: None,
        };
        self.serve_frames(serving, move |_, q| answer(q))
    }

    /// Gossip `bytes` on the ledger's topic (dropped when no peer listens).
    pub async fn publish_ledger(&self, bytes: Vec<u8>) -> Result<()> {
        self.command(crate::node::Command::Publish(bytes)).await
    }
}
