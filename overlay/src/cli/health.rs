//! `p2pmix health`: ask a running node or authority for `/health` (or `/ready`) and exit 0 when
//! it answers 200. The container image's health check: the image has no shell and no curl.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};

/// Longest answer read.
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(clap::Args)]
pub(crate) struct HealthArgs {
    /// The metrics address of the process: IP:PORT (what its `metrics` setting says) or
    /// HOST:PORT (what genconfig's prometheus.yml scrapes), e.g. h3.example.org:9101.
    #[arg(long, env = "P2PMIX_HEALTH_ADDR", conflicts_with = "data_dir")]
    addr: Option<String>,
    /// Or its data directory: the address is in DATA_DIR/metrics-addr.
    #[arg(long, env = "P2PMIX_HEALTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Ask /ready (admitted and relaying) instead of /health (running).
    #[arg(long, env = "P2PMIX_HEALTH_READY")]
    ready: bool,
    /// Give up after this many milliseconds.
    #[arg(long, env = "P2PMIX_HEALTH_TIMEOUT_MS", default_value_t = 3_000)]
    timeout_ms: u64,
}

/// Runs `p2pmix health`: prints the answer's body; exit 0 on 200, 1 otherwise.
pub(crate) fn run(args: HealthArgs) -> Result<ExitCode> {
    let addr = match (&args.addr, &args.data_dir) {
        (Some(a), _) => resolve(a)?,
        (None, Some(dir)) => {
            let file = dir.join("metrics-addr");
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {} (is metrics on?)", file.display()))?;
            text.trim()
                .parse()
                .with_context(|| format!("{}: not an address", file.display()))?
        }
        (None, None) => bail!("give --addr ADDR or --data-dir DIR"),
    };
    let path = if args.ready { "/ready" } else { "/health" };
    let (code, body) = get(
        reachable(addr),
        path,
        Duration::from_millis(args.timeout_ms),
    )?;
    print!("{body}");
    Ok(if code == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `text` as an address, or a name resolved to its first address.
fn resolve(text: &str) -> Result<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .with_context(|| format!("--addr {text}: neither IP:PORT nor a name that resolves"))?
        .next()
        .with_context(|| format!("--addr {text}: the name has no address"))
}

/// A process listening on the unspecified address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `GET path` at `addr`: the status code and body.
fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{addr} did not answer HTTP"))?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_or_a_name_with_a_port_is_taken_and_anything_else_refused() {
        assert_eq!(
            resolve("127.0.0.1:9100").unwrap(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 9100))
        );
        assert!(resolve("localhost:9100").unwrap().ip().is_loopback());
        assert!(resolve("localhost").is_err(), "no port");
        assert!(resolve("127.0.0.1:99999").is_err());
    }
}
