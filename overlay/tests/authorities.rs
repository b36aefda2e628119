//! Directory authorities as real `p2pmix authority` processes on 127.0.0.1 (port 0 everywhere):
//! agreement of 3 and 5, one of three down, two of three down, a restart mid-epoch, and the
//! consensus tools.
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
    scratch: Scratch,
    keys: Vec<String>,
    genesis: u64,
    running: Vec<Option<Running>>,
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
                "identity = \"identity.key\"\ndata_dir = \"data\"\nauthorities = \"authorities.toml\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmetrics = \"127.0.0.1:0\"\n[network]\ngenesis_unix_ms = {}\nepoch_ms = {EPOCH_MS}\ntest_network = true\n",
                self.genesis
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
        self.genesis + epoch * EPOCH_MS
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

#[test]
fn descriptors_uploaded_over_the_network_enter_the_consensus_which_peers_can_fetch() {
    use p2pmix::{
        bootstrap::sign_descriptor,
        directory::fetch::upload_descriptor,
        proto::v1::{EpochKey, NodeDescriptor, Role},
        sphinx::NodeSecretKey,
    };
    let mut net = Net::new("upload", 3);
    for i in 0..3 {
        net.start(i);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::rng();
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
        let descriptor = NodeDescriptor {
            epoch: 1,
            identity: keypair.public().encode_protobuf(),
            addresses: vec![address],
            role: *role as i32,
            sphinx_keys: vec![EpochKey {
                epoch: 1,
                sphinx_public_key: NodeSecretKey::random(&mut rng)
                    .public_key()
                    .to_bytes()
                    .to_vec(),
            }],
            software_version: "test".into(),
            protocol_version: 1,
            family: format!("op{n}"),
        };
        let signed = sign_descriptor(&keypair, &descriptor).unwrap();
        for i in 0..3 {
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

    let out = Command::new(BIN)
        .args(["consensus", "show", "--from"])
        .arg(net.listen_addr(1).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("epoch            1"), "{stdout}");
    assert!(
        stdout.contains("nodes            4 (1 gateways)"),
        "{stdout}"
    );
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
