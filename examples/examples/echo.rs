//! A service that answers every message through the SURBs it came with: it never learns who
//! asked, and the asker never tells it where to answer.
//!
//! Start a network first (it prints its run directory), then run the example from the
//! repository root:
//!
//! ```text
//! ./testnet/run.sh --keep
//! cargo run --release --example echo -- target/testnet/run-…           # the service
//! cargo run --release --example echo -- target/testnet/run-… --ask hi  # one question, then exit
//! ```
//!
//! The service prints its address; any client can ask it, e.g.
//! `p2pmix client send --data-dir /tmp/me --gateway $(head -n1 RUN/gw0/data/listen-addrs)
//! --authorities RUN/authorities.toml --to ADDRESS --message hi --reply-surbs 1`.
//! With `--ask TEXT` the example also runs an asking client on another gateway, prints the
//! answer and the round-trip time, and exits.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use p2pmix::client::{Client, Event, ReceivedMessage};
use p2pmix_examples::{keys, testnet_config, testnet_gateways};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let run_dir: PathBuf = args
        .next()
        .context("usage: echo RUN_DIR [--ask TEXT]")?
        .into();
    let ask = match (args.next().as_deref(), args.next()) {
        (Some("--ask"), Some(text)) => Some(text),
        (None, _) => None,
        _ => bail!("usage: echo RUN_DIR [--ask TEXT]"),
    };
    let gateways = testnet_gateways(&run_dir)?;
    let k = keys(&run_dir.join("examples/echo"))?;
    let mut service = Client::start(
        k.swarm,
        k.client,
        k.noise,
        testnet_config(&run_dir, gateways.saturating_sub(1))?,
    )?;
    println!("echo service at {}", service.address());
    let asker = match &ask {
        Some(text) => {
            let k = keys(&run_dir.join("examples/echo-asker"))?;
            let mut asker =
                Client::start(k.swarm, k.client, k.noise, testnet_config(&run_dir, 0)?)?;
            // Wait for a verified consensus so that the round trip measures the network.
            loop {
                match asker.next_event().await {
                    Some(Event::Consensus { .. }) => break,
                    Some(_) => {}
                    None => bail!("the asking client stopped"),
                }
            }
            let id = asker
                .send(&service.address(), text.clone().into_bytes(), 1)
                .await?;
            println!("asked {id}: {text}");
            Some((asker, Instant::now()))
        }
        None => None,
    };
    let Some((mut asker, asked_at)) = asker else {
        // Service only: answer forever.
        while let Some(event) = service.next_event().await {
            answer(&service, event).await;
        }
        return Ok(());
    };
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            Some(event) = service.next_event() => answer(&service, event).await,
            Some(event) = asker.next_event() => {
                if let Event::Received(ReceivedMessage { bytes, in_reply_to: Some(_), .. }) = event {
                    println!(
                        "answer after {:.0} ms: {}",
                        asked_at.elapsed().as_secs_f64() * 1e3,
                        String::from_utf8_lossy(&bytes)
                    );
                    // Let the service's acknowledgement of the question leave.
                    service.flush(Duration::from_secs(5)).await?;
                    return Ok(());
                }
            }
            _ = &mut deadline => bail!("no answer within 120 s: is the testnet running?"),
        }
    }
}

/// Answers a message that carries SURBs with its own bytes.
async fn answer(service: &Client, event: Event) {
    if let Event::Received(ReceivedMessage {
        id,
        bytes,
        reply: Some(handle),
        ..
    }) = event
    {
        println!("echoing {id} ({} bytes)", bytes.len());
        if let Err(e) = service.reply(handle, bytes).await {
            eprintln!("could not answer {id}: {e}");
        }
    }
}
