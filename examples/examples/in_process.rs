//! A dApp's test without a testnet: a whole mixnet inside this process
//! (`p2pmix::test_network`), two clients, a question with one SURB and its answer through it.
//!
//! ```text
//! cargo run --release --example in_process
//! ```
//!
//! It prints the round trip of the question (sent, mixed through three layers, delivered) and of
//! the answer (back through the SURB), and exits 0 once both arrived.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use p2pmix::{
    client::{Client, Event, ReceivedMessage},
    test_network::TestNetwork,
};

/// The next message `client` receives, within `limit`.
async fn next_message(client: &mut Client, limit: Duration) -> Result<ReceivedMessage> {
    tokio::time::timeout(limit, async {
        loop {
            match client.next_event().await {
                Some(Event::Received(message)) => return Ok(message),
                Some(Event::Failed(id, reason)) => bail!("{id} failed: {reason}"),
                Some(_) => {}
                None => bail!("the client stopped"),
            }
        }
    })
    .await
    .context("nothing arrived in time")?
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let started = Instant::now();
    let net = TestNetwork::start().await?;
    println!(
        "network up in {:.1} s: {} gateways, {} mixes",
        started.elapsed().as_secs_f64(),
        net.gateways().len(),
        net.mixes().len()
    );
    let (swarm, identity, key) = TestNetwork::client_keys()?;
    let alice = Client::start(swarm, identity, key, net.client_config(0))?;
    let (swarm, identity, key) = TestNetwork::client_keys()?;
    let mut bob = Client::start(swarm, identity, key, net.client_config(1))?;
    let mut alice = alice;

    let asked = Instant::now();
    alice.send(&bob.address(), b"hello".to_vec(), 1).await?;
    let question = next_message(&mut bob, Duration::from_secs(120)).await?;
    println!(
        "bob got {:?} after {} ms",
        String::from_utf8_lossy(&question.bytes),
        asked.elapsed().as_millis()
    );
    let surbs = question
        .reply
        .context("the question came without its SURB")?;
    let answered = Instant::now();
    bob.reply(surbs, b"hello, whoever you are".to_vec()).await?;
    let answer = next_message(&mut alice, Duration::from_secs(120)).await?;
    if answer.in_reply_to != Some(question.id) {
        bail!("the answer does not say which question it answers");
    }
    println!(
        "alice got {:?} after {} ms",
        String::from_utf8_lossy(&answer.bytes),
        answered.elapsed().as_millis()
    );
    Ok(())
}
