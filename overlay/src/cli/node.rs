//! `p2pmix node`: run a mix node or gateway, `node init` (a commented configuration file with
//! every default) and `node --print-config` (the configuration in effect).
//!
//! Every setting comes from, in order of precedence: a flag, its `P2PMIX_NODE_*` environment
//! variable, the configuration file, the default. The file's keys are the flags' names
//! (`--data-dir` is `data_dir`); the comments `init` writes are the flags' own help.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use libp2p_core::Multiaddr;
use p2pmix::{
    config::{
        DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, NODE_FILE_KEYS, NodeConfig, NodeOverrides,
        NodeRole, NodeSettings, ReplaySettings, TraceConfig,
    },
    node::run_node,
};
use toml::Value;

use super::{
    runtime, shutdown_signal,
    template::{Toml, integer, path, string, strings},
};

/// `p2pmix node [init]`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct NodeCommand {
    #[command(subcommand)]
    command: Option<NodeSubcommand>,
    #[command(flatten)]
    args: NodeArgs,
}

#[derive(Subcommand)]
enum NodeSubcommand {
    /// Write a node configuration file with every setting at its default and what each means.
    Init {
        /// The file to write.
        #[arg(long, default_value = "node.toml")]
        out: PathBuf,
        /// What the node does (written into the file).
        #[arg(long, value_enum, default_value_t = NodeRole::Mix)]
        role: NodeRole,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// The node's flags: each is also a key of the configuration file and an environment variable.
#[derive(Args)]
pub(crate) struct NodeArgs {
    /// The node's configuration file (TOML; `p2pmix node init` writes one).
    #[arg(long, env = "P2PMIX_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Epoch keys, cached consensus documents, listen-addrs and metrics-addr live here (and the
    /// identity, unless `identity` says otherwise).
    #[arg(long, env = "P2PMIX_NODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The pinned authorities file (with a [network] section giving the epoch schedule).
    #[arg(long, env = "P2PMIX_NODE_AUTHORITIES")]
    authorities: Option<PathBuf>,
    /// The identity key file, if not DATA_DIR/identity.key (created at the first start); a file
    /// named here must exist, e.g. a systemd credential or a mounted secret.
    #[arg(long, env = "P2PMIX_NODE_IDENTITY")]
    identity: Option<PathBuf>,
    /// Where to listen (repeatable, or comma-separated in the environment).
    #[arg(long, env = "P2PMIX_NODE_LISTEN", value_delimiter = ',')]
    listen: Vec<Multiaddr>,
    /// Where other nodes and clients reach this node (repeatable, or comma-separated in the
    /// environment), e.g. /dns4/mix1.example.org/tcp/4100 or /ip4/203.0.113.7/tcp/4100: the
    /// descriptor carries these (default: the public listen addresses). Behind NAT or in a
    /// container, give the public one.
    #[arg(long, env = "P2PMIX_NODE_ANNOUNCE", value_delimiter = ',')]
    announce: Vec<Multiaddr>,
    /// Peers to join the network through (repeatable, or comma-separated in the environment),
    /// each ending in /p2p/PEER_ID.
    #[arg(long, env = "P2PMIX_NODE_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<Multiaddr>,
    /// What this node does: mix or gateway.
    #[arg(long, value_enum, env = "P2PMIX_NODE_ROLE")]
    role: Option<NodeRole>,
    /// Serve Prometheus metrics at http://ADDR/metrics and the node's status at /health and
    /// /ready (port 0 picks one; see DATA_DIR/metrics-addr). Its counters describe the node's
    /// traffic: let only your Prometheus reach it.
    #[arg(long, env = "P2PMIX_NODE_METRICS")]
    metrics: Option<std::net::SocketAddr>,
    /// Operator family: no route uses two nodes of one family.
    #[arg(long, env = "P2PMIX_NODE_FAMILY")]
    family: Option<String>,
    /// Incoming connections held at most (default 8192); further ones are refused. Each is an
    /// open file: the open-files limit must leave room for this, the consensus's nodes and the
    /// data directory.
    #[arg(long, env = "P2PMIX_NODE_MAX_CONNECTIONS")]
    max_connections: Option<u32>,
    /// Memory all replay filters together may take, MiB (default 1024; docs/sphinx.md). A full
    /// filter refuses fresh packets rather than forget a tag.
    #[arg(long, env = "P2PMIX_NODE_REPLAY_MEMORY_MIB")]
    replay_memory_mib: Option<u64>,
    /// Packets per second an epoch key's replay filter is sized for at least (default 1000);
    /// the node sizes for more when it measured more.
    #[arg(long, env = "P2PMIX_NODE_REPLAY_MIN_RATE")]
    replay_min_rate: Option<f64>,
    /// Threads that unwrap Sphinx packets (default: one per core the process may use; 1 to
    /// 256). Fewer leave cores to other work on a shared host.
    #[arg(long, env = "P2PMIX_NODE_SPHINX_WORKERS")]
    sphinx_workers: Option<usize>,
    /// Test networks only: record what a global passive observer sees, one line per packet per
    /// link end (time, neighbour, packet tag), into FILE. Refused unless the authorities file
    /// says `test_network = true`; never a file key.
    #[arg(long, value_name = "FILE", env = "P2PMIX_NODE_TRACE_LINKS")]
    trace_links: Option<PathBuf>,
    /// Test networks only: record the ground truth only this node knows (which packet became
    /// which) into FILE. Refused unless the authorities file says `test_network = true`; never
    /// a file key.
    #[arg(long, value_name = "FILE", env = "P2PMIX_NODE_TRACE_TRUTH")]
    trace_truth: Option<PathBuf>,
    /// Print the configuration in effect (file, environment and flags) as TOML and exit.
    #[arg(long, env = "P2PMIX_NODE_PRINT_CONFIG")]
    print_config: bool,
}

impl NodeArgs {
    fn settings(self) -> Result<NodeSettings> {
        Ok(NodeSettings::resolve(
            self.config.as_deref(),
            NodeOverrides {
                data_dir: self.data_dir,
                authorities: self.authorities,
                identity: self.identity,
                listen: self.listen,
                bootstrap: self.bootstrap,
                announce: self.announce,
                role: self.role,
                metrics: self.metrics,
                family: self.family,
                max_connections: self.max_connections,
                replay_memory_mib: self.replay_memory_mib,
                replay_min_rate: self.replay_min_rate,
                sphinx_workers: self.sphinx_workers,
                trace: TraceConfig {
                    links: self.trace_links,
                    truth: self.trace_truth,
                    ..TraceConfig::default()
                },
            },
        )?)
    }
}

/// Runs `p2pmix node …`.
pub(crate) fn run(command: NodeCommand) -> Result<ExitCode> {
    match command.command {
        Some(NodeSubcommand::Init { out, role, force }) => {
            let text = render(&init_settings(role), Header::Init);
            write_new(&out, &text, force)?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let print = command.args.print_config;
            let settings = command.args.settings()?;
            if print {
                print!("{}", render(&absolute(settings)?, Header::Effective));
                return Ok(ExitCode::SUCCESS);
            }
            let config = NodeConfig::from_settings(settings)?;
            runtime()?.block_on(async { run_node(config, shutdown_signal()).await })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes `text` to `out`, refusing to replace a file unless `force`.
pub(crate) fn write_new(out: &Path, text: &str, force: bool) -> Result<()> {
    if out.exists() && !force {
        bail!("{} exists (--force replaces it)", out.display());
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}

/// What `init` writes: every default, and the two files a node needs beside it.
pub(crate) fn init_settings(role: NodeRole) -> NodeSettings {
    NodeSettings {
        data_dir: "data".into(),
        authorities: "authorities.toml".into(),
        identity: None,
        listen: DEFAULT_LISTEN.parse().map(|a| vec![a]).unwrap_or_default(),
        bootstrap: Vec::new(),
        announce: Vec::new(),
        role,
        metrics: None,
        family: String::new(),
        max_connections: DEFAULT_MAX_CONNECTIONS,
        replay: ReplaySettings::default(),
        sphinx_workers: None,
        trace: TraceConfig::default(),
    }
}

/// The same settings with every path absolute (as `--print-config` shows them: the output works
/// as a configuration file from anywhere).
fn absolute(mut s: NodeSettings) -> Result<NodeSettings> {
    let abs = |p: &Path| std::path::absolute(p).with_context(|| format!("{}", p.display()));
    s.data_dir = abs(&s.data_dir)?;
    s.authorities = abs(&s.authorities)?;
    s.identity = s.identity.as_deref().map(abs).transpose()?;
    Ok(s)
}

/// Which file is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// `node init` or genconfig: a file to edit.
    Init,
    /// `--print-config`: what is in effect.
    Effective,
}

/// A flag's help and its environment variable, from the command line's own definition.
fn flag_doc(key: &str) -> String {
    let command = NodeArgs::augment_args(clap::Command::new("node"));
    let Some(arg) = command.get_arguments().find(|a| a.get_id() == key) else {
        return String::new();
    };
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    let env = arg
        .get_env()
        .map(|e| format!(", environment {}", e.to_string_lossy()))
        .unwrap_or_default();
    let long = arg.get_long().unwrap_or(key);
    let stop = if help.ends_with('.') { "" } else { "." };
    format!("{help}{stop}\nFlag --{long}{env}.")
}

/// The value of `key` in `s` (`None`: unset, written commented out) and an example for it.
fn value_of(s: &NodeSettings, key: &str) -> (Option<Value>, Value) {
    match key {
        "data_dir" => (Some(path(&s.data_dir)), string("data")),
        "authorities" => (Some(path(&s.authorities)), string("authorities.toml")),
        "identity" => (
            s.identity.as_deref().map(path),
            string("/run/credentials/p2pmix-node.service/identity.key"),
        ),
        "listen" => (
            Some(strings(&s.listen)),
            strings(&["/ip4/0.0.0.0/tcp/4100"]),
        ),
        "announce" => (
            Some(strings(&s.announce)),
            strings(&["/dns4/mix1.example.org/tcp/4100"]),
        ),
        "bootstrap" => (
            Some(strings(&s.bootstrap)),
            strings(&["/dns4/boot.example.org/tcp/4100/p2p/12D3KooW…"]),
        ),
        "role" => (Some(string(s.role.as_str())), string("mix")),
        "metrics" => (
            s.metrics.map(|m| string(m.to_string())),
            string("127.0.0.1:9100"),
        ),
        "family" => (Some(string(s.family.as_str())), string("operator-name")),
        "max_connections" => (
            Some(integer(u64::from(s.max_connections))),
            integer(u64::from(DEFAULT_MAX_CONNECTIONS)),
        ),
        "replay_memory_mib" => (
            Some(integer(s.replay.memory_bytes >> 20)),
            integer(ReplaySettings::default().memory_bytes >> 20),
        ),
        "replay_min_rate" => (
            Some(Value::Float(s.replay.min_rate)),
            Value::Float(ReplaySettings::default().min_rate),
        ),
        "sphinx_workers" => (s.sphinx_workers.map(|n| integer(n as u64)), integer(4)),
        _ => (None, string("")),
    }
}

/// `s` as a commented node configuration file.
pub(crate) fn render(s: &NodeSettings, header: Header) -> String {
    let mut t = Toml::new(match header {
        Header::Init => {
            "p2pmix node configuration (`p2pmix node --config FILE`). Every setting is shown at \
             its default, with what it means; paths are relative to this file.\n\
             Precedence: a flag, then its environment variable, then this file, then the default."
        }
        Header::Effective => {
            "The configuration in effect (file, environment and flags), as `p2pmix node \
             --print-config` prints it; it works as a configuration file. (Test-network traces, \
             --trace-links and --trace-truth, are flags only and not shown.)"
        }
    });
    for key in NODE_FILE_KEYS {
        let (value, example) = value_of(s, key);
        t.entry(key, &flag_doc(key), value, example);
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> NodeSettings {
        NodeSettings {
            data_dir: "/var/lib/p2pmix".into(),
            authorities: "/etc/p2pmix/authorities.toml".into(),
            identity: Some("/run/credentials/x/identity.key".into()),
            listen: vec!["/ip4/0.0.0.0/tcp/4100".parse().unwrap()],
            bootstrap: vec![
                "/ip4/192.0.2.7/tcp/4100/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
                    .parse()
                    .unwrap(),
            ],
            announce: vec!["/dns4/mix1.example.org/tcp/4100".parse().unwrap()],
            role: NodeRole::Gateway,
            metrics: Some("127.0.0.1:9100".parse().unwrap()),
            family: "acme".into(),
            max_connections: 100,
            replay: ReplaySettings {
                min_rate: 2_500.5,
                memory_bytes: 64 << 20,
            },
            sphinx_workers: Some(3),
            trace: TraceConfig::default(),
        }
    }

    /// Writes `text` as a file and reads it back as a node configuration.
    fn read_back(text: &str) -> NodeSettings {
        let dir = std::env::temp_dir().join(format!(
            "p2pmix-node-template-{}-{}",
            std::process::id(),
            blake3::hash(text.as_bytes()).to_hex()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(&file, text).unwrap();
        let settings = NodeSettings::resolve(Some(&file), NodeOverrides::default()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        settings
    }

    #[test]
    fn every_key_of_the_file_is_a_documented_flag_with_an_environment_variable() {
        for key in NODE_FILE_KEYS {
            let doc = flag_doc(key);
            assert!(doc.contains("P2PMIX_NODE_"), "{key}: {doc}");
            assert!(doc.len() > 30, "{key} has no help: {doc}");
            assert!(value_of(&full(), key).0.is_some(), "{key} has no value");
        }
        // The trace flags are no file keys, but have their variables too.
        for (key, env) in [
            ("trace_links", "P2PMIX_NODE_TRACE_LINKS"),
            ("trace_truth", "P2PMIX_NODE_TRACE_TRUTH"),
        ] {
            assert!(flag_doc(key).contains(env), "{key}: {}", flag_doc(key));
            assert!(!NODE_FILE_KEYS.contains(&key));
        }
    }

    #[test]
    fn a_rendered_configuration_reads_back_as_the_same_settings() {
        let s = full();
        assert_eq!(read_back(&render(&s, Header::Effective)), s);
        // init's file: every default, read back relative to where the file is.
        let init = read_back(&render(&init_settings(NodeRole::Mix), Header::Init));
        let defaults = NodeSettings::resolve(
            None,
            NodeOverrides {
                data_dir: Some(init.data_dir.clone()),
                authorities: Some(init.authorities.clone()),
                ..NodeOverrides::default()
            },
        )
        .unwrap();
        assert_eq!(init, defaults, "init writes the defaults");
        assert!(init.data_dir.ends_with("data") && init.data_dir.is_absolute());
    }
}
