//! Directory authorities as real `p2pmix authority` processes on 127.0.0.1 (port 0 everywhere):
//! agreement of 3 and 5, one of three down, two of three down, a restart mid-epoch, the
//! consensus tools, and outsiders flooding one with requests and with connections.
#![allow(missing_docs, unreachable_pub)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use p2pmix::proto::v1::{Consensus, SignedConsensus};
use prost::Message;

mod common;
use common::{BIN, Running, Scratch, keygen, sleep_until, unix_ms, wait_for};

const EPOCH_MS: u64 = 8_000;

struct Net {
    /// First, so that the processes are stopped before their directories are removed.
    running: Vec<Option<Running>>,
    scratch: Scratch,
    keys: Vec<String>,
    genesis: u64,
    /// The epoch length every authority is configured with.
    epoch_ms: u64,
    /// More lines at the end of every authority's config, after `[network]` (for example a
    /// `[network.parameters]` table).
    network: String,
    /// More top-level lines of every authority's config (before `[network]`).
    top: String,
}

impl Net {
    fn new(name: &str, n: usize) -> Self {
        let scratch = Scratch::new(name);
        let keys = (0..n)
            .map(|i| keygen(&scratch.0.join(format!("a{i}"))))
            .collect();
        Net {
            scratch,
            keys,
            // Every authority starts before epoch 0 and prepares epoch 1 from its start.
            genesis: unix_ms() + 4_000,
            running: (0..n).map(|_| None).collect(),
            network: String::new(),
            top: String::new(),
            epoch_ms: EPOCH_MS,
        }
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.scratch.0.join(format!("a{i}"))
    }

