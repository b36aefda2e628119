//! The mixnet client behaviour next to a dApp's own behaviour, in one swarm.
//!
//! Start a network first (it prints its run directory), then run the example from the
//! repository root:
//!
//! ```text
//! ./testnet/run.sh --keep
//! cargo run --release --example embed -- target/testnet/run-…
//! ```
//!
//! The dApp's swarm carries `p2pmix::client::Behaviour` (anonymous messaging) and libp2p's `ping`
//! (standing in for the dApp's own protocols) in one `#[derive(NetworkBehaviour)]`. The client
//! fetches and verifies the consensus itself; then the dApp sends a message with a SURB to its
//! own address, answers it through the SURB and prints each step with its time.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use libp2p::{
    ping,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use p2pmix::{
    build_swarm,
    client::{self, ReceivedMessage},
};
use p2pmix_examples::{dapp_mixnet, testnet_config};

/// The dApp's behaviours: the mixnet client and its own protocol.
#[derive(NetworkBehaviour)]
struct DApp {
    mixnet: client::Behaviour,
    ping: ping::Behaviour,
}

#[tokio::main]
async fn main() -> Result<()> {
    let run_dir: PathBuf = std::env::args()
        .nth(1)
        .context("usage: embed RUN_DIR (from ./testnet/run.sh --keep)")?
        .into();
    let config = testnet_config(&run_dir, 0)?;
    // The dApp's swarm identity is its public name; the mixnet client has a key of its own
    // (`client.key`), so the address below does not say which peer owns it (`dapp_mixnet`).
    let (identity, mixnet) = dapp_mixnet(&run_dir.join("examples/embed"), config)?;
    let mut swarm = build_swarm(identity, |_| DApp {
        mixnet,
        ping: ping::Behaviour::default(),
    })?;
    let me = swarm.behaviour().mixnet.address();
    println!("my address: {me}");
    let started = Instant::now();
    let at = || format!("{:>6.2}s", started.elapsed().as_secs_f64());
    let mut question = None;
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            e = swarm.select_next_some() => e,
            _ = &mut deadline => bail!("no answer within 120 s: is the testnet running?"),
        };
        let SwarmEvent::Behaviour(event) = event else {
            continue;
        };
        match event {
            DAppEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => println!("{} ping: {peer} answered in {rtt:?}", at()),
            DAppEvent::Mixnet(client::Event::Consensus { epoch }) if question.is_none() => {
                println!("{} verified consensus of epoch {epoch}", at());
                let id = swarm.behaviour_mut().mixnet.send_with_replies(
                    &me,
                    b"hello from inside the dApp",
                    1,
                )?;
                println!("{} sent {id} to myself, with one SURB", at());
                question = Some(id);
            }
            DAppEvent::Mixnet(client::Event::Received(ReceivedMessage {
                id,
                bytes,
                in_reply_to: None,
                reply: Some(handle),
                ..
            })) => {
                println!(
                    "{} received {id}: {}",
                    at(),
                    String::from_utf8_lossy(&bytes)
                );
                let answer = swarm
                    .behaviour_mut()
                    .mixnet
                    .reply(handle, b"and the answer, through the SURB")?;
                println!("{} answered with {answer}", at());
            }
            DAppEvent::Mixnet(client::Event::Received(ReceivedMessage {
                bytes,
                in_reply_to: Some(asked),
                ..
            })) => {
                println!(
                    "{} reply to {asked}: {}",
                    at(),
                    String::from_utf8_lossy(&bytes)
                );
                return Ok(());
            }
            DAppEvent::Mixnet(client::Event::Delivered(id)) => {
                println!("{} {id} acknowledged by its recipient", at())
            }
            DAppEvent::Mixnet(client::Event::Failed(id, reason)) => bail!("{id} failed: {reason}"),
            _ => {}
        }
    }
}
