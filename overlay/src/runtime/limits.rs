//! The process's open-files limit, so that a node or an authority can hold the connections it is
//! configured for (each is an open file): raised at start-up as far as the hard limit allows, and
//! a warning when even that is short.

use tracing::{info, warn};

/// Files a process keeps open besides its connections: listeners, the data directory, the metrics
/// endpoint's connections, the runtime's own descriptors.
pub const RESERVED_FILES: u64 = 512;

/// The soft limit on open files, where the OS has one (`u64::MAX` when unlimited).
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft open-files limit to `needed` where it is lower, as far as the hard limit
/// allows (a login shell's soft limit is often 1024, a gateway's connections need more; the
/// hard limit is what the operator grants). Never lowers it. Returns the soft limit in force.
pub fn raise_open_files_limit(needed: u64) -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(needed)
}

/// Raises the soft open-files limit to `needed` as far as the hard limit allows, says so, and
/// warns now (rather than when accepting starts failing) if even the hard limit is short;
/// `setting` names what the operator may lower instead. Returns the soft limit in force.
pub fn ensure_open_files(needed: u64, setting: &str) -> Option<u64> {
    let before = open_files_limit()?;
    if before >= needed {
        return Some(before);
    }
    let limit = match raise_open_files_limit(needed) {
        Ok(after) => after,
        Err(e) => {
            warn!(%e, "could not raise the open-files limit");
            before
        }
    };
    if limit > before {
        info!(
            before,
            after = limit,
            needed,
            "raised the soft open-files limit"
        );
    }
    if limit < needed {
        warn!(
            limit,
            needed,
            "the open-files limit (its hard limit too) is below what {setting} and a full \
             consensus need: raise it (LimitNOFILE=, ulimit -Hn) or lower {setting}"
        );
    }
    Some(limit)
}
