//! `p2pmix authority`: run a directory authority, `authority init` (an identity and a commented
//! configuration with every network parameter at its default) and `authority --print-config`.
//!
//! Flags override the file; each has a `P2PMIX_AUTHORITY_*` environment variable.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use libp2p_core::Multiaddr;
use libp2p_identity::Keypair;
use p2pmix::{
    authority::run_authority,
    bootstrap::default_parameters,
    config::{
        Authorities, AuthorityConfigFile, AuthorityOverrides, DEFAULT_AUTHORITY_MAX_CONNECTIONS,
        DEFAULT_LISTEN, PARAMETERS, parameter_value,
    },
    identity::{IDENTITY_FILE, read_identity, write_identity},
    proto::v1::NetworkParameters,
    runtime::unix_ms,
};

use super::{
    node::write_new,
    runtime, shutdown_signal,
    template::{Toml, integer, path, string, strings},
};

/// `p2pmix authority [init]`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuthorityCommand {
    #[command(subcommand)]
    command: Option<AuthoritySubcommand>,
    #[command(flatten)]
    args: AuthorityArgs,
}

#[derive(Subcommand)]
enum AuthoritySubcommand {
    /// Create an authority: DIR/identity.key and DIR/authority.toml with every network parameter
    /// at its default; prints the entry for the pinned authorities file. Every authority of a
    /// network needs the same [network] section (`p2pmix testnet genconfig` writes a whole
    /// network at once).
    Init {
        /// The authority's directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Where the authority listens: a fixed address, since nodes pin it.
        #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4000")]
        listen: Vec<Multiaddr>,
        /// When epoch 0 starts, milliseconds since the UNIX epoch (default: now).
        #[arg(long)]
        genesis_unix_ms: Option<u64>,
        /// Epoch length, milliseconds.
        #[arg(long, default_value_t = 3_600_000)]
        epoch_ms: u64,
        /// A local test network: loopback and private addresses admitted, traces allowed (never
        /// for a production network; the pinned authorities file's [network] must say it too).
        #[arg(long)]
        test_network: bool,
    },
}

#[derive(Args)]
struct AuthorityArgs {
    /// The authority's configuration file (TOML; `p2pmix authority init` writes one).
    #[arg(long, env = "P2PMIX_AUTHORITY_CONFIG")]
    config: Option<PathBuf>,
    /// The identity key file (instead of the file's `identity`).
    #[arg(long, env = "P2PMIX_AUTHORITY_IDENTITY")]
    identity: Option<PathBuf>,
    /// State and published documents go here (instead of the file's `data_dir`).
    #[arg(long, env = "P2PMIX_AUTHORITY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where to listen (repeatable, or comma-separated in the environment; replaces the file's).
    #[arg(long, env = "P2PMIX_AUTHORITY_LISTEN", value_delimiter = ',')]
    listen: Vec<Multiaddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics and the status at /health and /ready.
    #[arg(long, env = "P2PMIX_AUTHORITY_METRICS")]
    metrics: Option<SocketAddr>,
    /// Print the configuration in effect (file, environment and flags) as TOML and exit.
    #[arg(long, env = "P2PMIX_AUTHORITY_PRINT_CONFIG")]
    print_config: bool,
}

