//! The Prometheus endpoint: installs the `metrics` recorder and serves `GET /metrics`.
//!
//! We serve the text ourselves over a plain `tokio` listener instead of the exporter's HTTP
//! listener: binding port 0 and reporting the port actually bound is what tests and testnets
//! need, and it keeps hyper out of the build. Requests are bounded (head size, time, concurrent
//! connections); anything but `GET /metrics` gets a 404.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::debug;

/// Why the endpoint could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A recorder is already installed in this process.
    #[error("installing the metrics recorder: {0}")]
    Install(#[from] metrics_exporter_prometheus::BuildError),
    /// The address could not be bound.
    #[error("metrics address {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Histogram bucket edges (seconds) for every `*_seconds` metric: from 50 µs (an unwrap) to 10 s
/// (a long mix delay).
const BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const MAX_CONNECTIONS: usize = 16;

/// Installs the global Prometheus recorder. Call before building anything that takes metric
/// handles (the mix behaviour does at construction).
pub fn install_recorder() -> Result<PrometheusHandle, MetricsError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)?
        .install_recorder()
        .map_err(MetricsError::from)
}

/// Binds `addr` and serves `handle` at `/metrics` until the returned task is aborted; returns the
/// bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!(%peer, "metrics: too many connections, closing one");
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let answer = tokio::time::timeout(Duration::from_secs(5), answer(stream, &handle));
                if let Ok(Err(e)) = answer.await {
                    debug!(%peer, %e, "metrics request failed");
                }
            });
        }
    });
    Ok((bound, task))
}

async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let (status, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?")
    {
        handle.run_upkeep();
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
