//! Network parameters the consensus fixes for everyone, with production defaults.

use std::time::Duration;

use p2pmix_mix::Geometry;
use p2pmix_proto::v1::NetworkParameters;

/// Production defaults: Loopix-style rates (λ/μ ≥ 2), three layers, the default geometry, and
/// health measurement (docs/consensus.md, "Health": 500 probes per node and epoch from each
/// authority; left out below 90% delivery or above 1 s of added delay at the 90th percentile).
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
        health_probes_per_node: 500,
        health_min_probes: 100,
        health_min_delivery_permille: 900,
        health_max_delay_p90_ms: 1_000,
        health_good_delivery_permille: 950,
    }
}

/// Mean per-hop delay as a duration.
pub fn mean_delay(parameters: &NetworkParameters) -> Duration {
    Duration::from_micros(parameters.mean_delay_us)
}
