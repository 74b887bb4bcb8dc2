//! The pairing mailbox's protocol (`/ionshard/mailbox/1`): one bounded
//! frame each way, as bytes this crate does not read (the drive crate
//! parses them). Bootstrap nodes answer it; devices and clients ask.

use libp2p::{PeerId, StreamProtocol};

use crate::error::Result;
use crate::frames::Serving;
use crate::node::Client;

const PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/mailbox/1");
/// A mailbox request's bytes, at most.
const MAX_QUESTION: usize = 4096;

impl Client {
    /// Ask the mailbox on `peer`; its answer, at most `max` bytes.
    pub async fn ask_mailbox(&self, peer: PeerId, question: &[u8], max: usize) -> Result<Vec<u8>> {
        self.ask_frame(PROTOCOL, "the pairing mailbox", peer, question, max, std::time::Duration::ZERO).await
    }

    /// Answer mailbox requests with `answer` (given the asking peer) until
    /// the node stops.
    pub fn serve_mailbox<F, Fut>(&self, answer: F) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(PeerId, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<u8>> + Send + 'static,
    {
        let serving = Serving {
            protocol: PROTOCOL,
            max_question: MAX_QUESTION,
            at_once: 64,
            per_peer: 4,
            what: "the pairing mailbox",
            long_from: None,
        };
        self.serve_frames(serving, answer)
    }
}
