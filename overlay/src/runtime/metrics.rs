//! The Prometheus endpoint: installs the `metrics` recorder and serves `GET /metrics`, and the
//! process's [`Status`] as `GET /health` and `GET /ready` (200 or 503, with a JSON body saying
//! why; see [`super::status`]).
//!
//! We serve the text ourselves over a plain `tokio` listener instead of the exporter's HTTP
//! listener: binding port 0 and reporting the port actually bound is what tests and testnets
//! need, and it keeps hyper out of the build. Requests are bounded (head size, time, concurrent
//! connections); any other request gets a 404.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::{debug, info};

use super::{
    files::{FileError, write_atomic},
    status::Status,
};

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
    /// The bound address could not be written to the data directory.
    #[error("writing the metrics address: {0}")]
    AddrFile(#[from] FileError),
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

/// The commit the binary was built from, when the build said (`P2PMIX_GIT_COMMIT` in the
/// environment of `cargo build`; the container build sets it).
pub const GIT_COMMIT: Option<&str> = option_env!("P2PMIX_GIT_COMMIT");

/// Sets `p2pmix_build_info{version, git_commit, features} 1`: which build runs where, for
/// dashboards and for alerts on a network running mixed versions.
pub fn export_build_info() {
    let features: Vec<&str> = [
        ("quic", cfg!(feature = "quic")),
        ("chaos", cfg!(feature = "chaos")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    gauge!(
        "p2pmix_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "git_commit" => GIT_COMMIT.unwrap_or("unknown"),
        "features" => features.join(","),
    )
    .set(1.0);
}

/// Binds `addr` and serves `handle` at `/metrics` and `status` at `/health` and `/ready` until
/// the returned task is aborted; returns the bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    status: Status,
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
            let status = status.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let answer =
                    tokio::time::timeout(Duration::from_secs(5), answer(stream, &handle, &status));
                if let Ok(Err(e)) = answer.await {
                    debug!(%peer, %e, "metrics request failed");
                }
            });
        }
    });
    Ok((bound, task))
}

/// Starts the endpoint of a node or an authority: installs the recorder, exports the build
/// info, serves at `addr` and writes the bound address to `data_dir/metrics-addr` (testnets
/// and tests find the port there). The task runs until aborted.
pub async fn start(
    addr: SocketAddr,
    status: Status,
    data_dir: &std::path::Path,
) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    let handle = install_recorder()?;
    export_build_info();
    let (bound, task) = serve(addr, handle, status).await?;
    if let Err(e) = write_atomic(
        &data_dir.join("metrics-addr"),
        format!("{bound}\n").as_bytes(),
    ) {
        task.abort();
        return Err(e.into());
    }
    info!(%bound, "metrics at http://{bound}/metrics, status at /health and /ready");
    Ok(task)
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Health,
    Ready,
    Unknown,
}

/// The route of a request head (`GET PATH[?query] HTTP/1.x`).
fn route(head: &[u8]) -> Route {
    let Some(rest) = head.strip_prefix(b"GET ") else {
        return Route::Unknown;
    };
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'?')
        .unwrap_or(rest.len());
    match &rest[..end] {
        b"/metrics" => Route::Metrics,
        b"/health" => Route::Health,
        b"/ready" => Route::Ready,
        _ => Route::Unknown,
    }
}

/// Status line, content type and body of the answer to `route`.
fn respond(
    route: Route,
    handle: &PrometheusHandle,
    status: &Status,
    now: Instant,
) -> (&'static str, &'static str, String) {
    const JSON: &str = "application/json";
    let code = |ok: bool| {
        if ok {
            "200 OK"
        } else {
            "503 Service Unavailable"
        }
    };
    match route {
        Route::Metrics => {
            handle.run_upkeep();
            let mut text = handle.render();
            text.push_str(&status.replaced_gauges().render());
            ("200 OK", "text/plain; version=0.0.4", text)
        }
        Route::Health => {
            let health = status.health(now);
            (code(health.is_healthy()), JSON, json(&health))
        }
        Route::Ready => {
            let readiness = status.readiness();
            (code(readiness.is_ready()), JSON, json(&readiness))
        }
        Route::Unknown => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /health or /ready\n".to_string(),
        ),
    }
}

/// A value answered as one line of JSON (plain enums of numbers: serialising cannot fail).
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default() + "\n"
}

async fn answer(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    status: &Status,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let (code, content_type, body) = respond(route(&head), handle, status, Instant::now());
    let response = format!(
        "HTTP/1.1 {code}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::status::Readiness;

    #[test]
    fn requests_are_routed_by_their_path_alone() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /health HTTP/1.0\r\n\r\n"), Route::Health);
        assert_eq!(route(b"GET /ready HTTP/1.1\r\n\r\n"), Route::Ready);
        assert_eq!(route(b"GET /readyz HTTP/1.1\r\n\r\n"), Route::Unknown);
        assert_eq!(route(b"POST /ready HTTP/1.1\r\n\r\n"), Route::Unknown);
        assert_eq!(route(b"GET /ready"), Route::Ready);
        assert_eq!(route(b""), Route::Unknown);
    }

    #[test]
    fn health_and_ready_answer_503_until_the_loop_says_otherwise() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let t0 = Instant::now();
        let status = Status::new(t0);
        let answer = |route| respond(route, &handle, &status, t0 + Duration::from_secs(1));
        let (code, _, body) = answer(Route::Health);
        assert_eq!(code, "503 Service Unavailable", "{body}");
        let (code, _, body) = answer(Route::Ready);
        assert_eq!(
            (code, body.as_str()),
            ("503 Service Unavailable", "{\"status\":\"starting\"}\n")
        );
        status.turned(t0);
        status.set_readiness(Readiness::Ready {
            epoch: 7,
            layer: Some(1),
        });
        assert_eq!(answer(Route::Health).0, "200 OK");
        let (code, _, body) = answer(Route::Ready);
        assert_eq!(
            (code, body.as_str()),
            ("200 OK", "{\"status\":\"ready\",\"epoch\":7,\"layer\":1}\n")
        );
        assert_eq!(answer(Route::Unknown).0, "404 Not Found");
    }

    #[test]
    fn metrics_serve_the_replaced_gauges_beside_the_recorders() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let t0 = Instant::now();
        let status = Status::new(t0);
        status.replaced_gauges().replace(
            "p2pmix_measure_delivery_permille",
            "Delivery.",
            "node",
            vec![("12D3KooWA".into(), 998.0)],
        );
        let (code, _, body) = respond(Route::Metrics, &handle, &status, t0);
        assert_eq!(code, "200 OK");
        assert!(
            body.contains("p2pmix_measure_delivery_permille{node=\"12D3KooWA\"} 998\n"),
            "{body}"
        );
    }
}
