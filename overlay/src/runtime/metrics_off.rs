//! The metrics endpoint of a build without the `metrics-endpoint` feature (a dApp's, or an
//! in-process test network's): asking for one is a clear error, not a silent absence.

use std::net::SocketAddr;

use thiserror::Error;

use super::status::Status;

/// Why the endpoint could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// This build has no endpoint.
    #[error(
        "a metrics address was given but p2pmix was built without its `metrics-endpoint` feature"
    )]
    NotBuilt,
}

/// Refuses: this build serves no metrics (see the module documentation).
pub async fn start(
    _addr: SocketAddr,
    _status: Status,
    _data_dir: &std::path::Path,
) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    Err(MetricsError::NotBuilt)
}
