//! ionshard's network: one libp2p node per process, in the role of a
//! bootstrap node (DHT entry point and relay), a peer (stores and serves
//! shards) or a client, speaking ionshard's shard protocols
//! (`/ionshard/shard/1`, `/ionshard/put/1`, `/ionshard/get/1`, see [`wire`])
//! over TCP or QUIC with noise and yamux,
//! with identify, ping, Kademlia under `/ionshard/kad/1.0.0`, AutoNAT,
//! circuit relay v2 and DCUtR.
//!
//! A node is a cloneable [`Client`] that sends commands over a bounded
//! channel to one event loop owning the swarm. It must never serve bytes that
//! do not match their CID, accept a put from an SPN it does not trust, or
//! allocate what a peer claims before checking it against a limit.
//!
//! [`Daemon`] runs a peer or bootstrap node with its background work (the
//! sweep of expired shards, a watch on reachability); [`join`] starts a
//! client for one job. What a node sends back passes through [`Answers`]
//! ([`Honest`] in production; a test plugs a liar in). A node that follows
//! a ledger also runs gossipsub on the chain's topic and answers the
//! ledger's sync questions ([`Gossip`], [`Client::serve_ledger`]); it
//! carries the ledger's bytes without reading them.

mod answers;
mod behaviour;
mod buffers;
mod codec;
mod daemon;
mod direct;
mod drive;
mod error;
mod frames;
mod friend;
mod gate;
mod identity;
mod ledger;
mod mailbox;
mod node;
mod ops;
mod own_port;
mod private;
mod serve;
mod stream;

pub use answers::{Answers, Honest};
pub use buffers::recycle;
pub use daemon::{Daemon, client_config, join, reachability_line};
pub use direct::listen_ips as direct_ips;
pub use error::{Error, Result};
pub use identity::load_or_create_key;
pub use ledger::Gossip;
pub use libp2p::identity::Keypair;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
pub use node::{Client, Config, Link, Nat, PeerInfo, Role, Status, Traffic, is_loopback, start, start_with};
pub use ops::PeerStatus;
pub use private::{Admission, PRIVATE_OWNER, Private};
pub use proto::wire;
pub use proto::{DeleteAck, Receipt, public_key_of};
