//! CPU time and memory of this process and its descendants, by role, read
//! from /proc (Linux). Used by `zz bench` to report cost per request.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_secs: f64,
    pub rss_mib: f64,
    pub processes: usize,
}

fn ticks_per_sec() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux we target.
    100.0
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn cpu_secs(pid: u32) -> f64 {
    let Some(f) = stat_fields(pid) else { return 0.0 };
    let utime: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (utime + stime) / ticks_per_sec()
}

fn rss_mib(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0.0;
    };
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The role of this process itself.
pub const SELF_ROLE: &str = "client+gateway+orchestrator";

fn role(pid: u32, me: u32) -> &'static str {
    if pid == me {
        return SELF_ROLE;
    }
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    role_of_cmdline(&String::from_utf8_lossy(&cmd))
}

/// Classifies a child by its command line (NUL-separated, as in /proc).
fn role_of_cmdline(cmd: &str) -> &'static str {
    let mut args = cmd.split('\0');
    let exe = args.next().unwrap_or("");
    if exe.ends_with("zz-agent") && args.next() == Some("serve") {
        "unreplicated agent"
    } else if cmd.contains("zz-agent") {
        "execution replicas"
    } else if cmd.contains("agreement") {
        "agreement nodes"
    } else {
        "other"
    }
}

/// Current usage of this process and every descendant, grouped by role.
pub fn snapshot() -> BTreeMap<&'static str, Usage> {
    let me = std::process::id();
    let mut pids = vec![me];
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    // Walk down the tree: anything whose ancestor chain reaches `me`.
    let parents: BTreeMap<u32, u32> = all.iter().filter_map(|p| Some((*p, ppid(*p)?))).collect();
    for p in &all {
        let mut cur = *p;
        for _ in 0..16 {
            match parents.get(&cur) {
                Some(&pp) if pp == me => {
                    pids.push(*p);
                    break;
                }
                Some(&pp) if pp > 1 => cur = pp,
                _ => break,
            }
        }
    }
    let mut out: BTreeMap<&'static str, Usage> = BTreeMap::new();
    for p in pids {
        let u = out.entry(role(p, me)).or_default();
        u.cpu_secs += cpu_secs(p);
        u.rss_mib += rss_mib(p);
        u.processes += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::role_of_cmdline;

    #[test]
    fn serve_agents_are_their_own_role() {
        assert_eq!(
            role_of_cmdline("/t/release/zz-agent\0serve\0--app\0kv\0"),
            "unreplicated agent"
        );
        assert_eq!(
            role_of_cmdline("/t/release/zz-agent\0--deployment\0d\0--replica\0kv-e0\0"),
            "execution replicas"
        );
        assert_eq!(
            role_of_cmdline("/t/release/zz\0agreement\0--config\0c.toml\0"),
            "agreement nodes"
        );
    }
}
