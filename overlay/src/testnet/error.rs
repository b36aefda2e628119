//! Why a test network could not be started, found or stopped.

use std::path::PathBuf;

use thiserror::Error;

/// Why a [`super::LocalNet`] operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TestnetError {
    /// A file or directory of the run.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A program (the `p2pmix` binary, `ip`, `tc`, `kill`) could not be run at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A helper command ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard error.
        stderr: String,
    },
    /// The directory was not made by [`super::LocalNet::up`].
    #[error("{0} is not a test network run directory (it has no testnet.json)")]
    NotARunDir(PathBuf),
    /// `testnet.json` could not be read or written.
    #[error("{path}: {source}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A new network's directory must not hold another network.
    #[error("{0} already holds a test network: a run directory must be fresh")]
    NotEmpty(PathBuf),
    /// No authority or node of that name.
    #[error("no process {0} in this network")]
    UnknownProcess(String),
    /// The shape asked for cannot carry traffic.
    #[error("{0}")]
    Shape(&'static str),
    /// A parameter name is not one of [`crate::config::PARAMETERS`].
    #[error("unknown network parameter {0}")]
    UnknownParameter(String),
    /// A `--wan` value that is not `DELAY[,LOSS]` (e.g. `30ms,1%`).
    #[error("WAN emulation: {0}")]
    Wan(String),
    /// A process stopped while the network was being started or waited for.
    #[error("{name} stopped while {during}; the last lines of its log:\n{log}")]
    Stopped {
        /// The process.
        name: String,
        /// What was going on.
        during: String,
        /// Its log's tail.
        log: String,
    },
    /// The command was interrupted: nothing new starts ([`super::stop_starting`]).
    #[error("interrupted: no new process starts")]
    Interrupted,
    /// A bounded wait ran out.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        secs: u64,
    },
    /// An identity could not be written.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The authorities file could not be read back.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// `map_err` for I/O on `path`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TestnetError {
    let path = path.into();
    move |source| TestnetError::Io { path, source }
}
