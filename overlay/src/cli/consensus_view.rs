//! What `p2pmix consensus show` prints of a consensus: a readable summary (the header, the
//! parameters, the signers, one line a node with its health) and the nodes left out for health
//! (docs/consensus.md, "Health"), or the same as one JSON object for scripts (`--json`).
//!
//! The document may come unverified from any peer: every loop is bounded by what it holds, and
//! nothing in it is trusted to be well formed (a malformed key prints as such).

use std::fmt::Write as _;

use anyhow::{Context, Result};
use p2pmix::{
    directory::{consensus_digest, peer_id},
    proto::v1::{
        Consensus, ConsensusNode, ExcludedNode, ExclusionReason, HealthStatus, NodeHealth, Role,
        SignedConsensus,
    },
};
use prost::Message;
use serde_json::{Value, json};

/// The peer id of an encoded public key, or a placeholder for a malformed one.
pub(super) fn who(key: &[u8]) -> String {
    libp2p_identity::PublicKey::try_decode_protobuf(key)
        .map(|k| k.to_peer_id().to_string())
        .unwrap_or_else(|_| "(malformed key)".into())
}

fn decode(signed: &SignedConsensus) -> Result<Consensus> {
    Consensus::decode(&signed.consensus[..]).context("the document inside does not decode")
}

fn role(role: Role) -> &'static str {
    match role {
        Role::Mix => "Mix",
        Role::Gateway => "Gateway",
        Role::Unspecified => "Unspecified",
    }
}

fn status(health: &NodeHealth) -> &'static str {
    match health.status() {
        HealthStatus::Measured => "measured",
        HealthStatus::Probation => "probation",
        HealthStatus::Unspecified => "unspecified",
    }
}

/// The `reason` label of an exclusion (also the metrics label).
pub(crate) fn reason(reason: ExclusionReason) -> &'static str {
    match reason {
        ExclusionReason::LowDelivery => "low_delivery",
        ExclusionReason::Slow => "slow",
        ExclusionReason::Unspecified => "unspecified",
    }
}

fn node_peer(node: &ConsensusNode) -> String {
    peer_id(node)
        .map(|p| p.to_string())
        .unwrap_or_else(|| "(malformed)".into())
}

/// Per mille as a percentage with one decimal.
fn percent(permille: u32) -> String {
    format!("{}.{}%", permille / 10, permille % 10)
}

/// A node's health on its line: what the authorities measured, or that nobody measures.
fn health_text(health: Option<&NodeHealth>) -> String {
    match health {
        None => "health none".into(),
        Some(h) if h.status() == HealthStatus::Measured => format!(
            "health measured delivery {} delay-p90 {} ms reports {} strikes {}",
            percent(h.delivery_permille),
            h.delay_p90_ms,
            h.reports,
            h.strikes
        ),
        Some(h) => format!(
            "health {} reports {} strikes {}",
            status(h),
            h.reports,
            h.strikes
        ),
    }
}

fn excluded_text(e: &ExcludedNode) -> String {
    format!(
        "  {} {}: delivery {} delay-p90 {} ms strikes {}, out since epoch {} until epoch {}",
        who(&e.identity),
        reason(e.reason()),
        percent(e.delivery_permille),
        e.delay_p90_ms,
        e.strikes,
        e.since_epoch,
        e.until_epoch
    )
}