/// Runs `p2pmix authority …`.
pub(crate) fn run(command: AuthorityCommand) -> Result<ExitCode> {
    match command.command {
        Some(AuthoritySubcommand::Init {
            out,
            listen,
            genesis_unix_ms,
            epoch_ms,
            test_network,
        }) => {
            let keypair = create_identity(&out)?;
            let file = AuthorityFile {
                identity: IDENTITY_FILE.into(),
                data_dir: "data".into(),
                authorities: "authorities.toml".into(),
                listen: listen.clone(),
                metrics: None,
                max_connections: DEFAULT_AUTHORITY_MAX_CONNECTIONS,
                genesis_unix_ms: genesis_unix_ms.unwrap_or_else(unix_ms),
                epoch_ms,
                parameters: NetworkParameters {
                    test_network,
                    ..default_parameters()
                },
            };
            write_new(&out.join("authority.toml"), &file.render(false), false)?;
            println!("wrote {}", out.join("authority.toml").display());
            println!(
                "\n# entry for the authorities file (every node, client and authority pins it; \
                 replace 0.0.0.0 with the address others reach):\n{}",
                Authorities::entry(&keypair.public(), &listen)
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let args = command.args;
            let Some(path) = args.config else {
                bail!("give --config FILE");
            };
            let config = AuthorityConfigFile::load_with(
                &path,
                AuthorityOverrides {
                    identity: args.identity,
                    data_dir: args.data_dir,
                    listen: args.listen,
                    metrics: args.metrics,
                },
            )?;
            if args.print_config {
                print!("{}", AuthorityFile::effective(&config)?.render(true));
                return Ok(ExitCode::SUCCESS);
            }
            let keypair = read_identity(&config.identity)?;
            runtime()?
                .block_on(async { run_authority(config, keypair, shutdown_signal()).await })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A new identity in `dir/identity.key` (refusing to replace one).
pub(crate) fn create_identity(dir: &Path) -> Result<Keypair> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(IDENTITY_FILE);
    if path.exists() {
        bail!("{} exists; refusing to replace an identity", path.display());
    }
    let keypair = Keypair::generate_ed25519();
    write_identity(&path, &keypair)?;
    Ok(keypair)
}

/// An authority's configuration file, every value present.
#[derive(Debug, Clone)]
pub(crate) struct AuthorityFile {
    pub(crate) identity: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) authorities: PathBuf,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) max_connections: u32,
    pub(crate) genesis_unix_ms: u64,
    pub(crate) epoch_ms: u64,
    pub(crate) parameters: NetworkParameters,
}

impl AuthorityFile {
    /// The file of a loaded configuration, with absolute paths.
    fn effective(c: &AuthorityConfigFile) -> Result<Self> {
        let abs = |p: &Path| std::path::absolute(p).with_context(|| format!("{}", p.display()));
        Ok(AuthorityFile {
            identity: abs(&c.identity)?,
            data_dir: abs(&c.data_dir)?,
            authorities: abs(&c.authorities_path)?,
            listen: c.listen.clone(),
            metrics: c.metrics,
            max_connections: c.max_connections,
            genesis_unix_ms: c.schedule.start_of(0),
            epoch_ms: c.schedule.period_ms(),
            parameters: c.parameters,
        })
    }

    /// The commented file; `effective` says it is what `--print-config` shows.
    pub(crate) fn render(&self, effective: bool) -> String {
        let mut t = Toml::new(if effective {
            "The configuration in effect (file, environment and flags), as `p2pmix authority \
             --print-config` prints it; it works as a configuration file."
        } else {
            "p2pmix directory authority configuration (`p2pmix authority --config FILE`). Paths \
             are relative to this file. Every authority of a network must have the same \
             [network] section: the schedule and the parameters they publish in the consensus."
        });
        t.entry(
            "identity",
            "The authority's identity key (ed25519; its public key is pinned in every \
             authorities file) (--identity, P2PMIX_AUTHORITY_IDENTITY).",
            Some(path(&self.identity)),
            string(IDENTITY_FILE),
        );
        t.entry(
            "data_dir",
            "The authority's state (state.pb) and every published consensus \
             (consensus-EPOCH.pb) (--data-dir, P2PMIX_AUTHORITY_DATA_DIR).",
            Some(path(&self.data_dir)),
            string("data"),
        );
        t.entry(
            "authorities",
            "The pinned authorities file, this authority included.",
            Some(path(&self.authorities)),
            string("authorities.toml"),
        );
        t.entry(
            "listen",
            &format!(
                "Where to listen: a fixed address, since nodes pin it (default {DEFAULT_LISTEN}) \
                 (--listen, P2PMIX_AUTHORITY_LISTEN)."
            ),
            Some(strings(&self.listen)),
            strings(&["/ip4/0.0.0.0/tcp/4000"]),
        );
        t.entry(
            "metrics",
            "Serve Prometheus metrics at http://ADDR/metrics and the status at /health and \
             /ready (--metrics, P2PMIX_AUTHORITY_METRICS).",
            self.metrics.map(|m| string(m.to_string())),
            string("127.0.0.1:9100"),
        );
        t.entry(
            "max_connections",
            "Incoming connections held at most from peers that are neither pinned authorities \
             nor nodes of the consensus held (new nodes, clients); each is an open file, and \
             the authority raises its open-files limit to fit them and a full consensus.",
            Some(integer(u64::from(self.max_connections))),
            integer(u64::from(DEFAULT_AUTHORITY_MAX_CONNECTIONS)),
        );
        t.section("network");
        t.entry(
            "genesis_unix_ms",
            "When epoch 0 starts, milliseconds since the UNIX epoch.",
            Some(integer(self.genesis_unix_ms)),
            integer(0),
        );
        t.entry(
            "epoch_ms",
            "Epoch length, milliseconds: keys rotate and a new consensus is agreed every epoch.",
            Some(integer(self.epoch_ms)),
            integer(3_600_000),
        );
        t.entry(
            "test_network",
            "A local test network: loopback and private addresses are admitted and published \
             in the consensus, and nodes may write traces. Never on a production network.",
            Some(toml::Value::Boolean(self.parameters.test_network)),
            toml::Value::Boolean(false),
        );
        t.section("network.parameters");
        t.comment("What the consensus fixes for every node and client; shown at the defaults.");
        for (key, doc) in PARAMETERS {
            t.entry(
                key,
                doc,
                parameter_value(&self.parameters, key).map(integer),
                integer(0),
            );
        }
        t.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_every_default_parameter_and_reads_back() {
        let dir =
            std::env::temp_dir().join(format!("p2pmix-authority-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let keypair = create_identity(&dir).unwrap();
        let file = AuthorityFile {
            identity: IDENTITY_FILE.into(),
            data_dir: "data".into(),
            authorities: "authorities.toml".into(),
            listen: vec!["/ip4/0.0.0.0/tcp/4000".parse().unwrap()],
            metrics: Some("127.0.0.1:9100".parse().unwrap()),
            max_connections: 1000,
            genesis_unix_ms: 1_764_000_000_000,
            epoch_ms: 60_000,
            parameters: default_parameters(),
        };
        let text = file.render(false);
        for (key, _) in PARAMETERS {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "{key} missing:\n{text}"
            );
        }
        std::fs::write(dir.join("authority.toml"), &text).unwrap();
        std::fs::write(
            dir.join("authorities.toml"),
            Authorities::entry(&keypair.public(), &[]),
        )
        .unwrap();
        let loaded = AuthorityConfigFile::load(&dir.join("authority.toml")).unwrap();
        assert_eq!(loaded.parameters, default_parameters());
        assert_eq!(loaded.schedule.period_ms(), 60_000);
        assert_eq!(loaded.metrics, file.metrics);
        assert_eq!(loaded.max_connections, 1000);
        // --print-config's output is a configuration that loads to the same.
        let effective = AuthorityFile::effective(&loaded).unwrap().render(true);
        std::fs::write(dir.join("effective.toml"), &effective).unwrap();
        let again = AuthorityConfigFile::load(&dir.join("effective.toml")).unwrap();
        assert_eq!(again.identity, loaded.identity);
        assert_eq!(again.listen, loaded.listen);
        assert_eq!(again.parameters, loaded.parameters);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
