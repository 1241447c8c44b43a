//! What an operator installs: `zz keygen` lays out, per host, the files to
//! copy to that host's root — the deployment file, the keys that host's
//! roles use and nothing else, and a systemd unit per role.
//!
//! A host is an IP address of the deployment: each agreement node's, and
//! the orchestrator's, which also runs the gateway. Roles run as the system
//! user `zz`; systemd makes each data directory (0700, owned by `zz`), and
//! `zz` itself refuses key files others can read and data directories
//! others can write.

use anyhow::Context;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use zz_wire::Deployment;

/// Where the units expect things on each host.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The zz binary.
    pub bin: PathBuf,
    /// The deployment file and `keys/` beside it.
    pub etc: PathBuf,
    /// Data directories live under it (systemd's `StateDirectory`).
    pub state: PathBuf,
    /// The orchestrator's admin API (the gateway follows tenants' apps there).
    pub admin: SocketAddr,
    /// The gateway's listening address.
    pub gateway: SocketAddr,
    /// The orchestrator's `--backend`.
    pub backend: String,
    /// libvirt: the guest image (`vmlinuz`, `initramfs.cpio.gz`).
    pub image_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            bin: "/usr/local/bin/zz".into(),
            etc: "/etc/zz".into(),
            state: "/var/lib/zz".into(),
            admin: SocketAddr::from(([127, 0, 0, 1], 7070)),
            gateway: SocketAddr::from(([0, 0, 0, 0], 8080)),
            backend: "libvirt".into(),
            image_dir: "/usr/local/share/zz/vm-images".into(),
        }
    }
}

/// One role on one host: its unit's name and text, and the key files
/// (names in `keys/`) it reads.
struct Role {
    unit: String,
    text: String,
    keys: Vec<String>,
}

/// Writes `out/hosts/<ip>/...` for every host of `dep`, whose deployment
/// file and keys `zz keygen` wrote in `out`; returns the host directories.
pub fn write(out: &Path, dep: &Deployment, layout: &Layout) -> anyhow::Result<Vec<PathBuf>> {
    let mut hosts: BTreeMap<IpAddr, Vec<Role>> = BTreeMap::new();
    for n in &dep.nodes {
        hosts
            .entry(n.addr.ip())
            .or_default()
            .push(agreement(layout, n.id, n.addr));
    }
    let keys = std::fs::read_dir(out.join("keys")).with_context(|| format!("reading {}/keys", out.display()))?;
    let mut others = Vec::new();
    for k in keys {
        let name = k?.file_name().to_string_lossy().into_owned();
        if !is_node_key(&name, dep) {
            others.push(name);
        }
    }
    others.sort();
    let orch = hosts.entry(dep.orchestrator.addr.ip()).or_default();
    orch.push(orchestrator(layout, dep.orchestrator.addr, others));
    orch.push(gateway(layout));

    let mut dirs = Vec::new();
    for (ip, roles) in hosts {
        let root = out.join("hosts").join(ip.to_string());
        let etc = root.join(layout.etc.strip_prefix("/").unwrap_or(&layout.etc));
        let units = root.join("etc/systemd/system");
        create_private_dir(&etc.join("keys"))?;
        std::fs::create_dir_all(&units).with_context(|| format!("creating {}", units.display()))?;
        std::fs::copy(out.join("deployment.toml"), etc.join("deployment.toml"))
            .with_context(|| format!("copying the deployment file to {}", etc.display()))?;
        for r in &roles {
            for k in &r.keys {
                copy_secret(&out.join("keys").join(k), &etc.join("keys").join(k))?;
            }
            std::fs::write(units.join(&r.unit), &r.text).with_context(|| format!("writing unit {}", r.unit))?;
        }
        dirs.push(root);
    }
    Ok(dirs)
}

fn is_node_key(file: &str, dep: &Deployment) -> bool {
    dep.nodes.iter().any(|n| file == format!("a{}.key", n.id))
}

