use std::net::Ipv4Addr;

use super::*;

const CONFIG: AdmissionConfig = AdmissionConfig {
    client: Rate {
        per_second: 10.0,
        burst: 2.0,
    },
    node: Rate {
        per_second: 100.0,
        burst: 20.0,
    },
    max_faults: 3,
    ban: Duration::from_secs(60),
    fault_half_life: Duration::from_secs(3600),
    per_address: AddressShare {
        clients_rate: 4.0,
        identities: 64,
        connections: 64,
    },
    per_prefix: AddressShare {
        clients_rate: 16.0,
        identities: 256,
        connections: 256,
    },
};

/// Peers below 100 are nodes; every client has an address of its own unless a test says
/// otherwise.
fn origin(peer: u32) -> Origin {
    Origin {
        node: peer < 100,
        address: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (peer << 8)))),
    }
}

fn from(ip: [u8; 4]) -> Origin {
    Origin {
        node: false,
        address: Some(IpAddr::from(ip)),
    }
}

fn rate_limited(fault: Fault) -> Verdict {
    Verdict::Refuse {
        reason: DropReason::RateLimited,
        fault,
    }
}

#[test]
fn a_client_over_its_rate_is_refused_and_counted() {
    let t0 = Instant::now();
    let mut a = Admission::new(CONFIG);
    assert_eq!(a.admit(t0, &500, origin(500)), Verdict::Admit);
    assert_eq!(a.admit(t0, &500, origin(500)), Verdict::Admit);
    assert_eq!(
        a.admit(t0, &500, origin(500)),
        rate_limited(Fault::Counted { faults: 1 })
    );
    // 100 ms at 10 per second: one more token.
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(a.admit(t1, &500, origin(500)), Verdict::Admit);
    assert_eq!(
        a.admit(t1, &500, origin(500)),
        rate_limited(Fault::Counted { faults: 2 })
    );
    // Another peer has its own bucket.
    assert_eq!(a.admit(t1, &501, origin(501)), Verdict::Admit);
}

#[test]
fn nodes_get_the_node_rate() {
    let t0 = Instant::now();
    let mut a = Admission::new(CONFIG);
    let admitted = |a: &mut Admission<u32>, peer| {
        (0..50)
            .filter(|_| a.admit(t0, &peer, origin(peer)) == Verdict::Admit)
            .count()
    };
    assert_eq!(admitted(&mut a, 7), 20, "a node's burst");
    assert_eq!(admitted(&mut a, 700), 2, "a client's burst");
}

#[test]
fn a_peer_is_banned_after_max_faults_and_admitted_after_the_ban() {
    let t0 = Instant::now();
    let mut a = Admission::new(CONFIG);
    assert_eq!(a.admit(t0, &500, origin(500)), Verdict::Admit);
    for faults in 1..=3 {
        assert_eq!(
            a.fault(t0, &500, DropReason::WrongSize),
            Fault::Counted { faults }
        );
    }
    let until = t0 + CONFIG.ban;
    assert_eq!(
        a.fault(t0, &500, DropReason::WrongSize),
        Fault::Banned { until }
    );
    assert_eq!(a.faults(t0, &500), None, "the record goes with the ban");
    assert!(a.is_banned(t0, &500));
    // Refused while banned, without counting anything.
    let during = until - Duration::from_millis(1);
    assert_eq!(
        a.admit(during, &500, origin(500)),
        rate_limited(Fault::NotCounted)
    );
    assert_eq!(a.tracked(), 0);
    // Afresh once the ban is over.
    assert!(!a.is_banned(until, &500));
    assert_eq!(a.admit(until, &500, origin(500)), Verdict::Admit);
    assert_eq!(a.faults(until, &500), Some(0.0));
}

#[test]
fn rate_limiting_alone_gets_a_peer_banned() {
    let t0 = Instant::now();
    let mut a = Admission::new(CONFIG);
    let verdicts: Vec<Verdict> = (0..6).map(|_| a.admit(t0, &500, origin(500))).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Admit,
            Verdict::Admit,
            rate_limited(Fault::Counted { faults: 1 }),
            rate_limited(Fault::Counted { faults: 2 }),
            rate_limited(Fault::Counted { faults: 3 }),
            rate_limited(Fault::Banned {
                until: t0 + CONFIG.ban
            }),
        ]
    );
}

#[test]
fn replays_never_count_and_bad_macs_from_nodes_do_not() {
    let t0 = Instant::now();
    let mut a = Admission::new(CONFIG);
    a.admit(t0, &7, origin(7));
    a.admit(t0, &700, origin(700));
    // An honest client whose packets the filter takes for replays (its false positives) is
    // never banned for them, however many.
    for _ in 0..1_000 {
        assert_eq!(a.fault(t0, &700, DropReason::Replay), Fault::NotCounted);
    }
    assert_eq!(
        a.fault(t0, &700, DropReason::ReplayFilterFull),
        Fault::NotCounted
    );
    assert_eq!(a.fault(t0, &7, DropReason::BadMac), Fault::NotCounted);
    assert_eq!(
        a.fault(t0, &7, DropReason::WrongSize),
        Fault::Counted { faults: 1 },
        "framing counts against nodes too"
    );
    assert_eq!(
        a.fault(t0, &700, DropReason::BadMac),
        Fault::NotCounted,
        "nor a client's bad MAC: an honest packet for a retired key fails it too"
    );
    for reason in [
        DropReason::UnknownKey,
        DropReason::UnknownNextHop,
        DropReason::QueueFull,
    ] {
        assert_eq!(a.fault(t0, &700, reason), Fault::NotCounted);
    }
    assert_eq!(
        a.fault(t0, &701, DropReason::WrongSize),
        Fault::NotCounted,
        "no record, nothing to count"
    );
}

