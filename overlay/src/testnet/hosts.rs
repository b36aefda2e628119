//! Where a test network's processes run: on loopback, or each in a network namespace of its own
//! on one bridge (root only), with an address of 100.64.0.0/10 (RFC 6598 shared address space:
//! no host routes it, and the bridge has no address, so nothing outside the namespaces can reach
//! or be reached).
//!
//! What is made is written down as soon as it is made (`netns`, `netns-bridge`), never before
//! (a name that exists already belongs to someone else), so that [`remove_all`] removes
//! everything of ours, and only that, even after a crash half-way.

use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize};

use super::{TestnetError, error::io, layout::Manifest, procs};

/// How a network's processes are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HostMode {
    /// Everyone on 127.0.0.1.
    Loopback,
    /// A namespace each, each address in a /16 of its own (`100.{64 + k % 64}.{k / 64}.2`): routes
    /// then obey the one-/16-per-route rule.
    Spread,
    /// A namespace each, every address in 100.64.0.0/16: no route can keep its hops in
    /// different /16s, so nothing can be delivered (the diversity rule at work).
    Crowded,
}

/// One process's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The process name (`gw0`, `alice`, …).
    pub name: String,
    /// Its namespace, if the network has them.
    pub namespace: Option<String>,
    /// The address it listens on.
    pub address: Ipv4Addr,
}

impl Host {
    /// `/ip4/ADDRESS/tcp/0`: where the process listens by default.
    pub fn listen(&self) -> String {
        format!("/ip4/{}/tcp/0", self.address)
    }

