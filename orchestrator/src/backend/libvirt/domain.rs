//! Pure pieces of a replica VM: its libvirt name, kernel command line and
//! domain XML (from `vm-images/domain.xml.tmpl`, the template `mkvm.sh` uses).

use super::Accel;
use crate::backend::BackendError;
use std::net::IpAddr;
use std::path::Path;

const TEMPLATE: &str = include_str!("../../../../vm-images/domain.xml.tmpl");

/// Printed by the guest's `/init` right before it runs the agent: the kernel
/// booted and userland works.
pub const BOOT_MARKER: &str = "zz-guest: starting agent";

/// What goes into one domain's XML.
pub struct DomainSpec<'a> {
    pub name: &'a str,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
    pub serial_log: &'a Path,
}

/// Letters, digits, `_`, `.` and `-`, not starting with `-` or `.`: safe in a
/// domain name, a file name and a kernel command line word.
pub fn valid_word(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `zz-<tag>-`: every domain of one deployment starts with it.
pub fn prefix(tag: &str) -> String {
    format!("zz-{tag}-")
}

/// `zz-<tag>-<replica>-g<generation>`.
pub fn domain_name(tag: &str, replica: &str, generation: u64) -> String {
    format!("{}{replica}-g{generation}", prefix(tag))
}

/// Splits a domain name of this deployment back into (replica, generation).
pub fn parse_domain_name<'a>(tag: &str, domain: &'a str) -> Option<(&'a str, u64)> {
    let rest = domain.strip_prefix(&prefix(tag))?;
    let (replica, generation) = rest.rsplit_once("-g")?;
    let generation = generation.parse().ok()?;
    valid_word(replica).then_some((replica, generation))
}

/// The guest's kernel command line; `zz-agent --cmdline /proc/cmdline` reads it.
/// `no_timer_check`: under loaded software emulation the kernel's IO-APIC
/// timer check can fail and panic the boot; `panic=-1` makes any panic end
/// the domain at once, so the watcher reports it instead of it hanging.
/// `routes` are the peers' addresses that are not the host's loopback: the
/// guest's /init routes each (and nothing else) through user-mode
/// networking's gateway, which connects to it from the VM's host.
pub fn cmdline(replica: &str, routes: &[IpAddr]) -> String {
    let routes = if routes.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = routes.iter().map(IpAddr::to_string).collect();
        format!(" zz.routes={}", list.join(","))
    };
    format!(
        "console=ttyS0 no_timer_check panic=-1 zz.deployment=/etc/zz/deployment.toml \
         zz.key=/etc/zz/replica.key zz.replica={replica} zz.host_alias=10.0.2.2{routes} quiet"
    )
}

/// The distinct IPv4 addresses of the deployment's agreement nodes and
/// orchestrator that a guest cannot reach as the host alias. IPv6 is left
/// out: user-mode networking gives the guest none.
pub fn routes(d: &zz_wire::Deployment) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = d
        .nodes
        .iter()
        .map(|n| n.addr.ip())
        .chain([d.orchestrator.addr.ip()])
        .filter(|ip| ip.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified())
        .collect();
    out.sort();
    out.dedup();
    out
}

pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Fills every `@KEY@` of the template; a placeholder left over is an error,
/// not a domain libvirt would half-understand.
pub fn render(spec: &DomainSpec<'_>) -> Result<String, BackendError> {
    let values = [
        ("NAME", spec.name.to_string()),
        ("MEMORY_MIB", spec.memory_mib.to_string()),
        ("VCPUS", spec.vcpus.to_string()),
        ("DOMAIN_TYPE", spec.accel.domain_type().to_string()),
        ("KERNEL", path_str(spec.kernel)?),
        ("INITRD", path_str(spec.initrd)?),
        ("CMDLINE", spec.cmdline.to_string()),
        ("SERIAL_LOG", path_str(spec.serial_log)?),
    ];
    let mut xml = TEMPLATE.to_string();
    for (key, value) in values {
        xml = xml.replace(&format!("@{key}@"), &xml_escape(&value));
    }
    if let Some(left) = leftover_placeholder(&xml) {
        return Err(BackendError::Config(format!(
            "domain.xml.tmpl: unfilled placeholder {left}"
        )));
    }
    Ok(xml)
}

fn path_str(p: &Path) -> Result<String, BackendError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| BackendError::Config(format!("path is not UTF-8: {}", p.display())))
}

/// The first `@[A-Z_]+@` in `xml`, if any.
fn leftover_placeholder(xml: &str) -> Option<String> {
    let bytes = xml.as_bytes();
    let mut i = 0;
    while let Some(start) = xml[i..].find('@').map(|p| p + i) {
        let body = bytes[start + 1..]
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || **b == b'_')
            .count();
        if body > 0 && bytes.get(start + 1 + body) == Some(&b'@') {
            return Some(xml[start..start + body + 2].to_string());
        }
        i = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_foreign_domains() {
        let d = domain_name("t1", "kv-e1", 7);
        assert_eq!(d, "zz-t1-kv-e1-g7");
        assert_eq!(parse_domain_name("t1", &d), Some(("kv-e1", 7)));
        assert_eq!(parse_domain_name("t2", &d), None);
        assert_eq!(parse_domain_name("t1", "zz-t1-kv-e1"), None);
        assert_eq!(parse_domain_name("t1", "zz-t1-kv-e1-gx"), None);
    }

    #[test]
    fn words_that_could_break_a_name_or_cmdline_are_invalid() {
        assert!(valid_word("kv-e0"));
        assert!(valid_word("demo_1.x"));
        for bad in ["", "-x", ".x", "a b", "a/b", "a'b", "a\"b", "a=b", "a&b"] {
            assert!(!valid_word(bad), "{bad:?}");
        }
    }

    #[test]
    fn rendered_domain_has_escaped_values_and_no_placeholders() {
        let xml = render(&DomainSpec {
            name: "zz-t-kv-e0-g1",
            memory_mib: 256,
            vcpus: 1,
            accel: Accel::Qemu,
            kernel: Path::new("/img/vmlinuz"),
            initrd: Path::new("/vms/a&b/initrd.img"),
            cmdline: &cmdline("kv-e0", &[]),
            serial_log: Path::new("/vms/<x>/serial.log"),
        })
        .unwrap();
        assert!(xml.contains("<domain type='qemu'>"));
        assert!(xml.contains("<name>zz-t-kv-e0-g1</name>"));
        assert!(xml.contains("<memory unit='MiB'>256</memory>"));
        assert!(xml.contains("<initrd>/vms/a&amp;b/initrd.img</initrd>"));
        assert!(xml.contains("path='/vms/&lt;x&gt;/serial.log'"));
        assert!(xml.contains("zz.replica=kv-e0 zz.host_alias=10.0.2.2 quiet</cmdline>"));
        assert_eq!(leftover_placeholder(&xml), None);
    }

    #[test]
    fn leftover_placeholders_are_found() {
        assert_eq!(leftover_placeholder("a @B_C@ d"), Some("@B_C@".into()));
        assert_eq!(leftover_placeholder("me@host @@ @x@"), None);
    }

    #[test]
    fn the_guest_routes_only_peers_off_the_hosts_loopback() {
        let ips: Vec<IpAddr> = vec!["10.213.7.1".parse().unwrap(), "10.213.7.3".parse().unwrap()];
        assert!(cmdline("kv-e0", &ips).contains(" zz.host_alias=10.0.2.2 zz.routes=10.213.7.1,10.213.7.3 quiet"));
        assert!(!cmdline("kv-e0", &[]).contains("zz.routes"));
    }
}
