//! Test-network traces for nodes and clients (`--trace-links FILE`, `--trace-truth FILE`): the
//! file-backed [`Tracer`] of `p2pmix_mix::trace`, opened only for a test network.
//!
//! Why a network flag and not a cargo feature: a feature is unified across the workspace, so a
//! test or an example that switched it on would silently put tracing into the very binary
//! operators run. `test_network = true` in the `[network]` section of the pinned authorities
//! file is a property of the network, in the root of trust every participant ships; a production
//! network's file never has it, so no production node or client can be started with a trace,
//! whatever its command line says.

use std::path::PathBuf;

use libp2p_identity::PeerId;
use p2pmix_mix::trace::{TraceError, TraceLimits, Tracer};
use thiserror::Error;

use crate::config::Authorities;

/// Which trace files to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// The link view: one line per packet per link end (time, neighbour, packet tag).
    pub links: Option<PathBuf>,
    /// The ground truth: which packet became which (nodes), which message went in which packet
    /// (clients).
    pub truth: Option<PathBuf>,
    /// Bounds of each file.
    pub limits: TraceLimits,
}

/// Why tracing could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TraceSetupError {
    /// The authorities file does not declare a test network.
    #[error(
        "--trace-links and --trace-truth record every packet's timing and are only for test \
         networks: the authorities file has no `test_network = true` in its [network] section"
    )]
    NotTestNetwork,
    /// A file could not be created.
    #[error(transparent)]
    File(#[from] TraceError),
}

impl TraceConfig {
    /// Whether any trace is asked for.
    pub fn is_on(&self) -> bool {
        self.links.is_some() || self.truth.is_some()
    }

    /// Opens the files asked for, recorded by `local`: `None` when none is asked for, an error
    /// unless `authorities` declares a test network.
    pub fn open(
        &self,
        authorities: &Authorities,
        local: PeerId,
    ) -> Result<Option<Tracer>, TraceSetupError> {
        if !self.is_on() {
            return Ok(None);
        }
        if !authorities.test_network {
            return Err(TraceSetupError::NotTestNetwork);
        }
        let tracer = Tracer::open(
            self.links.as_deref(),
            self.truth.as_deref(),
            local,
            self.limits,
        )?;
        tracing::warn!(
            links = ?self.links,
            truth = ?self.truth,
            "test network: recording every packet's timing and ground truth"
        );
        Ok(Some(tracer))
    }
}

/// Finishes `tracer`'s files and logs what each holds; the error of a failed write, if any.
pub fn finish(tracer: &Tracer) -> Result<(), TraceError> {
    for (path, s) in tracer.finish()? {
        if s.dropped > 0 || s.capped > 0 {
            tracing::warn!(
                file = %path.display(),
                written = s.written,
                dropped = s.dropped,
                capped = s.capped,
                "trace incomplete"
            );
        } else {
            tracing::info!(file = %path.display(), written = s.written, "trace written");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorities(test_network: bool) -> Authorities {
        let key = libp2p_identity::Keypair::generate_ed25519().public();
        Authorities {
            entries: vec![crate::config::AuthorityAddress {
                peer_id: key.to_peer_id(),
                public_key: key,
                addresses: Vec::new(),
            }],
            schedule: Some(p2pmix_bootstrap::EpochSchedule::new(0, 10_000)),
            test_network,
        }
    }

    #[test]
    fn tracing_is_refused_unless_the_network_is_a_test_network() {
        let dir = std::env::temp_dir().join(format!("p2pmix-trace-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = TraceConfig {
            links: Some(dir.join("links.trace")),
            truth: Some(dir.join("truth.trace")),
            limits: TraceLimits::default(),
        };
        let production = authorities(false);
        assert!(!production.test_network);
        let err = config.open(&production, PeerId::random()).unwrap_err();
        assert!(matches!(err, TraceSetupError::NotTestNetwork), "{err}");
        assert!(!dir.join("links.trace").exists(), "nothing was created");
        // Nothing asked: nothing opened, on any network.
        assert!(
            TraceConfig::default()
                .open(&production, PeerId::random())
                .unwrap()
                .is_none()
        );
        let tracer = config
            .open(&authorities(true), PeerId::random())
            .unwrap()
            .expect("opened on a test network");
        finish(&tracer).unwrap();
        assert!(dir.join("links.trace").exists() && dir.join("truth.trace").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
