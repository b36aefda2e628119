//! Network parameters the consensus fixes for everyone, with production defaults.

use std::time::Duration;

use p2pmix_mix::Geometry;
use p2pmix_proto::v1::NetworkParameters;

/// Nodes admitted per IPv4 address by default (Tor's `AuthDirMaxServersPerAddr` is 2).
pub const DEFAULT_MAX_PER_IPV4: u32 = 2;
/// Nodes admitted per IPv4 /24 by default: a hosting provider's subnet holds several honest
/// operators, but one operator renting a /24 gets no more than this.
pub const DEFAULT_MAX_PER_IPV4_24: u32 = 4;
/// Nodes admitted per IPv6 /48 (one site's allocation) by default.
pub const DEFAULT_MAX_PER_IPV6_48: u32 = 4;
/// Nodes admitted per declared operator family by default.
pub const DEFAULT_MAX_PER_FAMILY: u32 = 10;

/// Production defaults: Loopix-style rates (λ/μ ≥ 2), three layers, the default geometry,
/// admission caps per address, prefix and family, not a test network, and health measurement
/// (docs/consensus.md, "Health": 500 probes per node and epoch from each authority; left out
/// below 90% delivery or above 1 s of added delay at the 90th percentile).
pub fn default_parameters() -> NetworkParameters {
    NetworkParameters {
        mean_delay_us: 50_000,
        max_delay_us: 10_000_000,
        client_send_interval_us: 20_000,
        client_loop_interval_us: 200_000,
        client_drop_interval_us: 200_000,
        mix_loop_interval_us: 1_000_000,
        geometry_id: Geometry::DEFAULT.id(),
        layers: 3,
        min_protocol_version: crate::PROTOCOL_VERSION,
        max_nodes_per_ipv4: DEFAULT_MAX_PER_IPV4,
        max_nodes_per_ipv4_24: DEFAULT_MAX_PER_IPV4_24,
        max_nodes_per_ipv6_48: DEFAULT_MAX_PER_IPV6_48,
        max_nodes_per_family: DEFAULT_MAX_PER_FAMILY,
        test_network: false,
        health_probes_per_node: 500,
        health_min_probes: 100,
        health_min_delivery_permille: 900,
        health_max_delay_p90_ms: 1_000,
        health_good_delivery_permille: 950,
        mailbox_pull_interval_us: DEFAULT_MAILBOX_PULL_INTERVAL_US,
        mailbox_pull_items: DEFAULT_MAILBOX_PULL_ITEMS,
    }
}

/// A client pulls from its gateway every 100 ms ...
pub const DEFAULT_MAILBOX_PULL_INTERVAL_US: u64 = 100_000;
/// ... six packets each time: 60 packets a second, what the client sends (50/s on the send
/// stream, 5/s loop cover, 5/s drop cover), so that everything it sends could come back: the
/// loop cover and the acknowledgements of a client sending real packets at its whole send rate
/// (55/s), with room for what it receives. More waits at the gateway for the next pull.
pub const DEFAULT_MAILBOX_PULL_ITEMS: u32 = 6;

/// [`default_parameters`] for a local test network: loopback and private addresses admitted.
pub fn test_network_parameters() -> NetworkParameters {
    NetworkParameters {
        test_network: true,
        ..default_parameters()
    }
}

/// Mean per-hop delay as a duration.
pub fn mean_delay(parameters: &NetworkParameters) -> Duration {
    Duration::from_micros(parameters.mean_delay_us)
}
