//! What an operator runs: settings from file, environment and flags; a network written by
//! `p2pmix testnet genconfig` and started exactly as its files say, watched through `/health`,
//! `/ready` and `/metrics` before admission, after admission and once the consensus is stale.
#![allow(missing_docs, unreachable_pub)]

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

mod common;
use common::{BIN, Running, Scratch, unix_ms, wait_for};

const EPOCH_MS: u64 = 8_000;

fn p2pmix(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(BIN);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `key` in a printed configuration.
fn setting(printed: &str, key: &str) -> toml::Value {
    let table: toml::Table = toml::from_str(printed).expect("--print-config prints TOML");
    table[key].clone()
}

#[test]
fn an_environment_variable_sets_a_value_and_a_flag_overrides_it() {
    let scratch = Scratch::new("operator-env");
    let file = scratch.0.join("node.toml");
    fs::write(
        &file,
        "data_dir = \"d\"\nauthorities = \"a.toml\"\nfamily = \"from-file\"\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let print = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["node", "--config", &file, "--print-config"];
        args.extend_from_slice(flags);
        let (ok, out, err) = p2pmix(&args, env);
        assert!(ok, "{err}");
        out
    };
    // The file alone.
    let printed = print(&[], &[]);
    assert_eq!(setting(&printed, "family").as_str(), Some("from-file"));
    assert_eq!(setting(&printed, "role").as_str(), Some("mix"));
    // The environment over the file; lists comma-separated.
    let env = [
        ("P2PMIX_NODE_FAMILY", "from-env"),
        ("P2PMIX_NODE_ROLE", "gateway"),
        (
            "P2PMIX_NODE_LISTEN",
            "/ip4/127.0.0.1/tcp/4100,/ip4/127.0.0.1/tcp/4101",
        ),
    ];
    let printed = print(&[], &env);
    assert_eq!(setting(&printed, "family").as_str(), Some("from-env"));
    assert_eq!(setting(&printed, "role").as_str(), Some("gateway"));
    assert_eq!(
        setting(&printed, "listen").as_array().map(Vec::len),
        Some(2)
    );
    // A flag over the environment.
    let printed = print(
        &["--family", "from-flag", "--listen", "/ip4/127.0.0.1/tcp/1"],
        &env,
    );
    assert_eq!(setting(&printed, "family").as_str(), Some("from-flag"));
    assert_eq!(
        setting(&printed, "listen").as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(setting(&printed, "role").as_str(), Some("gateway"));
    // The printed configuration is itself a configuration that gives the same.
    let again = scratch.0.join("again.toml");
    fs::write(&again, &printed).unwrap();
    let (ok, reprinted, err) = p2pmix(
        &[
            "node",
            "--config",
            &again.display().to_string(),
            "--print-config",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(
        toml::from_str::<toml::Table>(&reprinted).unwrap(),
        toml::from_str::<toml::Table>(&printed).unwrap()
    );
    // A malformed value in the environment is refused with its name.
    let (ok, _, err) = p2pmix(
        &["node", "--config", &file, "--print-config"],
        &[("P2PMIX_NODE_METRICS", "not-an-address")],
    );
    assert!(!ok && err.contains("metrics"), "{err}");
    // The Sphinx workers: unset (one per core), from the environment, over it from a flag, and
    // refused out of range.
    assert!(setting_opt(&print(&[], &[]), "sphinx_workers").is_none());
    let workers = [("P2PMIX_NODE_SPHINX_WORKERS", "2")];
    assert_eq!(
        setting(&print(&[], &workers), "sphinx_workers").as_integer(),
        Some(2)
    );
    assert_eq!(
        setting(
            &print(&["--sphinx-workers", "1"], &workers),
            "sphinx_workers"
        )
        .as_integer(),
        Some(1)
    );
    let (ok, _, err) = p2pmix(
        &[
            "node",
            "--config",
            &file,
            "--print-config",
            "--sphinx-workers",
            "0",
        ],
        &[],
    );
    assert!(!ok && err.contains("sphinx_workers 0"), "{err}");
}

/// The value of `key` in a printed configuration, if it is set (unset ones are comments).
fn setting_opt(printed: &str, key: &str) -> Option<toml::Value> {
    let table: toml::Table = toml::from_str(printed).expect("--print-config prints TOML");
    table.get(key).cloned()
}

/// `GET path` at `addr`: status code and body, or None if it does not answer.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A block of `n` consecutive free ports on 127.0.0.1 (bound once, released).
fn free_ports(n: u16) -> u16 {
    for attempt in 0..200u32 {
        let base = 20_000
            + ((unix_ms() as u32)
                .wrapping_mul(7919)
                .wrapping_add(attempt * 997)
                % 40_000) as u16;
        let held: Vec<TcpListener> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no block of {n} free ports");
}

struct Proc {
    name: String,
    role: String,
    metrics: String,
}

fn start(dir: &Path, role: &str, env: &[(&str, &str)]) -> Running {
    let log = fs::File::create(dir.join("log")).unwrap();
    let (command, file) = if role == "authority" {
        ("authority", "authority.toml")
    } else {
        ("node", "node.toml")
    };
    let mut c = Command::new(BIN);
    c.args([command, "--config", file])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        c.env(k, v);
    }
    Running {
        child: c.spawn().unwrap(),
    }
}

fn status(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["status"].as_str().unwrap_or("?").to_string()
}

#[test]
fn a_network_from_genconfig_comes_up_and_its_nodes_say_when_they_are_ready() {
    let scratch = Scratch::new("operator-genconfig");
    let out = scratch.0.join("net");
    // One host: the k-th process listens on base + k; a block each for p2p and metrics.
    let base = free_ports(22);
    let genesis = unix_ms() + 15_000;
    let (ok, printed, err) = p2pmix(
        &[
            "testnet",
            "genconfig",
            "--hosts",
            "127.0.0.1",
            "--test-network",
            "--authorities",
            "3",
            "--gateways",
            "2",
            "--mixes",
            "6",
            "--p2p-port",
            &base.to_string(),
            "--metrics-port",
            &(base + 11).to_string(),
            "--epoch-ms",
            &EPOCH_MS.to_string(),
            "--genesis-unix-ms",
            &genesis.to_string(),
            "--out",
            &out.display().to_string(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(printed.contains("mix-5"), "{printed}");
    let inventory: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("network.json")).unwrap()).unwrap();
    let entries = inventory["processes"].as_array().unwrap();
    assert_eq!(entries.len(), 11);

    // Start every process from its own directory, as on a real host; authority-0 logs JSON.
    let procs: Vec<Proc> = entries
        .iter()
        .map(|e| Proc {
            name: e["name"].as_str().unwrap().to_string(),
            role: e["role"].as_str().unwrap().to_string(),
            metrics: e["metrics"].as_str().unwrap().to_string(),
        })
        .collect();
    let mut running: Vec<Option<Running>> = procs
        .iter()
        .map(|p| {
            let env: &[(&str, &str)] = if p.name == "authority-0" {
                &[("P2PMIX_LOG_FORMAT", "json")]
            } else {
                &[]
            };
            Some(start(&out.join(&p.name), &p.role, env))
        })
        .collect();
    let nodes: Vec<&Proc> = procs.iter().filter(|p| p.role != "authority").collect();
    let dump = || {
        for p in &procs {
            let log = fs::read_to_string(out.join(&p.name).join("log")).unwrap_or_default();
            eprintln!("--- {} ---", p.name);
            for line in log
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("{line}");
            }
        }
    };

    // Healthy as soon as they run; not ready before the first consensus.
    for p in &procs {
        wait_for(
            &format!("{} to be healthy", p.name),
            Duration::from_secs(60),
            || get(&p.metrics, "/health").filter(|(code, _)| *code == 200),
        );
    }
    assert!(
        unix_ms() < genesis + EPOCH_MS,
        "the processes took too long to start to see them before their first consensus"
    );
    for p in &nodes {
        let (code, body) = get(&p.metrics, "/ready").expect("ready answers");
        assert_eq!(
            (code, status(&body).as_str()),
            (503, "no_consensus"),
            "{}: {body}",
            p.name
        );
    }

    // Admitted in the first consensus (epoch 1's), every one of them.
    let limit = Duration::from_millis(genesis + 3 * EPOCH_MS - unix_ms() + 30_000);
    for p in &nodes {
        let ready = std::panic::catch_unwind(|| {
            wait_for(&format!("{} to be ready", p.name), limit, || {
                get(&p.metrics, "/ready").filter(|(code, _)| *code == 200)
            })
        });
        let Ok((_, body)) = ready else {
            dump();
            panic!("{} never became ready", p.name);
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["epoch"].as_u64() >= Some(1), "{body}");
        assert_eq!(v["layer"].is_u64(), p.role == "mix", "{}: {body}", p.name);
    }

    // The authority's own metrics, its build info, its readiness and its JSON log.
    let authority = &procs[0];
    let (code, metrics) = get(&authority.metrics, "/metrics").unwrap();
    assert_eq!(code, 200);
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("p2pmix_authority_consensus_published_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("p2pmix_authority_accepted_total{kind=\"descriptor\"}") >= 8.0,
        "{metrics}"
    );
    assert!(
        value("p2pmix_authority_state_writes_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("p2pmix_build_info{version=\""),
        "{metrics}"
    );
    assert_eq!(get(&authority.metrics, "/ready").map(|r| r.0), Some(200));
    let log = fs::read_to_string(out.join("authority-0/log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "authority started" && l["level"] == "INFO"),
        "{log}"
    );

    // Two of three authorities stop: no further consensus. Once the epoch moves past the last
    // one, the nodes still route on it (valid one more epoch) but are no longer ready.
    assert_eq!(
        (procs[1].role.as_str(), procs[2].role.as_str()),
        ("authority", "authority")
    );
    running[1] = None;
    running[2] = None;
    let limit = Duration::from_millis(3 * EPOCH_MS + 20_000);
    for p in &nodes {
        wait_for(
            &format!("{} to report a stale consensus", p.name),
            limit,
            || {
                get(&p.metrics, "/ready")
                    .filter(|(code, body)| *code == 503 && status(body) == "stale")
            },
        );
    }
    wait_for("the authority to report a stale consensus", limit, || {
        get(&authority.metrics, "/ready")
            .filter(|(code, body)| *code == 503 && status(body) == "stale")
    });
}

#[test]
fn a_node_holds_at_most_max_connections_incoming_connections() {
    use futures::StreamExt;
    use libp2p::{
        Multiaddr,
        identity::Keypair,
        swarm::{SwarmEvent, dummy},
    };

    let scratch = Scratch::new("operator-limit");
    let key = Keypair::generate_ed25519().public();
    fs::write(
        scratch.0.join("authorities.toml"),
        format!(
            "[[authority]]\npublic_key = \"{}\"\n[network]\ngenesis_unix_ms = {}\nepoch_ms = 60000\n",
            key.to_peer_id(),
            unix_ms()
        ),
    )
    .unwrap();
    let log = fs::File::create(scratch.0.join("log")).unwrap();
    let _node = Running {
        child: Command::new(BIN)
            .args([
                "node",
                "--authorities",
                "authorities.toml",
                "--data-dir",
                "data",
                "--max-connections",
                "2",
            ])
            .current_dir(&scratch.0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    };
    let address: Multiaddr = wait_for("the node to listen", Duration::from_secs(30), || {
        fs::read_to_string(scratch.0.join("data/listen-addrs"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.parse().ok()))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Five peers, each its own identity, dial the node; it keeps two.
    let connected = runtime.block_on(async {
        let mut swarms: Vec<_> = (0..5)
            .map(|_| {
                let mut s =
                    p2pmix::build_swarm(Keypair::generate_ed25519(), |_| dummy::Behaviour).unwrap();
                s.dial(address.clone()).unwrap();
                s
            })
            .collect();
        let mut open = vec![false; swarms.len()];
        let mut settled = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // Settled: every dial has ended (established or not) and nothing changed for 2 s.
        while tokio::time::Instant::now() < deadline && settled < 20 {
            let mut changed = false;
            for (i, s) in swarms.iter_mut().enumerate() {
                while let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_millis(10), s.next()).await
                {
                    changed = true;
                    match event {
                        SwarmEvent::ConnectionEstablished { .. } => open[i] = true,
                        SwarmEvent::ConnectionClosed { .. } => open[i] = false,
                        _ => {}
                    }
                }
            }
            settled = if changed { 0 } else { settled + 1 };
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        open.iter().filter(|o| **o).count()
    });
    assert_eq!(
        connected, 2,
        "the node holds exactly max_connections incoming connections"
    );
}

/// The workspace root (deploy/ and the sources are read from there).
fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `p2pmix_*` names in `text`: a name starts where the character before it cannot be part
/// of an identifier.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(i) = text[from..].find("p2pmix_") {
        let start = from + i;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || **b == b'_')
                .count();
        if start == 0 || !ident(bytes[start - 1]) {
            names.insert(text[start..end].to_string());
        }
        from = end;
    }
    names
}

#[test]
fn the_alert_rules_and_the_dashboard_use_only_metrics_the_processes_export() {
    let root = workspace();
    // What the code exports: the string literals the metrics macros are given.
    let mut files = Vec::new();
    for krate in ["mix", "bootstrap", "overlay"] {
        sources(&root.join(krate).join("src"), &mut files);
    }
    let mut exported = std::collections::BTreeSet::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for name in metric_names(&text) {
            if text.contains(&format!("\"{name}\"")) {
                exported.insert(name);
            }
        }
    }
    assert!(
        exported.contains("p2pmix_ready") && exported.len() > 40,
        "the exported names were not found: {exported:?}"
    );
    // Histograms are scraped as NAME_bucket, NAME_sum and NAME_count.
    let known = |name: &str| {
        exported.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| exported.contains(base))
            })
    };
    for file in [
        "deploy/monitoring/alerts.yml",
        "deploy/monitoring/grafana-dashboard.json",
    ] {
        let text = fs::read_to_string(root.join(file)).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 10, "{file} names only {used:?}");
        let unknown: Vec<&String> = used.iter().filter(|n| !known(n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics no process exports: {unknown:?}"
        );
    }
}

/// The arguments a Kubernetes manifest gives its container (the `- ` lines under `args:`).
fn manifest_args(manifest: &str) -> Vec<String> {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for line in lines.by_ref() {
        match line.trim().strip_prefix("- ") {
            Some(arg) => args.push(arg.to_string()),
            None => break,
        }
    }
    args
}

/// The settings `--print-config` prints for `args` (which must be accepted), with the identity
/// and authorities files it names checked to exist.
fn printed_settings(args: &[String]) -> toml::Table {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--print-config");
    let (ok, out, err) = p2pmix(&args, &[]);
    assert!(ok, "{args:?} refused: {err}");
    let table: toml::Table = toml::from_str(&out).expect("--print-config prints TOML");
    for key in ["identity", "authorities"] {
        if let Some(path) = table.get(key).and_then(|v| v.as_str()) {
            assert!(
                Path::new(path).is_file(),
                "{args:?}: {key} {path} is missing"
            );
        }
    }
    table
}

#[test]
fn the_kubernetes_manifests_and_the_systemd_units_find_every_file_genconfig_wrote() {
    let root = workspace();
    let scratch = Scratch::new("operator-deploy");
    let net = scratch.0.join("net");
    let net_s = net.display().to_string();
    let (ok, _, err) = p2pmix(
        &[
            "testnet",
            "genconfig",
            "--out",
            &net_s,
            "--authorities",
            "1",
            "--gateways",
            "1",
            "--mixes",
            "3",
            "--host-pattern",
            "{name}.{role}.p2pmix.svc.cluster.local",
            "--test-network",
        ],
        &[],
    );
    assert!(ok, "genconfig: {err}");
    let identity = |name: &str| match name.starts_with("authority") {
        true => net.join(name).join("identity.key"),
        false => net.join(name).join("data").join("identity.key"),
    };

    // Kubernetes: the ConfigMap's files side by side (NAME.toml, authorities.toml), the Secret's
    // identities as NAME.key, a volume for the data.
    let config = scratch.0.join("etc-p2pmix-config");
    let keys = scratch.0.join("etc-p2pmix-keys");
    fs::create_dir_all(&config).unwrap();
    fs::create_dir_all(&keys).unwrap();
    fs::copy(
        net.join("authorities.toml"),
        config.join("authorities.toml"),
    )
    .unwrap();
    for (name, file) in [
        ("authority-0", "authority.toml"),
        ("gateway-0", "node.toml"),
        ("mix-0", "node.toml"),
    ] {
        fs::copy(
            net.join(name).join(file),
            config.join(format!("{name}.toml")),
        )
        .unwrap();
        fs::copy(identity(name), keys.join(format!("{name}.key"))).unwrap();
    }
    for (manifest, pod, role) in [
        ("authorities.yaml", "authority-0", "authority"),
        ("gateways.yaml", "gateway-0", "gateway"),
        ("mixes.yaml", "mix-0", "mix"),
    ] {
        let text = fs::read_to_string(root.join("deploy/kubernetes").join(manifest)).unwrap();
        let data = scratch.0.join(format!("data-{pod}"));
        let args: Vec<String> = manifest_args(&text)
            .iter()
            .map(|a| {
                a.replace("$(POD_NAME)", pod)
                    .replace("/etc/p2pmix/config", &config.display().to_string())
                    .replace("/etc/p2pmix/keys", &keys.display().to_string())
                    .replace("/var/lib/p2pmix", &data.display().to_string())
            })
            .collect();
        assert!(args.len() >= 4, "{manifest}: no args found");
        let table = printed_settings(&args);
        assert_eq!(
            table["data_dir"].as_str(),
            Some(data.display().to_string().as_str())
        );
        if role != "authority" {
            assert_eq!(table["role"].as_str(), Some(role), "{manifest}");
            // What the others dial is the pod's name under the StatefulSet's headless Service.
            let announce = table["announce"].as_array().unwrap()[0].as_str().unwrap();
            assert_eq!(
                announce,
                format!("/dns/{pod}.{role}.p2pmix.svc.cluster.local/tcp/4100")
            );
            // The manifests' probes and ports: 4100 and 9100 on every interface.
            assert_eq!(table["metrics"].as_str(), Some("0.0.0.0:9100"));
            assert!(text.contains("containerPort: 4100") && text.contains("containerPort: 9100"));
        }
    }

    // systemd: /etc/p2pmix/NAME/ holds genconfig's directory, the identity comes as a
    // credential, the state directory is the data directory.
    for (unit, name) in [
        ("p2pmix-authority@.service", "authority-0"),
        ("p2pmix-node@.service", "mix-1"),
    ] {
        let text = fs::read_to_string(root.join("deploy/systemd").join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("an ExecStart line");
        let etc = scratch.0.join("etc");
        let credentials = scratch.0.join(format!("credentials-{name}"));
        fs::create_dir_all(&credentials).unwrap();
        fs::copy(identity(name), credentials.join("identity.key")).unwrap();
        let state = scratch.0.join(format!("state-{name}"));
        let installed = etc.join(name);
        fs::create_dir_all(&installed).unwrap();
        for entry in fs::read_dir(net.join(name)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
                fs::copy(&path, installed.join(path.file_name().unwrap())).unwrap();
            }
        }
        let args: Vec<String> = exec
            .split_whitespace()
            .skip(1) // the binary
            .map(|a| {
                a.replace("%i", name)
                    .replace("/etc/p2pmix", &etc.display().to_string())
                    .replace(
                        "${CREDENTIALS_DIRECTORY}",
                        &credentials.display().to_string(),
                    )
                    .replace("${STATE_DIRECTORY}", &state.display().to_string())
            })
            .collect();
        let table = printed_settings(&args);
        assert_eq!(
            table["data_dir"].as_str(),
            Some(state.display().to_string().as_str()),
            "{unit}"
        );
    }
}
