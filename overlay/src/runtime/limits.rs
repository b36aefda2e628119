//! The process's open-files limit, so that a node can hold the connections it is configured for
//! (each is an open file): raised at start-up as far as the hard limit allows, and a warning
//! when even that is short.

/// Files a node keeps open besides its connections: listeners, the data directory, the metrics
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
