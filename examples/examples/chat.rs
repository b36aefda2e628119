//! Two terminals talk through a running testnet.
//!
//! Start a network first (it prints its run directory), then, from the repository root, in two
//! terminals:
//!
//! ```text
//! ./testnet/run.sh --keep
//! cargo run --release --example chat -- target/testnet/run-… alice 0
//! cargo run --release --example chat -- target/testnet/run-… bob 1
//! ```
//!
//! Arguments: the run directory, a name (keys are kept under RUN_DIR/examples/chat-NAME, so a
//! name keeps its address) and the gateway to use. Each side prints its address; type
//! `/to ADDRESS` with the other's, then lines to send. A message carries the sender's address
//! (the recipient learns it, as in any chat), so the other side can answer without `/to`.
//! `/quit` leaves.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use p2pmix::client::{Address, Client, Event, ReceivedMessage};
use p2pmix_examples::{keys, testnet_config};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [run_dir, name, gateway] = args.as_slice() else {
        bail!("usage: chat RUN_DIR NAME GATEWAY_INDEX");
    };
    let run_dir = PathBuf::from(run_dir);
    let gateway: usize = gateway.parse().context("GATEWAY_INDEX")?;
    let k = keys(&run_dir.join(format!("examples/chat-{name}")))?;
    let mut client = Client::start(
        k.swarm,
        k.client,
        k.noise,
        testnet_config(&run_dir, gateway)?,
    )?;
    let me = client.address();
    println!("you are {name}, at {me}");
    println!("type /to ADDRESS, then lines to send; /quit leaves");
    let mut peer: Option<Address> = None;
    let mut connected = false;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim();
                if line == "/quit" {
                    break;
                } else if let Some(a) = line.strip_prefix("/to ") {
                    match a.trim().parse() {
                        Ok(a) => { peer = Some(a); println!("* talking to {a}"); }
                        Err(e) => println!("* not an address: {e}"),
                    }
                } else if !line.is_empty() {
                    let Some(to) = peer else {
                        println!("* nobody to talk to yet: /to ADDRESS");
                        continue;
                    };
                    let body = format!("{me}\n{name}: {line}");
                    match client.send(&to, body.into_bytes(), 0).await {
                        Ok(id) => println!("* sent {id}"),
                        Err(e) => println!("* not sent: {e}"),
                    }
                }
            }
            event = client.next_event() => match event {
                Some(Event::Received(ReceivedMessage { bytes, .. })) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let (from, said) = text.split_once('\n').unwrap_or(("", &text));
                    if peer.is_none() && let Ok(a) = from.parse() {
                        peer = Some(a);
                        println!("* answering to the sender from now on");
                    }
                    println!("{said}");
                }
                Some(Event::Delivered(id)) => println!("* {id} arrived"),
                Some(Event::Failed(id, reason)) => println!("* {id} was lost: {reason}"),
                Some(Event::Unroutable(id, reason)) => println!("* {id} cannot be sent yet: {reason}"),
                Some(Event::Consensus { epoch }) if !connected => {
                    connected = true;
                    println!("* connected (verified consensus of epoch {epoch})");
                }
                Some(Event::Consensus { .. }) => {}
                Some(_) => {}
                None => bail!("the client stopped"),
            }
        }
    }
    client.flush(std::time::Duration::from_secs(5)).await?;
    Ok(())
}
