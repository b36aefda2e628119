//! The process's open-files limit, so that a node can hold the connections it is configured for
//! (each is an open file): raised at start-up as far as the hard limit allows, and a warning
//! when even that is short.

/// Files a node keeps open besides its connections: listeners, the data directory, the metrics
/// endpoint's connections, the runtime's own descriptors.
pub const RESERVED_FILES: u64 = 512;

/// The soft limit on open files, where the OS tells (Linux: `/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    parse_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// Raises the soft open-files limit to `needed` where it is lower, as far as the hard limit
/// allows (a login shell's soft limit is often 1024, a gateway's connections need more; the
/// hard limit is what the operator grants). Never lowers it. Returns the soft limit in force.
pub fn raise_open_files_limit(needed: u64) -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(needed)
}

/// The soft limit of the `Max open files` line of a `/proc/PID/limits` text.
fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_read_from_the_limits_table() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files(text), Some(1024));
        assert_eq!(
            parse_open_files("Max open files unlimited unlimited files\n"),
            Some(u64::MAX)
        );
        assert_eq!(parse_open_files("Max processes 10 10 processes\n"), None);
        assert!(open_files_limit().is_none_or(|n| n > 0));
    }
}
