//! The node raises its own soft open-files limit: a node started from a shell with the usual
//! soft limit of 1024 could otherwise hold about 500 connections whatever its max_connections
//! said, and nothing but a warning told the operator. A test binary of its own, because it
//! lowers the limit of the whole process.

#![cfg(target_os = "linux")]

use p2pmix::runtime::limits::{open_files_limit, raise_open_files_limit};
use rlimit::Resource;

#[test]
fn a_soft_limit_below_what_is_needed_is_raised_as_far_as_the_hard_limit() {
    let (soft, hard) = Resource::NOFILE.get().expect("getrlimit");
    if hard < 4096 {
        eprintln!("skipped: the hard open-files limit is {hard}, too low to raise anything");
        return;
    }
    // What a login shell often gives.
    Resource::NOFILE
        .set(256, hard)
        .expect("lowering the soft limit");
    assert_eq!(open_files_limit(), Some(256));

    assert_eq!(raise_open_files_limit(2048).expect("raise"), 2048);
    assert_eq!(open_files_limit(), Some(2048));
    // Never lowered.
    assert_eq!(raise_open_files_limit(1000).expect("raise"), 2048);
    assert_eq!(open_files_limit(), Some(2048));
    // Never past the hard limit (an unprivileged process cannot go there).
    if hard < u64::MAX / 2 {
        assert_eq!(raise_open_files_limit(hard * 2).expect("raise"), hard);
    }

    Resource::NOFILE
        .set(soft, hard)
        .expect("restoring the soft limit");
}