#[test]
fn faults_decay_so_a_long_honest_life_is_not_a_ban() {
    let t0 = Instant::now();
    let config = AdmissionConfig {
        fault_half_life: Duration::from_secs(10),
        ..CONFIG
    };
    let mut a = Admission::new(config);
    a.admit(t0, &500, origin(500));
    // One corrupted frame every 10 s for a day: the score stays at 2 (it never decayed before
    // this change: the peer was banned after its fourth).
    for i in 0..8_640u64 {
        let now = t0 + Duration::from_secs(10 * i);
        a.admit(now, &500, origin(500));
        assert!(matches!(
            a.fault(now, &500, DropReason::WrongSize),
            Fault::Counted { faults: 1..=2 }
        ));
    }
    // Four in one instant still ban.
    let now = t0 + Duration::from_secs(100_000);
    let last = (0..4)
        .map(|_| a.fault(now, &500, DropReason::WrongSize))
        .last();
    assert!(matches!(last, Some(Fault::Banned { .. })));
}

#[test]
fn the_tracking_bound_holds_even_when_every_record_has_faults() {
    let t0 = Instant::now();
    let mut a = Admission::new(CONFIG);
    let clients = 1_000..1_000 + MAX_TRACKED_PEERS as u32;
    for peer in clients.clone() {
        assert_eq!(a.admit(t0, &peer, origin(peer)), Verdict::Admit);
        a.fault(t0, &peer, DropReason::WrongSize);
    }
    assert_eq!(a.tracked(), MAX_TRACKED_PEERS);
    // A peer already tracked does not make room.
    a.admit(t0, &1_001, origin(1_001));
    assert_eq!(a.tracked(), MAX_TRACKED_PEERS);
    // Fresh identities keep coming: the table never grows past its bound.
    for peer in 200_000..210_000u32 {
        let now = t0 + Duration::from_millis(u64::from(peer - 200_000));
        a.admit(now, &peer, origin(peer));
        assert!(a.tracked() <= MAX_TRACKED_PEERS, "{} records", a.tracked());
    }
    // The newest are there; the least recently seen went.
    assert_eq!(a.faults(t0, &209_999), Some(0.0));
}

#[test]
fn a_thousand_identities_from_one_address_are_one_address() {
    let t0 = Instant::now();
    let mut a = Admission::new(CONFIG);
    let attacker = [192, 0, 2, 66];
    let mut admitted = 0;
    for peer in 10_000..11_000u32 {
        if a.admit(t0, &peer, from(attacker)) == Verdict::Admit {
            admitted += 1;
        }
    }
    // The address's identities are capped, and all of them share its bucket: four clients'
    // burst of two frames each.
    assert_eq!(a.tracked(), 64, "identities one address may hold");
    assert_eq!(admitted, 8, "four clients' burst for the whole address");
    // A second address in the same /24 shares the prefix bucket (16 clients' burst) too.
    let neighbour = [192, 0, 2, 67];
    let more = (20_000..20_100u32)
        .filter(|p| a.admit(t0, p, from(neighbour)) == Verdict::Admit)
        .count();
    assert_eq!(more, 8);
    // An honest client elsewhere is untouched, and so are nodes behind the attacker's address.
    assert_eq!(a.admit(t0, &5_000, from([198, 51, 100, 1])), Verdict::Admit);
    let node_there = Origin {
        node: true,
        address: Some(IpAddr::from(attacker)),
    };
    assert_eq!(a.admit(t0, &7, node_there), Verdict::Admit);
    // Frames refused for the address do not count against the peer.
    assert_eq!(a.faults(t0, &10_000), Some(0.0));
}

#[test]
fn a_new_client_rate_resets_clients_but_not_nodes() {
    let t0 = Instant::now();
    let mut a = Admission::new(CONFIG);
    for peer in [7, 700] {
        a.admit(t0, &peer, origin(peer));
    }
    a.set_client_rate(CONFIG.client, |p| *p < 100);
    assert_eq!(a.tracked(), 2, "the same rate changes nothing");
    let faster = Rate {
        per_second: 50.0,
        burst: 5.0,
    };
    a.set_client_rate(faster, |p| *p < 100);
    assert_eq!(a.config().client, faster);
    assert_eq!((a.faults(t0, &7), a.faults(t0, &700)), (Some(0.0), None));
    // The address's identity count followed the dropped record: 64 fit at 700's address.
    let address = origin(700);
    for peer in 1_000..1_064u32 {
        a.admit(t0, &peer, address);
    }
    assert_eq!(a.tracked(), 1 + 64);
}
