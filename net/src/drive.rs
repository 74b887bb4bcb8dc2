//! The drive's protocol (`/ionshard/drive/2`): a client's questions to a
//! device it is paired with (log in, read and replace the drive's sealed
//! root), one bounded frame each way, as bytes this crate does not read
//! (the drive crate parses them). Only peers the device admits may send a
//! long question; anyone else's is cut at a few hundred bytes, enough to
//! be told why not.

use std::sync::Arc;

use libp2p::{PeerId, StreamProtocol};

use crate::error::Result;
use crate::frames::Serving;
use crate::node::Client;

const PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/drive/2");

impl Client {
    /// Ask the drive on `peer`; its answer, at most `max` bytes. A long
    /// question or answer gets a second per 256 KiB on top of the request
    /// timeout.
    pub async fn ask_drive(&self, peer: PeerId, question: &[u8], max: usize) -> Result<Vec<u8>> {
        self.connect(peer).await?;
        let slack = std::time::Duration::from_secs((question.len().max(max) >> 18) as u64);
        self.ask_frame(PROTOCOL, "the drive", peer, question, max, slack).await
    }

    /// Answer drive requests with `answer` (given the asking peer) until
    /// the node stops; questions up to `max_question` bytes from peers
    /// `long_from` admits.
    pub fn serve_drive<F, Fut>(
        &self,
        max_question: usize,
        long_from: impl Fn(&PeerId) -> bool + Send + Sync + 'static,
        answer: F,
    ) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(PeerId, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<u8>> + Send + 'static,
    {
        let serving = Serving {
            protocol: PROTOCOL,
            max_question,
            at_once: 8,
            // A client runs a few commands at once (a put beside a sync).
            per_peer: 4,
            what: "the drive",
            long_from: Some(Arc::new(long_from)),
        };
        self.serve_frames(serving, answer)
    }
}
