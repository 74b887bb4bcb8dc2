//! The libp2p behaviours one ionshard node runs.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, autonat, connection_limits, dcutr, identify, kad, ping, relay, request_response};

use crate::codec::{RequestRoom, SHARD_PROTOCOL, ShardCodec};
use crate::wire::Limits;

/// ionshard's DHT: Kademlia under a private protocol name, so ionshard nodes
/// never mix with the public IPFS DHT.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/kad/1.0.0");
pub(crate) const IDENTIFY_PROTOCOL: &str = "/ionshard/1.0.0";

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Connections a node accepts, per peer and in all: each may carry 32
    /// requests being read before any limit of the node sees them, and
    /// holds a descriptor.
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) shard: request_response::Behaviour<ShardCodec>,
    /// The put and get protocols, whose handlers see who sends before they read.
    pub(crate) stream: libp2p_stream::Behaviour,
    /// The ledger's gossip, on nodes that follow a chain.
    pub(crate) gossip: Toggle<libp2p::gossipsub::Behaviour>,
}

/// The connections a node accepts: a bootstrap node (`relay_server`) is
/// every peer's first contact and takes many more.
fn connection_limits(relay_server: bool) -> connection_limits::ConnectionLimits {
    let incoming = if relay_server { 8192 } else { 1024 };
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(256))
        .with_max_established_incoming(Some(incoming))
        .with_max_established_per_peer(Some(8))
}

/// Relay limits raised from libp2p's defaults (128 KiB and 2 minutes per
/// circuit) so a relayed connection can carry shards.
fn relay_config() -> relay::Config {
    let per_minute = std::num::NonZeroU32::new(60).unwrap_or(std::num::NonZeroU32::MIN);
    let base = relay::Config {
        max_reservations: 4096,
        max_reservations_per_peer: 16,
        reservation_duration: Duration::from_secs(3600),
        reservation_rate_limiters: Vec::new(),
        max_circuits: 1024,
        max_circuits_per_peer: 64,
        max_circuit_duration: Duration::from_secs(24 * 3600),
        max_circuit_bytes: 1 << 40,
        circuit_src_rate_limiters: Vec::new(),
    };
    // Generous limits per circuit, but rate limits per peer and per IP so a
    // bootstrap is not an open relay for anyone's bulk traffic.
    base.reservation_rate_per_peer(per_minute, Duration::from_secs(60))
        .reservation_rate_per_ip(per_minute, Duration::from_secs(60))
        .circuit_src_per_peer(per_minute, Duration::from_secs(60))
        .circuit_src_per_ip(per_minute, Duration::from_secs(60))
}

/// AutoNAT probes sooner and more often than libp2p's defaults (15 s after
/// start, then every 90 s until sure), so a peer behind NAT takes a relay
/// slot within seconds of joining. Only bootstrap nodes are asked (added as
/// servers at start): a neighbour on the same LAN would dial a private
/// address back and call us public, and we would take no relay slot.
/// Private addresses are dialled back (test networks use them); a server
/// dials back only the address the request came from, so it cannot be aimed
/// at third parties.
fn autonat_config() -> autonat::Config {
    autonat::Config {
        use_connected: false,
        boot_delay: Duration::from_secs(2),
        retry_interval: Duration::from_secs(20),
        refresh_interval: Duration::from_secs(10 * 60),
        throttle_server_period: Duration::from_secs(15),
        timeout: Duration::from_secs(15),
        only_global_ips: false,
        ..Default::default()
    }
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        relay_server: bool,
        kad_server: bool,
        (limits, room): (Limits, RequestRoom),
        request_timeout: Duration,
        gossip: Option<libp2p::gossipsub::Behaviour>,
    ) -> Self {
        let id = key.public().to_peer_id();
        let mut kcfg = kad::Config::new(KAD_PROTOCOL);
        kcfg.set_query_timeout(Duration::from_secs(10));
        let mut kad = kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), kcfg);
        kad.set_mode(Some(if kad_server { kad::Mode::Server } else { kad::Mode::Client }));
        let mut relay = relay_server.then(|| relay::Behaviour::new(id, relay_config()));
        if let Some(r) = relay.as_mut() {
            r.set_status(Some(relay::Status::Enable));
        }
        Behaviour {
            limits: connection_limits::Behaviour::new(connection_limits(relay_server)),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                    .with_agent_version(format!("ionshard/{}", env!("CARGO_PKG_VERSION")))
                    // A relay slot taken after joining is a new listen address:
                    // tell the bootstrap nodes, or the DHT never learns it.
                    .with_push_listen_addr_updates(true),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            kad,
            autonat: autonat::Behaviour::new(id, autonat_config()),
            relay: relay.into(),
            relay_client,
            dcutr: dcutr::Behaviour::new(id),
            shard: request_response::Behaviour::with_codec(
                ShardCodec::new(limits, room),
                [(SHARD_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(request_timeout)
                    // Per connection, both ways: a peer gets 8 answered at
                    // once and `Busy` beyond; a fetcher has 16 in flight in all.
                    .with_max_concurrent_streams(32),
            ),
            stream: libp2p_stream::Behaviour::new(),
            gossip: gossip.into(),
        }
    }
}
