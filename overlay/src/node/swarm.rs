//! The node's swarm: which protocols a node speaks and how they are configured.

use std::{sync::Arc, time::Duration};

use libp2p_identify as identify;
use libp2p_identity::Keypair;
use libp2p_identity::PeerId;
use libp2p_kad::{self as kad, store::MemoryStore};
use libp2p_ping as ping;
use libp2p_swarm::StreamProtocol;
use libp2p_swarm::Swarm;
use p2pmix_bootstrap::cache_behaviour;
use p2pmix_mix::{
    Relay,
    behaviour::{Behaviour as MixBehaviour, Config as MixConfig},
};

use crate::{
    mailbox::mailbox_behaviour,
    runtime::{
        SwarmError, build_swarm,
        caps::{Caps, ConnectionCaps},
    },
};

/// The Kademlia protocol of p2pmix networks (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmix/kad/1.0.0");
/// The identify protocol version p2pmix peers announce.
pub const IDENTIFY_PROTOCOL: &str = "/p2pmix/id/1.0.0";

pub use behaviour::{NodeBehaviour, NodeBehaviourEvent};

#[allow(missing_docs)] // the derive generates an undocumented event enum
mod behaviour {
    use libp2p_identify as identify;
    use libp2p_kad as kad;
    use libp2p_ping as ping;
    use libp2p_swarm::NetworkBehaviour;
    use p2pmix_bootstrap::CacheBehaviour;
    use p2pmix_mix::behaviour::Behaviour as MixBehaviour;

    use super::ConnectionCaps;
    use crate::mailbox::MailboxBehaviour;

    /// Behaviours of a node's swarm.
    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p_swarm::derive_prelude")]
    pub struct NodeBehaviour {
        /// Refuses incoming connections beyond the configured number (each is an open file;
        /// nodes of a held consensus are not counted), handshakes beyond
        /// `MAX_PENDING_INCOMING` and connections with one peer beyond `MAX_PER_PEER`.
        pub limits: ConnectionCaps,
        /// `/p2pmix/sphinx/1.0.0`: the packets.
        pub mix: MixBehaviour,
        /// `/p2pmix/kad/1.0.0`: peers and their addresses.
        pub kad: kad::Behaviour<kad::store::MemoryStore>,
        /// Listen addresses and protocols of peers.
        pub identify: identify::Behaviour,
        /// Liveness of connections.
        pub ping: ping::Behaviour,
        /// `/p2pmix/dir/1.0.0`: descriptors up, consensus documents down and served (requests
        /// of a few KiB at most: a node serves only the consensus).
        pub directory: CacheBehaviour,
        /// `/p2pmix/mailbox/2.0.0`: clients fetch what arrived for them (gateways serve it).
        pub mailbox: MailboxBehaviour,
    }
}

/// Incoming connections that may be in their handshake at once (one address may have
/// `MAX_PENDING_PER_ADDRESS` of them and one prefix `MAX_PENDING_PER_PREFIX`: the mix behaviour
/// counts). A pending connection costs a socket and a few KiB before Noise, so the slots are
/// many: an attacker needs 16 prefixes to fill them.
const MAX_PENDING_INCOMING: usize = 1024;
/// Connections held with one peer, both ways (two nodes dialling each other at once make two;
/// more is a peer opening connections to hold slots). Per source address, the mix behaviour
/// limits clients' connections too.
const MAX_PER_PEER: usize = 4;

/// Builds a node's swarm around `relay`; `gateway` nodes also serve mailboxes. At most
/// `max_incoming` incoming connections are held; the node's own dials to other nodes are
/// limited only by [`MAX_PER_PEER`] (they follow the consensus, and a node needs one
/// connection to each).
pub(crate) fn build_node_swarm(
    keypair: Keypair,
    relay: Arc<Relay<PeerId>>,
    mix_config: MixConfig,
    gateway: bool,
    max_incoming: u32,
) -> Result<Swarm<NodeBehaviour>, SwarmError> {
    let me = keypair.public().to_peer_id();
    build_swarm(keypair, |key| {
        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_periodic_bootstrap_interval(Some(Duration::from_secs(60)));
        // The DHT finds peers and addresses only; p2pmix stores no records in it, so records and
        // provider announcements from others are handed to us (and dropped) instead of filling
        // the store.
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut kad = kad::Behaviour::with_config(me, MemoryStore::new(me), kad_config);
        // On loopback or behind NAT no external address is ever confirmed, so kad would stay a
        // client; nodes are servers by definition.
        kad.set_mode(Some(kad::Mode::Server));
        NodeBehaviour {
            limits: ConnectionCaps::new(Caps {
                pending_incoming: MAX_PENDING_INCOMING,
                established_incoming: max_incoming as usize,
                per_peer: MAX_PER_PEER,
            }),
            mix: MixBehaviour::new(relay, mix_config),
            kad,
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("p2pmix/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            directory: cache_behaviour(Duration::from_secs(10)),
            mailbox: mailbox_behaviour(gateway),
        }
    })
}
