//! Hosts as network namespaces: a bridge in the root namespace with the
//! address `10.213.K.1/24`, and per host a namespace joined to it by a veth
//! pair, with `10.213.K.N/24` and its own loopback. `K` comes from the test
//! process's pid, so two runs never share a subnet; every name carries the
//! pid too, and a new lab first removes what a killed run left behind.
//! Dropping the lab kills every process in its namespaces, then deletes
//! them and the bridge.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Names of everything a lab creates start with these and end with its pid.
const NS_PREFIX: &str = "zzlab";
const BRIDGE_PREFIX: &str = "zzbr";

fn ip(args: &[&str]) -> Result<Output, String> {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))
}

/// `ip ARGS`, failing with its stderr.
fn ip_ok(args: &[&str]) -> Result<(), String> {
    let out = ip(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be made here, if they cannot: they need root
/// (CAP_NET_ADMIN) and iproute2.
pub fn unavailable() -> Option<String> {
    // /proc/self belongs to the process's effective user.
    let euid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if euid.ok() != Some(0) {
        return Some("network namespaces need root".into());
    }
    match ip(&["netns", "list"]) {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("ip netns list: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(e),
    }
}

/// Whether a missing namespace facility fails the test instead of skipping
/// it: under CI, or with `ZZ_REQUIRE_NETNS=1`.
pub fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true") || std::env::var("ZZ_REQUIRE_NETNS").as_deref() == Ok("1")
}

/// The pids of every process in namespace `ns`.
pub fn pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs every process in `ns` until none is left (a process may fork
/// while we kill), for at most 10 s.
pub fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = pids(ns);
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid in a name this module made (`zzlab1234-a0`, `zzbr1234`), if any.
fn owner(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Removes namespaces and bridges of labs whose process is gone.
fn remove_stale() {
    if let Ok(o) = ip(&["netns", "list"]) {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if let Some(pid) = owner(name, NS_PREFIX) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    eprintln!("removing namespace {name} left by a run that is gone");
                    kill_all_in(name);
                    let _ = ip(&["netns", "delete", name]);
                }
            }
        }
    }
    if let Ok(o) = ip(&["-o", "link", "show", "type", "bridge"]) {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or_default().trim();
            if let Some(pid) = owner(name, BRIDGE_PREFIX) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    eprintln!("removing bridge {name} left by a run that is gone");
                    let _ = ip(&["link", "delete", name]);
                }
            }
        }
    }
}

/// One host: a namespace and its address on the lab's bridge.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub addr: Ipv4Addr,
}

impl Host {
    /// `cmd` run inside this host's namespace (through `ip netns exec`,
    /// which also gives it the namespace's own /sys).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

pub struct Lab {
    pid: u32,
    pub bridge: String,
    /// The bridge's own address, in the root namespace (where the test runs).
    pub gateway: Ipv4Addr,
    subnet: u8,
    hosts: Vec<Host>,
}

impl Lab {
    pub fn new() -> Result<Lab, String> {
        remove_stale();
        let pid = std::process::id();
        let subnet = u8::try_from(20 + pid % 200).expect("below 256");
        let bridge = format!("{BRIDGE_PREFIX}{pid}");
        let gateway = Ipv4Addr::new(10, 213, subnet, 1);
        let lab = Lab {
            pid,
            bridge: bridge.clone(),
            gateway,
            subnet,
            hosts: Vec::new(),
        };
        ip_ok(&["link", "add", &bridge, "type", "bridge"])?;
        ip_ok(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge])?;
        ip_ok(&["link", "set", &bridge, "up"])?;
        println!("lab: bridge {bridge} at {gateway}/24");
        Ok(lab)
    }

    /// A new host `name` at `10.213.K.<n>` (n in 2..=254).
    pub fn host(&mut self, name: &str, n: u8) -> Result<Host, String> {
        assert!((2..=254).contains(&n), "host number {n}");
        let ns = format!("{NS_PREFIX}{}-{name}", self.pid);
        let addr = Ipv4Addr::new(10, 213, self.subnet, n);
        // Interface names are at most 15 bytes: `zv<pid>o<n>` / `zv<pid>i<n>`.
        let (outer, inner) = (format!("zv{}o{n}", self.pid), format!("zv{}i{n}", self.pid));
        ip_ok(&["netns", "add", &ns])?;
        // Tracked from here, so a failure below still deletes the namespace.
        self.hosts.push(Host { ns: ns.clone(), addr });
        ip_ok(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
        ip_ok(&["link", "set", &outer, "master", &self.bridge])?;
        ip_ok(&["link", "set", &outer, "up"])?;
        ip_ok(&["link", "set", &inner, "netns", &ns])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["-n", ns.as_str()];
            all.extend_from_slice(args);
            ip_ok(&all)
        };
        in_ns(&["link", "set", "lo", "up"])?;
        in_ns(&["link", "set", &inner, "name", "eth0"])?;
        in_ns(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        in_ns(&["link", "set", "eth0", "up"])?;
        println!("lab: host {name} is namespace {ns} at {addr}");
        Ok(self.hosts.last().expect("just pushed").clone())
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Every process still running in any of the lab's namespaces.
    pub fn processes(&self) -> Vec<(String, i32)> {
        self.hosts
            .iter()
            .flat_map(|h| pids(&h.ns).into_iter().map(|p| (h.ns.clone(), p)))
            .collect()
    }

    /// Namespaces and bridge of this lab that still exist.
    pub fn leftovers(pid: u32) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(o) = ip(&["netns", "list"]) {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or_default();
                if owner(name, NS_PREFIX) == Some(pid) {
                    out.push(name.to_string());
                }
            }
        }
        if ip(&["link", "show", &format!("{BRIDGE_PREFIX}{pid}")]).is_ok_and(|o| o.status.success()) {
            out.push(format!("{BRIDGE_PREFIX}{pid}"));
        }
        out
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            kill_all_in(&h.ns);
            // Deleting the namespace deletes its end of the veth pair, and
            // with it the end on the bridge.
            if let Err(e) = ip_ok(&["netns", "delete", &h.ns]) {
                eprintln!("lab teardown: {e}");
            }
        }
        if let Err(e) = ip_ok(&["link", "delete", &self.bridge]) {
            eprintln!("lab teardown: {e}");
        }
    }
}
