//! Helpers for tests that run `p2pmix` processes: scratch directories, processes killed on
//! drop, keys, bounded waits.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread::sleep,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_p2pmix");

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "p2pmix-test-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // P2PMIX_TEST_KEEP=1 keeps the directories (logs, data) to see why a test failed.
        if std::env::var_os("P2PMIX_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A process, killed on drop.
pub struct Running {
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn keygen(dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public_key = "))
        .expect("keygen prints the public key")
        .to_string()
}

pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(100));
    }
}

/// Sleeps until `t` (milliseconds since the UNIX epoch), if it is still ahead.
pub fn sleep_until(t: u64) {
    let now = unix_ms();
    if t > now {
        sleep(Duration::from_millis(t - now));
    }
}

pub mod client;
pub mod net;
pub mod netns;
