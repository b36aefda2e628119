//! A network namespace the test makes itself, joined to this one by a veth pair, so that a
//! process in it reaches this namespace's nodes from an address of its own (everything else in
//! the tests shares 127.0.0.1). Needs root and iproute2; [`Namespace::create`] says why not when
//! it cannot, and dropping the namespace removes everything it made.
#![allow(dead_code)]

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
};

/// A namespace with one veth link: `host` on this side, `inner` inside, a /30 of 10.254.0.0/16.
pub struct Namespace {
    pub name: String,
    /// This namespace's end of the link.
    pub host: Ipv4Addr,
    /// The namespace's own address.
    pub inner: Ipv4Addr,
    host_link: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespace {
    /// Makes the namespace `p2pmix-<tag>-<pid>` and its link (addresses picked from the pid, so
    /// that concurrent test processes do not collide), or says why it cannot.
    pub fn create(tag: &str) -> Result<Namespace, String> {
        let pid = std::process::id();
        let name = format!("p2pmix-{tag}-{pid}");
        let subnet = (pid % 16_384) * 4;
        let octets =
            |last: u32| Ipv4Addr::new(10, 254, (subnet / 256) as u8, (subnet % 256 + last) as u8);
        let (host, inner) = (octets(1), octets(2));
        let host_link = format!("p2pm{}h", pid % 1_000_000);
        let inner_link = format!("p2pm{}n", pid % 1_000_000);
        ip(&["netns", "add", &name])?;
        // From here on, Drop removes what was made.
        let ns = Namespace {
            name,
            host,
            inner,
            host_link,
        };
        let setup = || -> Result<(), String> {
            ip(&[
                "link",
                "add",
                &ns.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &inner_link,
            ])?;
            ip(&["link", "set", &inner_link, "netns", &ns.name])?;
            ip(&["addr", "add", &format!("{host}/30"), "dev", &ns.host_link])?;
            ip(&["link", "set", &ns.host_link, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.name.as_str(), "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&["addr", "add", &format!("{inner}/30"), "dev", &inner_link])?;
            inside(&["link", "set", &inner_link, "up"])?;
            inside(&["link", "set", "lo", "up"])
        };
        setup()?;
        Ok(ns)
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair and so the pair.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_link]);
    }
}