/// The readable summary of `signed`, times shown relative to `now_ms`. Lines scripts read:
/// `  node ID ROLE layer L PEER ADDRESSES health ...` and, under `excluded`, one line a node
/// left out for health starting with its peer id.
pub(super) fn text(signed: &SignedConsensus, now_ms: u64) -> Result<String> {
    let c = decode(signed)?;
    let rel = |t: u64| {
        let secs = (i128::from(t) - i128::from(now_ms)) as f64 / 1000.0;
        if secs >= 0.0 {
            format!("in {secs:.1} s")
        } else {
            format!("{:.1} s ago", -secs)
        }
    };
    let mut out = String::new();
    let o = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(o, "epoch            {}", c.epoch);
    let _ = writeln!(
        o,
        "valid after      {} ({})",
        c.valid_after_ms,
        rel(c.valid_after_ms)
    );
    let _ = writeln!(
        o,
        "fresh until      {} ({})",
        c.fresh_until_ms,
        rel(c.fresh_until_ms)
    );
    let _ = writeln!(
        o,
        "valid until      {} ({})",
        c.valid_until_ms,
        rel(c.valid_until_ms)
    );
    let _ = writeln!(
        o,
        "digest           {}",
        hex::encode(consensus_digest(&signed.consensus))
    );
    let p = c.parameters.unwrap_or_default();
    let gateways = c.nodes.iter().filter(|n| n.role() == Role::Gateway).count();
    let _ = writeln!(
        o,
        "nodes            {} ({} gateways)",
        c.nodes.len(),
        gateways
    );
    // Bound the loop: `layers` is the peer's word.
    for layer in 1..=p.layers.min(64) {
        let n = c
            .nodes
            .iter()
            .filter(|n| n.role() == Role::Mix && n.layer == layer)
            .count();
        let _ = writeln!(o, "  layer {layer}        {n} mixes");
    }
    let _ = writeln!(
        o,
        "parameters       mean delay {} us (max {} us), client send every {} us, loop every {} us, drop every {} us, mix loop every {} us, {} layers, min protocol {}, geometry {:#x}",
        p.mean_delay_us,
        p.max_delay_us,
        p.client_send_interval_us,
        p.client_loop_interval_us,
        p.client_drop_interval_us,
        p.mix_loop_interval_us,
        p.layers,
        p.min_protocol_version,
        p.geometry_id
    );
    let _ = writeln!(
        o,
        "health           {} probes per node and epoch (scored from {}), out below {} delivery or over {} ms delay p90, strikes earned back from {}",
        p.health_probes_per_node,
        p.health_min_probes,
        percent(p.health_min_delivery_permille),
        p.health_max_delay_p90_ms,
        percent(p.health_good_delivery_permille)
    );
    let _ = writeln!(o, "shared random    {}", hex::encode(&c.shared_random));
    let _ = writeln!(o, "signers          {}", signed.signatures.len());
    for s in &signed.signatures {
        let _ = writeln!(o, "  {}", who(&s.authority));
    }
    for node in &c.nodes {
        let _ = writeln!(
            o,
            "  node {:>5} {} layer {} {} {} {}",
            node.node_id,
            role(node.role()),
            node.layer,
            node_peer(node),
            node.addresses.join(","),
            health_text(node.health.as_ref())
        );
    }
    let _ = writeln!(
        o,
        "excluded         {} (left out for health)",
        c.excluded.len()
    );
    for e in &c.excluded {
        let _ = writeln!(o, "{}", excluded_text(e));
    }
    Ok(out)
}

fn health_json(h: &NodeHealth) -> Value {
    json!({
        "status": status(h),
        "delivery_permille": h.delivery_permille,
        "delay_p90_ms": h.delay_p90_ms,
        "reports": h.reports,
        "strikes": h.strikes,
    })
}

/// `signed` as one JSON object: the header, the nodes (peer ids, roles, layers, addresses,
/// health) and the nodes left out for health.
pub(super) fn json(signed: &SignedConsensus) -> Result<Value> {
    let c = decode(signed)?;
    let nodes: Vec<Value> = c
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "peer_id": node_peer(n),
                "role": role(n.role()),
                "layer": n.layer,
                "addresses": n.addresses,
                "health": n.health.as_ref().map(health_json),
            })
        })
        .collect();
    let excluded: Vec<Value> = c
        .excluded
        .iter()
        .map(|e| {
            json!({
                "peer_id": who(&e.identity),
                "reason": reason(e.reason()),
                "delivery_permille": e.delivery_permille,
                "delay_p90_ms": e.delay_p90_ms,
                "strikes": e.strikes,
                "since_epoch": e.since_epoch,
                "until_epoch": e.until_epoch,
            })
        })
        .collect();
    let signers: Vec<String> = signed
        .signatures
        .iter()
        .map(|s| who(&s.authority))
        .collect();
    Ok(json!({
        "epoch": c.epoch,
        "valid_after_ms": c.valid_after_ms,
        "fresh_until_ms": c.fresh_until_ms,
        "valid_until_ms": c.valid_until_ms,
        "digest": hex::encode(consensus_digest(&signed.consensus)),
        "signers": signers,
        "nodes": nodes,
        "excluded": excluded,
    }))
}

#[cfg(test)]
mod tests {
    use libp2p_identity::Keypair;
    use p2pmix::proto::v1::ConsensusSignature;

    use super::*;

    fn key() -> (Vec<u8>, String) {
        let k = Keypair::generate_ed25519().public();
        (k.encode_protobuf(), k.to_peer_id().to_string())
    }

