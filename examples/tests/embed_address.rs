//! The embed example's mixnet address does not name the dApp's swarm peer: the client id is
//! not the one derived from the peer id (what anyone holding the address could check against a
//! candidate peer), and no part of the peer id or of that id appears in the address.
#![allow(missing_docs)]

use std::time::Duration;

use p2pmix::{
    client::{ClientConfig, Config, client_id},
    config::Authorities,
};
use p2pmix_bootstrap::EpochSchedule;

#[test]
fn the_embed_example_address_does_not_reveal_the_dapp_peer() {
    let dir = std::env::temp_dir().join(format!("p2pmix-embed-address-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        gateway: libp2p::PeerId::random(),
        gateway_addresses: Vec::new(),
        authorities: Authorities {
            entries: Vec::new(),
            schedule: Some(EpochSchedule::new(
                0,
                Duration::from_secs(60).as_millis() as u64,
            )),
            test_network: false,
        },
        client: ClientConfig::default(),
        store: None,
    };
    let (identity, mixnet) = p2pmix_examples::dapp_mixnet(&dir, config.clone()).unwrap();
    let peer = identity.public().to_peer_id();
    let address = mixnet.address();
    // The attack: hash the candidate peer id the way a peer-derived client id is made.
    assert_ne!(
        address.client,
        client_id(&peer),
        "the address names the dApp's peer"
    );
    let text = address.to_string();
    let mut data = Vec::new();
    data.extend_from_slice(&address.client.0);
    data.extend_from_slice(&address.noise_key);
    data.extend_from_slice(&address.recipient_key);
    let peer_bytes = peer.to_bytes();
    for window in peer_bytes.windows(8) {
        assert!(
            !data.windows(8).any(|w| w == window),
            "peer id bytes in the address"
        );
    }
    assert!(!text.contains(&peer.to_string()));
    // The same directory gives the same address (the client key is kept), a fresh one another.
    let (_, again) = p2pmix_examples::dapp_mixnet(&dir, config).unwrap();
    assert_eq!(again.address(), address);
    std::fs::remove_dir_all(&dir).unwrap();
}
