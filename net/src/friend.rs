//! Friends' protocol (`/ionshard/friend/1`): letters (texts and files)
//! between friends, held by the sender's own devices while the friend is
//! offline, and share links a friend's node opens. One bounded frame each
//! way, as bytes this crate does not read (the drive crate parses and
//! seals them). Anyone may ask: a letter carried by a friend's device
//! comes from a peer this node never paired with, and proves itself by
//! opening with the friend's key; few questions are answered at once.

use libp2p::{PeerId, StreamProtocol};

use crate::error::Result;
use crate::frames::Serving;
use crate::node::Client;

const PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/friend/1");

impl Client {
    /// Ask `peer` on the friends' protocol; its answer, at most `max` bytes.
    pub async fn ask_friend(&self, peer: PeerId, question: &[u8], max: usize) -> Result<Vec<u8>> {
        self.connect(peer).await?;
        let slack = std::time::Duration::from_secs((question.len().max(max) >> 18) as u64);
        self.ask_frame(PROTOCOL, "the friends' protocol", peer, question, max, slack).await
    }

    /// Answer the friends' protocol with `answer` (given the asking peer)
    /// until the node stops; questions up to `max_question` bytes. The node
    /// becomes findable by its peer id through the DHT.
    pub fn serve_friend<F, Fut>(&self, max_question: usize, answer: F) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(PeerId, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Vec<u8>> + Send + 'static,
    {
        // Friends' letters come to this node: it must be found by its id.
        self.findable();
        let serving = Serving {
            protocol: PROTOCOL,
            max_question,
            at_once: 6,
            per_peer: 2,
            what: "the friends' protocol",
            long_from: None,
        };
        self.serve_frames(serving, answer)
    }
}
