//! A message through five in-process Sphinx hops, with what each hop saw and did.
//!
//! Run from the repository root: `cargo run --release --example five_hops`
//!
//! Five nodes (entry gateway, three mix layers, exit gateway) each get an epoch key; the sender
//! draws an exponential delay per hop, builds one packet and hands it to the first node. Every
//! node unwraps one layer, learning only the next hop and how long to hold the packet; the last
//! one learns the destination client and checks the payload's integrity. Then the same packet is
//! replayed at the first hop and dropped, and a reply travels back through a SURB.

use std::time::{Duration, Instant};

use p2pmix::sphinx::{
    ClientId, Destination, Geometry, Hop, KeyRing, Label, NodeId, NodeSecretKey, Processed,
    ReplayConfig, body, build_packet, create_surb, open_payload, sample_exponential,
};

const ROLES: [&str; 5] = [
    "entry gateway",
    "mix layer 1",
    "mix layer 2",
    "mix layer 3",
    "exit gateway",
];
const EPOCH: u64 = 1;

fn short(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + ".."
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = rand::rng();
    let geometry = Geometry::DEFAULT;
    let mean = Duration::from_millis(15);

    // Each node holds a key ring with its key for the current epoch.
    let rings: Vec<KeyRing> = (0..5)
        .map(|_| {
            let mut ring = KeyRing::new(EPOCH, Duration::from_secs(60), ReplayConfig::default());
            ring.insert(EPOCH, NodeSecretKey::random(&mut rng))?;
            Ok(ring)
        })
        .collect::<Result<_, p2pmix::sphinx::KeyRingError>>()?;
    let hop = |i: usize, rng: &mut rand::rngs::ThreadRng| -> Result<Hop, &'static str> {
        Ok(Hop {
            node: NodeId(i as u16),
            key: rings[i].for_epoch(EPOCH).ok_or("missing key")?.public_key(),
            delay: sample_exponential(mean, rng),
        })
    };
    let route = (0..5)
        .map(|i| hop(i, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;

    let recipient = ClientId([0xab; 32]);
    let message = b"hello through five hops";
    let started = Instant::now();
    let mut packet = build_packet(
        &geometry,
        &route,
        &Destination::Deliver {
            client: recipient,
            label: Label([1; 16]),
        },
        message,
        &mut rng,
    )?;
    println!(
        "sender: built a {}-byte packet (header {} B, body {} B) in {:?}; route 0 -> 1 -> 2 -> 3 -> 4",
        packet.len(),
        geometry.header_size(),
        geometry.body_size(),
        started.elapsed()
    );
    let first_copy = packet.clone();

    let mut at = route[0].node;
    loop {
        let index = usize::from(at.0);
        let seen = short(&packet[1..33]);
        let started = Instant::now();
        let processed = rings[index].process(&geometry, &mut packet)?;
        let took = started.elapsed();
        match processed {
            Processed::Forward { next, delay } => {
                println!(
                    "node {index} ({}): element {seen}, unwrapped in {took:?}; hold {:.2} ms, then forward to node {}",
                    ROLES[index],
                    delay.as_duration().as_secs_f64() * 1e3,
                    next.0
                );
                at = next;
            }
            Processed::Final { destination, delay } => {
                let payload =
                    open_payload(&geometry, body(&geometry, &packet).ok_or("short packet")?)?;
                let text = String::from_utf8_lossy(payload)
                    .trim_end_matches('\0')
                    .to_string();
                let to = match destination {
                    Destination::Deliver { client, .. } => format!("client {}", short(&client.0)),
                    Destination::Drop => "nobody (cover traffic)".into(),
                };
                println!(
                    "node {index} ({}): element {seen}, unwrapped in {took:?}; hold {:.2} ms, then deliver to {to}: {text:?} (integrity tag ok)",
                    ROLES[index],
                    delay.as_duration().as_secs_f64() * 1e3
                );
                break;
            }
        }
    }

    let mut replay = first_copy;
    match rings[0].process(&geometry, &mut replay) {
        Err(e) => println!("node 0: the same packet again -> dropped: {e}"),
        Ok(_) => return Err("a replay was accepted".into()),
    }

    // The recipient answers through a SURB the sender made for the way back (4 -> 0).
    let back = (0..5)
        .rev()
        .map(|i| hop(i, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;
    let (surb, keys) = create_surb(
        &geometry,
        &back,
        ClientId([0xcd; 32]),
        Label([2; 16]),
        &mut rng,
    )?;
    let mut at = surb.first_hop();
    let mut reply = surb.into_reply(&geometry, b"and back again")?;
    let mut hops = Vec::new();
    while let Processed::Forward { next, .. } =
        rings[usize::from(at.0)].process(&geometry, &mut reply)?
    {
        hops.push(at.0);
        at = next;
    }
    hops.push(at.0);
    let header = geometry.header_size();
    let text = keys.open_reply(&geometry, &mut reply[header..])?;
    println!(
        "reply via SURB through nodes {hops:?}: {:?} (the replier never learned the route)",
        String::from_utf8_lossy(text).trim_end_matches('\0')
    );
    Ok(())
}