fn agreement(l: &Layout, id: u16, addr: SocketAddr) -> Role {
    let name = format!("a{id}");
    let exec = format!(
        "{} agreement --config {}/deployment.toml --id {id} --data-dir {}/{name}",
        l.bin.display(),
        l.etc.display(),
        l.state.display()
    );
    Role {
        unit: format!("zz-agreement-{name}.service"),
        text: unit(&format!("zz agreement node {name} ({addr})"), &exec, Some(&name), &[]),
        keys: vec![format!("{name}.key")],
    }
}

fn orchestrator(l: &Layout, addr: SocketAddr, keys: Vec<String>) -> Role {
    let mut exec = format!(
        "{} orchestrator --config {}/deployment.toml --data-dir {}/orchestrator --admin {} --backend {}",
        l.bin.display(),
        l.etc.display(),
        l.state.display(),
        l.admin,
        l.backend
    );
    let libvirt = l.backend == "libvirt";
    if libvirt {
        let _ = write!(exec, " --image-dir {}", l.image_dir.display());
    }
    // libvirt's socket is the libvirt group's.
    let extra: &[&str] = if libvirt {
        &["SupplementaryGroups=libvirt", "After=libvirtd.service"]
    } else {
        &[]
    };
    Role {
        unit: "zz-orchestrator.service".into(),
        text: unit(
            &format!("zz orchestrator (links on {addr}, admin API on {})", l.admin),
            &exec,
            Some("orchestrator"),
            extra,
        ),
        keys,
    }
}

fn gateway(l: &Layout) -> Role {
    let admin = match l.admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], l.admin.port())),
        _ => l.admin,
    };
    let exec = format!(
        "{} gateway --config {}/deployment.toml --listen {} --client gateway --apps-from http://{admin} --token-file {}/orchestrator/admin.token",
        l.bin.display(),
        l.etc.display(),
        l.gateway,
        l.state.display()
    );
    Role {
        unit: "zz-gateway.service".into(),
        text: unit(
            &format!("zz gateway (web clients on {})", l.gateway),
            &exec,
            None,
            &["After=zz-orchestrator.service", "Wants=zz-orchestrator.service"],
        ),
        keys: Vec::new(),
    }
}

/// A unit's text. `state`: its data directory under `StateDirectory=zz/`.
/// `extra` lines starting with `After=`/`Wants=` go to `[Unit]`, the rest
/// to `[Service]`.
fn unit(description: &str, exec: &str, state: Option<&str>, extra: &[&str]) -> String {
    let (ordering, service): (Vec<&str>, Vec<&str>) = extra
        .iter()
        .partition(|l| l.starts_with("After=") || l.starts_with("Wants="));
    let mut t = String::new();
    let _ = writeln!(t, "# Written by `zz keygen`.\n[Unit]\nDescription={description}");
    t.push_str("After=network-online.target\nWants=network-online.target\n");
    for l in ordering {
        let _ = writeln!(t, "{l}");
    }
    let _ = writeln!(t, "\n[Service]\nType=exec\nUser=zz\nGroup=zz\nExecStart={exec}");
    if let Some(dir) = state {
        let _ = writeln!(t, "StateDirectory=zz/{dir}\nStateDirectoryMode=0700");
    }
    for l in service {
        let _ = writeln!(t, "{l}");
    }
    t.push_str(
        "Restart=on-failure\nRestartSec=1s\nLimitNOFILE=65536\n\
         NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\n\
         \n[Install]\nWantedBy=multi-user.target\n",
    );
    t
}

/// A directory only its owner may enter (0700).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn copy_secret(from: &Path, to: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
    Ok(zz_wire::config::write_secret(to, &text)?)
}