    fn listen_addr(&self, i: usize) -> Option<String> {
        fs::read_to_string(self.dir(i).join("data/listen-addrs"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
    }

    /// Starts authority `i`, pinning every key and pointing at the authorities already running.
    fn start(&mut self, i: usize) {
        let dir = self.dir(i);
        let mut pinned = String::new();
        for (j, key) in self.keys.iter().enumerate() {
            let addrs = match (j != i).then(|| self.listen_addr(j)).flatten() {
                Some(a) => format!("\"{a}\""),
                None => String::new(),
            };
            pinned.push_str(&format!(
                "[[authority]]\npublic_key = \"{key}\"\naddresses = [{addrs}]\n\n"
            ));
        }
        fs::write(dir.join("authorities.toml"), pinned).unwrap();
        fs::write(
            dir.join("authority.toml"),
            format!(
                "identity = \"identity.key\"\ndata_dir = \"data\"\nauthorities = \"authorities.toml\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmetrics = \"127.0.0.1:0\"\n{}[network]\ngenesis_unix_ms = {}\nepoch_ms = {}\ntest_network = true\n{}",
                self.top, self.genesis, self.epoch_ms, self.network
            ),
        )
        .unwrap();
        let _ = fs::remove_file(dir.join("data/listen-addrs"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["authority", "--config"])
            .arg(dir.join("authority.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.running[i] = Some(Running { child });
        wait_for("the authority to listen", Duration::from_secs(20), || {
            self.listen_addr(i)
        });
    }

    fn stop(&mut self, i: usize) {
        self.running[i] = None;
    }

    fn consensus(&self, i: usize, epoch: u64) -> Option<SignedConsensus> {
        let bytes = fs::read(self.dir(i).join(format!("data/consensus-{epoch}.pb"))).ok()?;
        SignedConsensus::decode(&bytes[..]).ok()
    }

    fn log(&self, i: usize) -> String {
        fs::read_to_string(self.dir(i).join("log")).unwrap_or_default()
    }

    fn epoch_start(&self, epoch: u64) -> u64 {
        self.genesis + epoch * self.epoch_ms
    }

    fn verify(&self, i: usize, epoch: u64, now_ms: u64) -> (bool, String) {
        let out = Command::new(BIN)
            .args(["consensus", "verify"])
            .arg(self.dir(i).join(format!("data/consensus-{epoch}.pb")))
            .arg("--authorities")
            .arg(self.dir(i).join("authorities.toml"))
            .args(["--now-ms", &now_ms.to_string()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// Waits for epoch 1's consensus at the given authorities and checks they hold the same document.
fn agreed(net: &Net, which: &[usize]) -> Vec<SignedConsensus> {
    let limit =
        Duration::from_millis(net.epoch_start(1) - unix_ms().min(net.epoch_start(1)) + 20_000);
    let docs: Vec<SignedConsensus> = which
        .iter()
        .map(|&i| {
            let deadline = std::time::Instant::now() + limit;
            loop {
                if let Some(c) = net.consensus(i, 1) {
                    break c;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "timed out waiting for a consensus at authority {i}\n{}",
                    net.log(i)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .collect();
    for d in &docs {
        assert_eq!(
            d.consensus, docs[0].consensus,
            "authorities signed different documents"
        );
    }
    assert_eq!(Consensus::decode(&docs[0].consensus[..]).unwrap().epoch, 1);
    docs
}

#[test]
fn three_and_five_authorities_produce_identical_documents() {
    for n in [3, 5] {
        let mut net = Net::new(&format!("agree{n}"), n);
        for i in 0..n {
            net.start(i);
        }
        let all: Vec<usize> = (0..n).collect();
        agreed(&net, &all);
        // Late signatures keep arriving after publication; by the next epoch all are attached.
        sleep_until(net.epoch_start(1) + 500);
        let (ok, out) = net.verify(0, 1, net.epoch_start(1) + 1);
        assert!(ok, "{out}");
        assert!(out.contains(&format!("of {n} authorities signed")), "{out}");
    }
}

#[test]
fn one_of_three_down_still_gets_a_consensus() {
    let mut net = Net::new("one-down", 3);
    net.start(0);
    net.start(1);
    let docs = agreed(&net, &[0, 1]);
    assert_eq!(docs[0].signatures.len(), 2);
    let (ok, out) = net.verify(1, 1, net.epoch_start(1) + 1);
    assert!(ok, "{out}");
}

#[test]
fn two_of_three_down_gives_none_and_the_log_says_why() {
    let mut net = Net::new("two-down", 3);
    net.start(0);
    // Well past the sign and publish phases of epoch 0.
    sleep_until(net.epoch_start(1) + 200);
    assert!(net.consensus(0, 1).is_none());
    let log = wait_for("the failure in the log", Duration::from_secs(10), || {
        let log = net.log(0);
        log.contains("no consensus for epoch 1").then_some(log)
    });
    assert!(
        log.contains("1 votes from distinct authorities, 2 needed"),
        "{log}"
    );
}

#[test]
fn an_authority_restarted_mid_epoch_resumes_and_signs() {
    let mut net = Net::new("restart", 3);
    for i in 0..3 {
        net.start(i);
    }
    // After the votes (1/4 of epoch 0), before the reveals (3/8): kill and restart authority 2.
    sleep_until(net.genesis + EPOCH_MS / 4 + 150);
    net.stop(2);
    net.start(2);
    let docs = agreed(&net, &[0, 1, 2]);
    let restarted = &docs[2];
    assert!(
        net.log(2).contains("resuming from saved state"),
        "{}",
        net.log(2)
    );
    // Its own signature is on the document it published.
    sleep_until(net.epoch_start(1) + 500);
    let (ok, out) = net.verify(2, 1, net.epoch_start(1) + 1);
    assert!(ok && out.contains("3 of 3"), "{out}");
    assert!(restarted.signatures.len() >= 2);
}

fn verify_cli(file: &Path, authorities: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["consensus", "verify"])
        .arg(file)
        .arg("--authorities")
        .arg(authorities)
        .output()
        .unwrap()
}

#[test]
fn consensus_tools_refuse_bad_input_clearly() {
    let scratch = Scratch::new("tools");
    let bogus = scratch.0.join("bogus.pb");
    fs::write(&bogus, b"not a consensus").unwrap();
    let auth = scratch.0.join("authorities.toml");
    let key = keygen(&scratch.0.join("k"));
    fs::write(&auth, format!("[[authority]]\npublic_key = \"{key}\"\n")).unwrap();
    let out = verify_cli(&bogus, &auth);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid: bad encoding"));

    let out = Command::new(BIN)
        .args(["consensus", "verify", "--bogus-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    fs::write(&auth, "[[authority]]\npublic_key = \"zz\"\n").unwrap();
    let out = verify_cli(&bogus, &auth);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_key is neither a peer id"));

    // keygen refuses to overwrite an identity.
    let again = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(scratch.0.join("k"))
        .output()
        .unwrap();
    assert!(!again.status.success());
}

/// A node identity listening on 127.0.0.1 (a swarm with no protocols: enough for an
/// authority's reachability check, which only needs the Noise handshake to prove the identity).
fn listening_node(runtime: &tokio::runtime::Runtime) -> (libp2p::identity::Keypair, String) {
    use futures::StreamExt;
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let _guard = runtime.enter();
    let mut swarm =
        p2pmix::build_swarm(keypair.clone(), |_| libp2p::swarm::dummy::Behaviour).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let mut tx = Some(tx);
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(address.to_string());
            }
        }
    });
    let address = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    (keypair, address)
}

/// What `p2pmix consensus show --from ADDR ARGS..` prints; it must succeed.
fn consensus_show(addr: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["consensus", "show", "--from", addr])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Signs a descriptor of `keypair` for `epoch` announcing `address` (family `op{n}`) and
/// uploads it to every authority of `net`.
fn upload_to_all(
    net: &Net,
    runtime: &tokio::runtime::Runtime,
    keypair: &libp2p::identity::Keypair,
    (address, role, n): (String, p2pmix::proto::v1::Role, usize),
    epoch: u64,
) {
    use p2pmix::{
        bootstrap::sign_descriptor,
        directory::fetch::upload_descriptor,
        proto::v1::{EpochKey, NodeDescriptor},
        sphinx::NodeSecretKey,
    };
    let descriptor = NodeDescriptor {
        epoch,
        identity: keypair.public().encode_protobuf(),
        addresses: vec![address],
        role: role as i32,
        sphinx_keys: vec![EpochKey {
            epoch,
            sphinx_public_key: NodeSecretKey::random(&mut rand::rng())
                .public_key()
                .to_bytes()
                .to_vec(),
        }],
        software_version: "test".into(),
        protocol_version: 1,
        family: format!("op{n}"),
    };
    let signed = sign_descriptor(keypair, &descriptor).unwrap();
    for i in 0..net.keys.len() {
        let addr = net.listen_addr(i).unwrap().parse().unwrap();
        runtime
            .block_on(upload_descriptor(
                addr,
                signed.clone(),
                Duration::from_secs(10),
            ))
            .unwrap_or_else(|e| panic!("upload to authority {i}: {e}"));
    }
}

#[test]
fn descriptors_uploaded_over_the_network_enter_the_consensus_which_peers_can_fetch() {
    use p2pmix::proto::v1::Role;
    let mut net = Net::new("upload", 3);
    for i in 0..3 {
        net.start(i);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Four nodes that listen where they say, and a fifth whose address nobody answers at (a
    // port that was bound and closed again): the authorities' reachability checks leave it out.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let roles = [Role::Gateway, Role::Mix, Role::Mix, Role::Mix, Role::Mix];
    let mut unreachable = None;
    for (n, role) in roles.iter().enumerate() {
        let (keypair, address) = if n < 4 {
            listening_node(&runtime)
        } else {
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            unreachable = Some(keypair.public().encode_protobuf());
            (keypair, format!("/ip4/127.0.0.1/tcp/{closed_port}"))
        };
        upload_to_all(&net, &runtime, &keypair, (address, *role, n), 1);
    }
    let docs = agreed(&net, &[0, 1, 2]);
    let consensus = Consensus::decode(&docs[0].consensus[..]).unwrap();
    assert_eq!(
        consensus.nodes.len(),
        4,
        "the four reachable nodes, not the fifth"
    );
    assert!(
        consensus
            .nodes
            .iter()
            .all(|n| Some(&n.identity) != unreachable.as_ref())
    );
    assert_eq!(consensus.nodes.iter().filter(|n| n.layer > 0).count(), 3);

    let stdout = consensus_show(&net.listen_addr(1).unwrap(), &[]);
    assert!(stdout.contains("epoch            1"), "{stdout}");
    assert!(
        stdout.contains("nodes            4 (1 gateways)"),
        "{stdout}"
    );
}

/// Nodes that announce names (`/dns4/localhost`, `/dns/localhost`) are reached at the address
/// the name resolves to and admitted with the name they announced; a node announcing a name that
/// resolves to nothing is not. (The authority resolves names itself and dials the addresses, so
/// the caps count the address a name stands for: `names_are_resolved_to_the_addresses_the_caps_count`
/// in the bootstrap crate. Loopback addresses are in no cap's group, so the caps themselves
/// cannot be shown on 127.0.0.1.)
#[test]
fn nodes_announcing_names_are_reached_at_what_the_names_resolve_to() {
    use p2pmix::proto::v1::Role;
    let mut net = Net::new("dns-announce", 3);
    for i in 0..3 {
        net.start(i);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let announce = [
        (Role::Gateway, "/ip4/127.0.0.1/"),
        (Role::Mix, "/dns4/localhost/"),
        (Role::Mix, "/dns/localhost/"),
        (Role::Mix, "/dns4/localhost/"),
        (Role::Mix, "/dns4/nothing-here.invalid/"),
    ];
    let mut announced = Vec::new();
    for (n, (role, prefix)) in announce.into_iter().enumerate() {
        let (keypair, address) = listening_node(&runtime);
        // /ip4/127.0.0.1/tcp/PORT -> PREFIX tcp/PORT
        let address = address.replacen("/ip4/127.0.0.1/", prefix, 1);
        announced.push((keypair.public().encode_protobuf(), address.clone()));
        upload_to_all(&net, &runtime, &keypair, (address, role, n), 1);
    }
    let docs = agreed(&net, &[0, 1, 2]);
    let consensus = Consensus::decode(&docs[0].consensus[..]).unwrap();
    for (n, (identity, address)) in announced.iter().enumerate() {
        let admitted = consensus.nodes.iter().find(|c| &c.identity == identity);
        if n < 4 {
            let admitted = admitted.unwrap_or_else(|| panic!("{address} was not admitted"));
            assert_eq!(admitted.addresses, vec![address.clone()]);
        } else {
            assert!(
                admitted.is_none(),
                "{address} resolves to nothing, yet was admitted"
            );
        }
    }
    assert_eq!(consensus.nodes.len(), 4);
}

/// The authority's `/metrics` page (its address is in `data/metrics-addr`), if it answers.
fn metrics(net: &Net, i: usize) -> Option<String> {
    use std::io::{Read, Write};
    let addr = fs::read_to_string(net.dir(i).join("data/metrics-addr")).ok()?;
    let mut stream = std::net::TcpStream::connect(addr.trim()).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    Some(page)
}

/// The value of the metric line that starts with `name` (labels included) on `page`.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Sends `requests` to the authority at `address` over one connection, 96 at a time (the
/// authority answers an upload once the state that holds it is on disk, so a window keeps it
/// busy), and counts
/// the answers: `accepted`, the refusal codes, `failed` (no answer).
fn flood(
    runtime: &tokio::runtime::Runtime,
    address: libp2p::Multiaddr,
    requests: Vec<p2pmix::proto::v1::DirectoryRequest>,
) -> std::collections::BTreeMap<String, u64> {
    use futures::StreamExt;
    use libp2p::{request_response, swarm::SwarmEvent};
    use p2pmix::proto::v1::directory_response::Response;
    runtime.block_on(async move {
        let mut swarm = p2pmix::build_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
            p2pmix::bootstrap::directory_behaviour(false, Duration::from_secs(60))
        })
        .unwrap();
        swarm.dial(address).unwrap();
        let total = requests.len() as u64;
        let mut pending = requests.into_iter();
        let (mut peer, mut in_flight, mut answered) = (None, 0, 0u64);
        let mut outcomes = std::collections::BTreeMap::new();
        while answered < total {
            if let Some(p) = peer {
                while in_flight < 96 {
                    let Some(r) = pending.next() else { break };
                    swarm.behaviour_mut().send_request(&p, r);
                    in_flight += 1;
                }
            }
            let event = tokio::time::timeout(Duration::from_secs(60), swarm.select_next_some())
                .await
                .unwrap_or_else(|_| panic!("the flood stalled after {answered} answers"));
            let outcome = match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    peer = Some(peer_id);
                    continue;
                }
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    panic!("the authority closed the flood's connection: {cause:?}")
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => match response.response {
                    Some(Response::Accepted(_)) => "accepted".to_string(),
                    Some(Response::Refused(r)) => format!("{:?}", r.code()),
                    other => format!("unexpected {other:?}"),
                },
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => format!("failed {error}"),
                _ => continue,
            };
            in_flight -= 1;
            answered += 1;
            *outcomes.entry(outcome).or_default() += 1;
        }
        outcomes
    })
}

/// The outsider of issue 12 with many identities, against a real authority process: 10 000
/// descriptors of fresh identities (7 KB each, 70 MB against a store of 16 MiB) over one
/// connection in one round. Every request is answered, the store's bound is counted, the honest
/// nodes of the last consensus are in the next one, and the process stays within the stated
/// memory budget (`MEMORY_BUDGET_BYTES`, 200 MiB), by its own peak resident memory.
#[test]
fn ten_thousand_fresh_identities_leave_a_real_authority_within_its_budget() {
    use p2pmix::{
        bootstrap::{MEMORY_BUDGET_BYTES, sign_descriptor},
        proto::v1::{DirectoryRequest, EpochKey, NodeDescriptor, Role, directory_request::Request},
        sphinx::NodeSecretKey,
    };
    const FLOOD: usize = 10_000;
    let mut net = Net::new("flood", 1);
    // A descriptor phase (a quarter of the epoch) of 10 s for the flood.
    net.epoch_ms = 40_000;
    net.start(0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let roles = [Role::Gateway, Role::Mix, Role::Mix, Role::Mix];
    let honest: Vec<_> = roles
        .iter()
        .map(|role| (listening_node(&runtime), *role))
        .collect();
    for (n, ((keypair, address), role)) in honest.iter().enumerate() {
        upload_to_all(&net, &runtime, keypair, (address.clone(), *role, n), 1);
    }
    // Made while round 1 runs: the flood for round 2, every one signed by its own identity and
    // announcing a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let sphinx = NodeSecretKey::random(&mut rand::rng())
        .public_key()
        .to_bytes()
        .to_vec();
    let requests: Vec<_> = (0..FLOOD)
        .map(|_| {
            let key = libp2p::identity::Keypair::generate_ed25519();
            let d = NodeDescriptor {
                epoch: 2,
                identity: key.public().encode_protobuf(),
                addresses: vec![format!("/ip4/127.0.0.1/tcp/{closed_port}")],
                role: Role::Mix as i32,
                sphinx_keys: vec![EpochKey {
                    epoch: 2,
                    sphinx_public_key: sphinx.clone(),
                }],
                software_version: "x".repeat(7_000),
                protocol_version: 1,
                family: String::new(),
            };
            DirectoryRequest {
                request: Some(Request::Descriptor(sign_descriptor(&key, &d).unwrap())),
            }
        })
        .collect();
    let first = &agreed(&net, &[0])[0];
    assert_eq!(
        Consensus::decode(&first.consensus[..]).unwrap().nodes.len(),
        4
    );

    // Round 2 (during epoch 1): the honest nodes again, then the flood.
    sleep_until(net.epoch_start(1) + 200);
    for (n, ((keypair, address), role)) in honest.iter().enumerate() {
        upload_to_all(&net, &runtime, keypair, (address.clone(), *role, n), 2);
    }
    let address = net.listen_addr(0).unwrap().parse().unwrap();
    let outcomes = flood(&runtime, address, requests);
    assert_eq!(outcomes.values().sum::<u64>(), FLOOD as u64);
    assert!(
        outcomes
            .keys()
            .all(|k| !k.starts_with("failed") && !k.starts_with("unexpected")),
        "every request gets an answer: {outcomes:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_millis(net.epoch_ms + 20_000);
    let second = loop {
        if let Some(c) = net.consensus(0, 2) {
            break Consensus::decode(&c.consensus[..]).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no consensus for epoch 2 after the flood ({outcomes:?})\n{}",
            net.log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for ((keypair, address), _) in &honest {
        let id = keypair.public().encode_protobuf();
        assert!(
            second.nodes.iter().any(|n| n.identity == id),
            "honest node {address} left out after the flood"
        );
    }
    let page = metrics(&net, 0).unwrap_or_default();
    let full = metric(
        &page,
        "p2pmix_authority_rejections_total{reason=\"descriptor_round_full\"}",
    );
    assert!(
        full.unwrap_or(0.0) > 0.0,
        "the store's bound is counted: {outcomes:?}\n{}",
        page.lines()
            .filter(|l| l.contains("rejections"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let accounted = metric(&page, "p2pmix_authority_memory_bytes").unwrap_or(0.0);
    assert!(accounted <= MEMORY_BUDGET_BYTES as f64, "{accounted} bytes");
    let pid = net.running[0].as_ref().unwrap().child.id();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    assert!(
        peak_kib * 1024 <= MEMORY_BUDGET_BYTES as u64,
        "the authority peaked at {peak_kib} KiB resident"
    );
    eprintln!(
        "flood: {outcomes:?}; store full {full:?}; accounted {accounted} bytes; peak RSS \
         {peak_kib} KiB; state writes {:?}",
        metric(&page, "p2pmix_authority_state_writes_total")
    );
}

/// An authority down for a whole round missed that round's document, which the next round
/// builds on: started again, it fetches the document from the others, adopts it (threshold of
/// pinned signatures), and signs the next document with them. (Before it asked, it sat out
/// every later round: "the votes build on previous consensus …, which this authority does not
/// hold".)
#[test]
fn an_authority_down_for_a_round_fetches_the_document_it_missed_and_signs_again() {
    let mut net = Net::new("catch-up", 3);
    for i in 0..3 {
        net.start(i);
    }
    agreed(&net, &[0, 1, 2]);
    let own_key = p2pmix::identity::read_identity(&net.dir(2).join("identity.key"))
        .unwrap()
        .public()
        .encode_protobuf();
    // Down for the round of epoch 2 (it runs during epoch 1), back for the round of epoch 3.
    net.stop(2);
    assert!(
        unix_ms() < net.epoch_start(1),
        "stopped before the round of epoch 2 began"
    );
    sleep_until(net.epoch_start(2) + 200);
    assert!(net.consensus(2, 2).is_none());
    net.start(2);
    for epoch in [3, 4] {
        let deadline = std::time::Instant::now()
            + Duration::from_millis(
                net.epoch_start(epoch) - unix_ms().min(net.epoch_start(epoch)) + 20_000,
            );
        let doc = loop {
            if let Some(d) = net.consensus(2, epoch) {
                break d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the restarted authority published no consensus for epoch {epoch}\n{}",
                net.log(2)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let theirs = wait_for("the others' document", Duration::from_secs(20), || {
            net.consensus(0, epoch)
        });
        assert_eq!(doc.consensus, theirs.consensus, "epoch {epoch}");
        // Computed and signed by the restarted authority itself, not only adopted late.
        assert!(
            doc.signatures.iter().any(|s| s.authority == own_key),
            "authority 2 did not sign the document of epoch {epoch}\n{}",
            net.log(2)
        );
        assert!(
            net.log(2)
                .contains(&format!("consensus published epoch={epoch} ")),
            "{}",
            net.log(2)
        );
    }
    assert!(
        net.consensus(2, 2).is_some(),
        "the missed document is held and served"
    );
    assert!(net.log(2).contains("adopted"), "{}", net.log(2));
}

/// One malicious authority (the test holds its key) signs the round's document, as its honest
/// process does, and then a second document: the authority that gets the second signature
/// catches the double signature, relays it, and both others count it in
/// `p2pmix_authority_equivocations_total` and serve the proof, which `p2pmix consensus show`
/// prints and checks against the pinned keys. (Sent before the real one, the forged signature
/// is relayed to authority 2 too, which then refuses to sign a second digest itself.)
#[test]
fn a_double_signing_authority_shows_in_consensus_show_and_the_metric() {
    use p2pmix::proto::v1::{
        DirectoryRequest, RefusalCode, directory_request::Request, directory_response::Response,
    };
    let mut net = Net::new("equivocation", 3);
    // The round's last three eighths (after publication) are 6 s: time to sign twice.
    net.epoch_ms = 16_000;
    for i in 0..3 {
        net.start(i);
    }
    let liar = p2pmix::identity::read_identity(&net.dir(2).join("identity.key")).unwrap();
    let liar_key = liar.public().encode_protobuf();
    // Authority 2's real signature on the document authority 0 published.
    wait_for(
        "authority 2's signature on the document",
        Duration::from_millis(net.epoch_start(1) - unix_ms().min(net.epoch_start(1))),
        || {
            net.consensus(0, 1)
                .filter(|d| d.signatures.iter().any(|s| s.authority == liar_key))
                .map(|_| ())
        },
    );
    let forged = p2pmix::bootstrap::sign_consensus(&liar, 1, &[7; 32]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(p2pmix::directory::fetch::request_once(
        net.listen_addr(0).unwrap().parse().unwrap(),
        DirectoryRequest {
            request: Some(Request::Signature(forged)),
        },
        Duration::from_secs(10),
    ));
    assert!(
        matches!(&answer, Ok(r) if matches!(&r.response, Some(Response::Refused(x)) if x.code() == RefusalCode::Invalid)),
        "the second signature is refused as an equivocation (not as late: {} ms before the round \
         ended): {answer:?}",
        net.epoch_start(1) as i64 - unix_ms() as i64
    );
    for i in 0..2 {
        wait_for("the equivocation metric", Duration::from_secs(20), || {
            let page = metrics(&net, i)?;
            (metric(&page, "p2pmix_authority_equivocations_total") == Some(1.0)).then_some(())
        });
        let authorities = net.dir(i).join("authorities.toml");
        let stdout = consensus_show(
            &net.listen_addr(i).unwrap(),
            &[
                "--epoch",
                "1",
                "--authorities",
                authorities.to_str().unwrap(),
            ],
        );
        assert!(stdout.contains("equivocations    1"), "{stdout}");
        assert!(stdout.contains("proof verified"), "{stdout}");
    }
}

/// The outsider of issue 12: no key at all, only what the authorities serve. Early in every
/// round (the upload phase, long before anyone signs) it replays, at every authority, the
/// signatures of every earlier document it could fetch (at least four from the round of epoch
/// 5 on, as many as an authority once kept per other authority and round). Every epoch still
/// gets its consensus at every authority.
#[test]
fn replayed_signatures_of_earlier_documents_stall_no_round() {
    use std::collections::BTreeMap;

    use p2pmix::{
        directory::fetch::{fetch_consensus, request_once},
        proto::v1::{ConsensusSignature, DirectoryRequest, directory_request::Request},
    };
    const LAST: u64 = 6;
    let mut net = Net::new("replay", 3);
    for i in 0..3 {
        net.start(i);
    }
    let addrs: Vec<libp2p::Multiaddr> = (0..3)
        .map(|i| net.listen_addr(i).unwrap().parse().unwrap())
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Every signature fetched so far, per document digest.
    let mut served: BTreeMap<Vec<u8>, Vec<ConsensusSignature>> = BTreeMap::new();
    let mut replayed_documents = Vec::new();
    for epoch in 1..=LAST {
        // The round of `epoch` runs during `epoch - 1`: replay just after it starts.
        sleep_until(net.epoch_start(epoch - 1) + 300);
        runtime.block_on(async {
            for addr in &addrs {
                for earlier in 1..epoch {
                    if let Ok(doc) =
                        fetch_consensus(addr.clone(), Some(earlier), Duration::from_secs(2)).await
                    {
                        let digest = p2pmix::directory::consensus_digest(&doc.consensus).to_vec();
                        let held = served.entry(digest).or_default();
                        for s in doc.signatures {
                            if !held.contains(&s) {
                                held.push(s);
                            }
                        }
                    }
                }
            }
            let sends = addrs.iter().flat_map(|addr| {
                served.values().flatten().map(move |s| {
                    request_once(
                        addr.clone(),
                        DirectoryRequest {
                            request: Some(Request::Signature(s.clone())),
                        },
                        Duration::from_secs(2),
                    )
                })
            });
            futures::future::join_all(sends).await;
        });
        replayed_documents.push(served.len());
    }
    for epoch in 1..=LAST {
        for i in 0..3 {
            let deadline = std::time::Instant::now() + Duration::from_millis(EPOCH_MS + 20_000);
            while net.consensus(i, epoch).is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no consensus for epoch {epoch} at authority {i} (documents replayed per \
                     round: {replayed_documents:?})\n{}",
                    net.log(i)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert!(
        replayed_documents[4..].iter().all(|&n| n >= 4),
        "the replays covered at least four earlier documents in the last rounds: \
         {replayed_documents:?}"
    );
}

/// Connections to `address`, each from a fresh identity that completes the handshake and then
/// sits idle (a swarm keeps an idle connection for an hour): `open` is how many are held now,
/// `settled` how many dials have ended (established or failed).
fn hold_connections(
    runtime: &tokio::runtime::Runtime,
    address: libp2p::Multiaddr,
    count: usize,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    };

    use futures::StreamExt;
    use libp2p::swarm::{SwarmEvent, dummy};
    let (open, settled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for _ in 0..count {
        let (open, settled, address) = (open.clone(), settled.clone(), address.clone());
        runtime.spawn(async move {
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            let mut swarm = p2pmix::build_swarm(keypair, |_| dummy::Behaviour).unwrap();
            swarm.dial(address).unwrap();
            let mut first = true;
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        open.fetch_add(1, SeqCst);
                    }
                    SwarmEvent::ConnectionClosed { .. } => {
                        open.fetch_sub(1, SeqCst);
                    }
                    SwarmEvent::OutgoingConnectionError { .. } => {}
                    _ => continue,
                }
                if std::mem::take(&mut first) {
                    settled.fetch_add(1, SeqCst);
                }
            }
        });
    }
    (open, settled)
}

/// An outsider with throwaway identities holds idle connections to an authority. Before the
/// caps the authority held every one, an open file each, for the hour an idle connection may
/// stay: a few thousand took every file it could open, and with them the other authorities'
/// connections and its state's writes. Now it holds at most `max_connections` of them, counts
/// the refusals, and the other two authorities, started once the flood has filled the cap, still
/// get in (pinned peers are exempt): all three agree on epoch 1. The flood's idle connections
/// are then cut, while the authorities stay connected.
#[test]
fn throwaway_identities_hold_at_most_the_cap_and_keep_no_authority_out() {
    use std::sync::atomic::Ordering::SeqCst;
    const CAP: usize = 16;
    const FLOOD: usize = 120;
    let mut net = Net::new("conncap", 3);
    // Room for the flood and two more starts before epoch 0, on a loaded machine too.
    net.genesis = unix_ms() + 25_000;
    net.top = format!("max_connections = {CAP}\n");
    net.start(0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let address = net.listen_addr(0).unwrap().parse().unwrap();
    let (open, settled) = hold_connections(&runtime, address, FLOOD);
    wait_for(
        "every dial of the flood to end",
        Duration::from_secs(60),
        || (settled.load(SeqCst) == FLOOD).then_some(()),
    );
    // Refused connections close right after their handshake.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open.load(SeqCst) > CAP && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = open.load(SeqCst);
    assert!(
        held <= CAP,
        "the authority holds {held} of the flood's {FLOOD} connections (cap {CAP})"
    );
    assert!(held > 0, "the flood's first connections are held");

    net.start(1);
    net.start(2);
    agreed(&net, &[0, 1, 2]);
    let page = metrics(&net, 0).unwrap_or_default();
    let refused = metric(
        &page,
        "p2pmix_connections_refused_total{reason=\"incoming_total\"}",
    )
    .unwrap_or(0.0);
    // Every dial beyond the cap was refused, but for a few that a loaded machine may let time
    // out in their handshake instead.
    assert!(
        refused >= (FLOOD - CAP - 8) as f64,
        "refusals counted: {refused}"
    );
    assert!(open.load(SeqCst) <= CAP);

    // Idle, the flood's connections are cut after the authority's idle timeout (30 s); the
    // links between the authorities stay.
    wait_for(
        "the authority to cut the flood's idle connections",
        Duration::from_secs(120),
        || (open.load(SeqCst) == 0).then_some(()),
    );
    let page = metrics(&net, 0).unwrap_or_default();
    assert_eq!(
        metric(&page, "p2pmix_authority_peers_connected"),
        Some(2.0),
        "{page}"
    );
}