    /// A command that runs `program` on this host (through `ip netns exec NS` in a namespace).
    pub fn command(&self, program: &Path) -> Command {
        match &self.namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// Runs `program args`, failing with its standard error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), TestnetError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestnetError::Spawn {
            program: program.into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestnetError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn append_line(path: &Path, line: &str) -> Result<(), TestnetError> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    writeln!(file, "{line}").map_err(io(path))
}

/// The bridge's name for a network tagged `tag` (a process id: at most 12 bytes, within the
/// 15 Linux allows).
fn bridge_name(tag: &str) -> String {
    format!("p2pbr{tag}")
}

/// Makes the bridge (namespace networks only) and says whether the kernel has netem, asked in
/// a namespace of its own that is removed at once.
pub(crate) fn prepare(dir: &Path, manifest: &Manifest) -> Result<bool, TestnetError> {
    if manifest.plan.hosts == HostMode::Loopback {
        return Ok(false);
    }
    let bridge = bridge_name(&manifest.tag);
    let _starting = procs::may_start()?;
    // Listed once made, never before: a name that exists already is someone else's.
    run("ip", &["link", "add", &bridge, "type", "bridge"])?;
    fs::write(dir.join("netns-bridge"), format!("{bridge}\n")).map_err(io(dir))?;
    run("ip", &["link", "set", &bridge, "up"])?;
    if manifest.plan.wan.is_none() {
        return Ok(false);
    }
    let probe = format!("p2pmix{}-wanprobe", manifest.tag);
    run("ip", &["netns", "add", &probe])?;
    append_line(&dir.join("netns"), &probe)?;
    let netem = run(
        "ip",
        &[
            "netns", "exec", &probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
            "1ms",
        ],
    )
    .is_ok();
    run("ip", &["netns", "del", &probe])?;
    Ok(netem)
}

/// The host of process `name`, if it has one yet.
pub(crate) fn host_of(dir: &Path, manifest: &Manifest, name: &str) -> Option<Host> {
    if manifest.plan.hosts == HostMode::Loopback {
        return Some(Host {
            name: name.into(),
            namespace: None,
            address: Ipv4Addr::LOCALHOST,
        });
    }
    fs::read_to_string(dir.join("hosts"))
        .ok()?
        .lines()
        .find_map(|line| {
            let mut f = line.split_whitespace();
            (f.next()? == name).then_some(())?;
            Some(Host {
                name: name.into(),
                namespace: Some(f.next()?.to_string()),
                address: f.next()?.parse().ok()?,
            })
        })
}

/// The address of the `k`th host.
fn address(mode: HostMode, k: usize) -> Ipv4Addr {
    match mode {
        HostMode::Crowded => Ipv4Addr::new(100, 64, (k / 250) as u8, (k % 250 + 2) as u8),
        _ => Ipv4Addr::new(100, 64 + (k % 64) as u8, (k / 64) as u8, 2),
    }
}

/// The host of process `name`, made (namespace, link, address, WAN) if it has none yet.
pub(crate) fn add_host(dir: &Path, manifest: &Manifest, name: &str) -> Result<Host, TestnetError> {
    if let Some(host) = host_of(dir, manifest, name) {
        return Ok(host);
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || name.is_empty()
        || name.len() > 32
    {
        return Err(TestnetError::UnknownProcess(format!(
            "{name:?} (a host name is 1 to 32 letters, digits, - or _)"
        )));
    }
    let k = fs::read_to_string(dir.join("hosts"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    if k >= 16_000 {
        return Err(TestnetError::Shape("at most 16000 hosts"));
    }
    let _starting = procs::may_start()?;
    let ns = format!("p2pmix{}-{name}", manifest.tag);
    let link = format!("v{}-{k}", manifest.tag);
    let addr = address(manifest.plan.hosts, k);
    let bridge = bridge_name(&manifest.tag);
    run("ip", &["netns", "add", &ns])?;
    append_line(&dir.join("netns"), &ns)?;
    run(
        "ip",
        &[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ],
    )?;
    run("ip", &["link", "set", &link, "master", &bridge, "up"])?;
    run(
        "ip",
        &[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/10"),
            "dev",
            "eth0",
        ],
    )?;
    run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
    run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
    if let (Some(wan), true) = (&manifest.plan.wan, manifest.wan_applied) {
        let mut args: Vec<String> = ["netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["root".into(), "netem".into()]);
        args.extend(wan.netem_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("ip", &args)?;
    }
    append_line(&dir.join("hosts"), &format!("{name} {ns} {addr}"))?;
    Ok(Host {
        name: name.into(),
        namespace: Some(ns),
        address: addr,
    })
}

/// Removes every namespace (their veth links go with them) and the bridge the network made;
/// returns how many namespaces were removed and what could not be (kept in the lists, so that
/// a second try, e.g. as root, finds them).
pub(crate) fn remove_all(dir: &Path) -> (usize, Vec<String>) {
    let mut removed = 0;
    let mut left = Vec::new();
    if let Ok(list) = fs::read_to_string(dir.join("netns")) {
        for ns in list.lines().filter(|l| !l.is_empty()) {
            match run("ip", &["netns", "del", ns]) {
                Ok(()) => removed += 1,
                // Already gone (a run removed it before it was listed again): nothing left.
                Err(_) if !Path::new("/run/netns").join(ns).exists() => {}
                Err(_) => left.push(ns.to_string()),
            }
        }
        let kept: String = left.iter().map(|n| format!("{n}\n")).collect();
        let _ = if kept.is_empty() {
            fs::remove_file(dir.join("netns"))
        } else {
            fs::write(dir.join("netns"), kept)
        };
    }
    if let Ok(bridge) = fs::read_to_string(dir.join("netns-bridge")) {
        let bridge = bridge.trim();
        let gone = run("ip", &["link", "del", bridge]).is_ok()
            || !Path::new("/sys/class/net").join(bridge).exists();
        if gone {
            let _ = fs::remove_file(dir.join("netns-bridge"));
        } else {
            left.push(bridge.to_string());
        }
    }
    if left.is_empty() {
        // The hosts are gone with their namespaces.
        let _ = fs::remove_file(dir.join("hosts"));
    }
    (removed, left)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn spread_addresses_differ_in_their_16_and_crowded_ones_share_one() {
        let spread: HashSet<[u8; 2]> = (0..64)
            .map(|k| {
                let o = address(HostMode::Spread, k).octets();
                [o[0], o[1]]
            })
            .collect();
        assert_eq!(spread.len(), 64);
        for k in 0..4_000 {
            let o = address(HostMode::Crowded, k).octets();
            assert_eq!([o[0], o[1]], [100, 64]);
            let s = address(HostMode::Spread, k).octets();
            assert!((64..128).contains(&s[1]), "{s:?} outside 100.64.0.0/10");
        }
        let all: HashSet<Ipv4Addr> = (0..4_000).map(|k| address(HostMode::Crowded, k)).collect();
        assert_eq!(all.len(), 4_000);
    }
}