    /// A consensus of epoch 9: a measured mix, a gateway on probation, a mix nobody measures,
    /// and two nodes left out for health (one for low delivery, one slow).
    fn consensus() -> (SignedConsensus, Vec<String>) {
        let (keys, peers): (Vec<_>, Vec<_>) = (0..5).map(|_| key()).unzip();
        let node = |i: usize, role: Role, layer, health| ConsensusNode {
            node_id: i as u32,
            identity: keys[i].clone(),
            addresses: vec![format!("/ip4/127.0.0.1/tcp/{}", 4000 + i)],
            role: role as i32,
            layer,
            health,
            ..Default::default()
        };
        let c = Consensus {
            epoch: 9,
            nodes: vec![
                node(
                    0,
                    Role::Mix,
                    1,
                    Some(NodeHealth {
                        status: HealthStatus::Measured as i32,
                        delivery_permille: 987,
                        delay_p90_ms: 42,
                        reports: 3,
                        strikes: 1,
                    }),
                ),
                node(
                    1,
                    Role::Gateway,
                    0,
                    Some(NodeHealth {
                        status: HealthStatus::Probation as i32,
                        reports: 1,
                        ..Default::default()
                    }),
                ),
                node(2, Role::Mix, 2, None),
            ],
            excluded: vec![
                ExcludedNode {
                    identity: keys[3].clone(),
                    reason: ExclusionReason::LowDelivery as i32,
                    delivery_permille: 61,
                    delay_p90_ms: 0,
                    strikes: 1,
                    since_epoch: 8,
                    until_epoch: 9,
                },
                ExcludedNode {
                    identity: keys[4].clone(),
                    reason: ExclusionReason::Slow as i32,
                    delivery_permille: 990,
                    delay_p90_ms: 2100,
                    strikes: 3,
                    since_epoch: 7,
                    until_epoch: 11,
                },
            ],
            ..Default::default()
        };
        let signed = SignedConsensus {
            consensus: c.encode_to_vec(),
            signatures: vec![ConsensusSignature {
                authority: keys[0].clone(),
                ..Default::default()
            }],
        };
        (signed, peers)
    }

    #[test]
    fn the_text_carries_each_nodes_health_and_the_nodes_left_out() {
        let (signed, peers) = consensus();
        let out = text(&signed, 0).unwrap();
        let line = |peer: &str| {
            out.lines()
                .find(|l| l.contains(peer) && !l.trim_start().starts_with(peer))
                .unwrap_or_else(|| panic!("no node line for {peer}:\n{out}"))
                .to_string()
        };
        let l = line(&peers[0]);
        assert!(l.trim_start().starts_with("node     0 Mix layer 1 "), "{l}");
        assert!(
            l.ends_with("health measured delivery 98.7% delay-p90 42 ms reports 3 strikes 1"),
            "{l}"
        );
        assert!(
            line(&peers[1]).ends_with("health probation reports 1 strikes 0"),
            "{out}"
        );
        assert!(line(&peers[2]).ends_with("health none"), "{out}");

        let section: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.starts_with("excluded"))
            .collect();
        assert_eq!(section[0], "excluded         2 (left out for health)");
        assert_eq!(
            section[1],
            format!(
                "  {} low_delivery: delivery 6.1% delay-p90 0 ms strikes 1, out since epoch 8 until epoch 9",
                peers[3]
            )
        );
        assert_eq!(
            section[2],
            format!(
                "  {} slow: delivery 99.0% delay-p90 2100 ms strikes 3, out since epoch 7 until epoch 11",
                peers[4]
            )
        );
        assert_eq!(section.len(), 3, "{out}");
    }

    #[test]
    fn the_json_carries_the_same() {
        let (signed, peers) = consensus();
        let v = json(&signed).unwrap();
        assert_eq!(v["epoch"], 9);
        assert_eq!(v["signers"][0], peers[0]);
        assert_eq!(v["nodes"][0]["peer_id"], peers[0]);
        assert_eq!(v["nodes"][0]["layer"], 1);
        assert_eq!(v["nodes"][0]["role"], "Mix");
        assert_eq!(v["nodes"][0]["health"]["status"], "measured");
        assert_eq!(v["nodes"][0]["health"]["delivery_permille"], 987);
        assert_eq!(v["nodes"][0]["health"]["delay_p90_ms"], 42);
        assert_eq!(v["nodes"][0]["health"]["strikes"], 1);
        assert_eq!(v["nodes"][1]["health"]["status"], "probation");
        assert!(v["nodes"][2]["health"].is_null());
        let excluded = v["excluded"].as_array().unwrap();
        assert_eq!(excluded.len(), 2);
        assert_eq!(excluded[0]["peer_id"], peers[3]);
        assert_eq!(excluded[0]["reason"], "low_delivery");
        assert_eq!(excluded[0]["delivery_permille"], 61);
        assert_eq!(excluded[0]["since_epoch"], 8);
        assert_eq!(excluded[0]["until_epoch"], 9);
        assert_eq!(excluded[1]["peer_id"], peers[4]);
        assert_eq!(excluded[1]["reason"], "slow");
        assert_eq!(excluded[1]["delay_p90_ms"], 2100);
        assert_eq!(excluded[1]["strikes"], 3);
    }

    #[test]
    fn a_document_that_does_not_decode_is_an_error() {
        let signed = SignedConsensus {
            consensus: vec![0xff; 7],
            signatures: Vec::new(),
        };
        assert!(text(&signed, 0).is_err());
        assert!(json(&signed).is_err());
    }
}