/// A data directory others may write to could have its durable state
/// replaced under the role: refused at start. A missing one is made 0700.
pub fn check_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            anyhow::ensure!(
                mode & 0o022 == 0,
                "data directory {} is mode {mode:04o}: others can write to it and replace this role's \
                 durable state; `chmod go-w {}` (0700 is best)",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private_dir(dir),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use zz_wire::config::{generate, GenerateOptions};

    fn ini_keys(text: &str) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with('[') && !l.is_empty())
        {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not key=value: {l:?}"));
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        m
    }

    #[test]
    fn each_host_gets_its_units_and_only_the_keys_its_roles_read() {
        let out = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::local(1, &["kv"]).unwrap();
        // Two hosts with two nodes each; the orchestrator on the first.
        let host = |i: u8, port| SocketAddr::from(([10, 0, 0, i], port));
        opts.node_addrs = vec![host(1, 7100), host(1, 7101), host(2, 7100), host(2, 7101)];
        opts.orchestrator_addr = host(1, 7200);
        let (dep, ids) = generate(&opts).unwrap();
        dep.write(out.path(), &ids).unwrap();
        let dirs = write(out.path(), &dep, &Layout::default()).unwrap();
        assert_eq!(dirs.len(), 2);
        let h1 = out.path().join("hosts/10.0.0.1");
        let h2 = out.path().join("hosts/10.0.0.2");
        let names = |d: PathBuf| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(h1.join("etc/systemd/system")),
            [
                "zz-agreement-a0.service",
                "zz-agreement-a1.service",
                "zz-gateway.service",
                "zz-orchestrator.service"
            ]
        );
        assert_eq!(
            names(h2.join("etc/systemd/system")),
            ["zz-agreement-a2.service", "zz-agreement-a3.service"]
        );
        // Host 2 holds its nodes' keys only; host 1 no key of host 2's.
        assert_eq!(names(h2.join("etc/zz/keys")), ["a2.key", "a3.key"]);
        let k1 = names(h1.join("etc/zz/keys"));
        assert!(k1.contains(&"orchestrator.key".to_string()) && k1.contains(&"kv-e0.key".to_string()));
        assert!(!k1.contains(&"a2.key".to_string()), "{k1:?}");
        for k in &k1 {
            let mode = std::fs::metadata(h1.join("etc/zz/keys").join(k))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{k}");
        }
        assert_eq!(
            std::fs::metadata(h1.join("etc/zz/keys")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Every host's deployment file loads, and the units run what a host has.
        for h in [&h1, &h2] {
            Deployment::load(&h.join("etc/zz/deployment.toml")).unwrap();
        }
        let a2 = ini_keys(&std::fs::read_to_string(h2.join("etc/systemd/system/zz-agreement-a2.service")).unwrap());
        assert_eq!(
            a2["ExecStart"],
            ["/usr/local/bin/zz agreement --config /etc/zz/deployment.toml --id 2 --data-dir /var/lib/zz/a2"]
        );
        assert_eq!(a2["StateDirectory"], ["zz/a2"]);
        assert_eq!(a2["StateDirectoryMode"], ["0700"]);
        assert_eq!(a2["User"], ["zz"]);
        let o = ini_keys(&std::fs::read_to_string(h1.join("etc/systemd/system/zz-orchestrator.service")).unwrap());
        assert!(
            o["ExecStart"][0].contains("--backend libvirt --image-dir /usr/local/share/zz/vm-images"),
            "{:?}",
            o["ExecStart"]
        );
        assert_eq!(o["SupplementaryGroups"], ["libvirt"]);
        let g = ini_keys(&std::fs::read_to_string(h1.join("etc/systemd/system/zz-gateway.service")).unwrap());
        assert!(
            g["ExecStart"][0]
                .contains("--apps-from http://127.0.0.1:7070 --token-file /var/lib/zz/orchestrator/admin.token"),
            "{:?}",
            g["ExecStart"]
        );
    }

    #[test]
    fn a_data_dir_others_can_write_is_refused_and_a_missing_one_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_data_dir(&open).unwrap_err().to_string();
        assert!(e.contains("0777") && e.contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_data_dir(&open).unwrap();
        let fresh = root.path().join("a/b");
        check_data_dir(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
