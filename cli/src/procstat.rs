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

/// CPU seconds `pid` used so far, all threads (0 if it is gone).
pub fn cpu_secs(pid: u32) -> f64 {
    let Some(f) = stat_fields(pid) else { return 0.0 };
    let utime: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (utime + stime) / ticks_per_sec()
}

/// Resident memory of `pid` in MiB (0 if it is gone).
pub fn rss_mib(pid: u32) -> f64 {
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
    let mut out: BTreeMap<&'static str, Usage> = BTreeMap::new();
    for p in family() {
        let u = out.entry(role(p, me)).or_default();
        u.cpu_secs += cpu_secs(p);
        u.rss_mib += rss_mib(p);
        u.processes += 1;
    }
    out
}

/// One process of this family: who it is, its role and its usage now.
#[derive(Clone, Debug)]
pub struct Process {
    /// `a{id}` for an agreement node, the replica's name for a replica
    /// (the first of `names` among its arguments), else `pid {pid}`.
    pub label: String,
    pub role: &'static str,
    pub usage: Usage,
}

/// Usage of this process and every descendant, one by one (`zz bench
/// --attack` reports the correct nodes apart from the faulty one).
pub fn processes(names: &[String]) -> Vec<Process> {
    let me = std::process::id();
    family()
        .into_iter()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            Process {
                label: label_of_cmdline(&cmd, names).unwrap_or_else(|| format!("pid {p}")),
                role: role(p, me),
                usage: Usage {
                    cpu_secs: cpu_secs(p),
                    rss_mib: rss_mib(p),
                    processes: 1,
                },
            }
        })
        .collect()
}

fn label_of_cmdline(cmd: &str, names: &[String]) -> Option<String> {
    let args: Vec<&str> = cmd.split('\0').collect();
    if args.get(1) == Some(&"agreement") {
        let id = args.iter().position(|a| *a == "--id").and_then(|i| args.get(i + 1))?;
        return Some(format!("a{id}"));
    }
    args.iter()
        .find(|a| names.iter().any(|n| n == *a))
        .map(|a| a.to_string())
}

/// Whether a role executes the app (its processes are what `full` runs
/// more of than `zz`).
fn executes(role: &str) -> bool {
    matches!(role, "execution replicas" | "unreplicated agent")
}

/// `zz bench --exec-cpus`: pins every thread of the execution replicas (or
/// the unreplicated agent) to `exec` and every other thread of this process
/// and its descendants (agreement nodes, client, orchestrator) to the other
/// CPUs this process may use: the execution host apart from the agreement
/// cluster, as ZZ deploys them, on one machine. Processes started later
/// (replacements) are not pinned. Returns the processes pinned on each side.
pub fn split_cpus(exec: &[usize]) -> anyhow::Result<(usize, usize)> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let usable = cpus_in(&sched_getaffinity(Pid::from_raw(0))?);
    anyhow::ensure!(!exec.is_empty(), "--exec-cpus names no CPU");
    if let Some(c) = exec.iter().find(|c| !usable.contains(c)) {
        anyhow::bail!("--exec-cpus: CPU {c} is not one this process may use ({usable:?})");
    }
    let rest: Vec<usize> = usable.iter().copied().filter(|c| !exec.contains(c)).collect();
    anyhow::ensure!(
        !rest.is_empty(),
        "--exec-cpus {exec:?} leaves no CPU for the agreement nodes and the client (usable: {usable:?})"
    );
    let set_of = |cpus: &[usize]| -> anyhow::Result<CpuSet> {
        let mut set = CpuSet::new();
        for c in cpus {
            set.set(*c)?;
        }
        Ok(set)
    };
    let (exec_set, rest_set) = (set_of(exec)?, set_of(&rest)?);
    let me = std::process::id();
    let mut pinned = (0, 0);
    for p in family() {
        let on_exec = executes(role(p, me));
        let set = if on_exec { &exec_set } else { &rest_set };
        for t in numeric_entries::<i32>(&format!("/proc/{p}/task")) {
            // A thread that exited since the listing is no error.
            match sched_setaffinity(Pid::from_raw(t), set) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => anyhow::bail!("pinning thread {t} of process {p}: {e}"),
            }
        }
        if on_exec {
            pinned.0 += 1;
        } else {
            pinned.1 += 1;
        }
    }
    Ok(pinned)
}

/// The CPUs in `set`.
fn cpus_in(set: &nix::sched::CpuSet) -> Vec<usize> {
    (0..nix::sched::CpuSet::count())
        .filter(|c| set.is_set(*c).unwrap_or(false))
        .collect()
}

/// The entries of `dir` named by a number (pids, thread ids); none if it
/// cannot be read.
fn numeric_entries<T: std::str::FromStr>(dir: &str) -> Vec<T> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// This process and every descendant.
fn family() -> Vec<u32> {
    let me = std::process::id();
    let mut pids = vec![me];
    let all: Vec<u32> = numeric_entries("/proc");
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
    pids
}

#[cfg(test)]
mod tests {
    use super::{cpus_in, role_of_cmdline, split_cpus};
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;

    fn cpus_of(pid: i32) -> Vec<usize> {
        cpus_in(&sched_getaffinity(Pid::from_raw(pid)).unwrap())
    }

    #[test]
    fn split_cpus_pins_execution_apart_from_the_rest() {
        let usable = cpus_of(0);
        assert!(split_cpus(&[]).is_err());
        let unusable = (0..CpuSet::count()).find(|c| !usable.contains(c)).unwrap();
        let err = split_cpus(&[unusable]).unwrap_err().to_string();
        assert!(err.contains("not one this process may use"), "{err}");
        let err = split_cpus(&usable).unwrap_err().to_string();
        assert!(err.contains("leaves no CPU"), "{err}");
        if usable.len() < 2 {
            eprintln!("one usable CPU ({usable:?}): nothing to split");
            return;
        }
        // A child whose command line names the agent counts as an
        // execution replica; this process stays with the rest.
        // (`read` is a shell builtin: no grandchild to leave behind.)
        let mut agent = std::process::Command::new("sh")
            .args(["-c", "read x", "zz-agent"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let exec = *usable.last().unwrap();
        let pinned = split_cpus(&[exec]);
        let agent_cpus = cpus_of(agent.id() as i32);
        let _ = agent.kill();
        let _ = agent.wait();
        assert_eq!(pinned.unwrap(), (1, 1));
        assert_eq!(agent_cpus, vec![exec]);
        let rest: Vec<usize> = usable.iter().copied().filter(|c| *c != exec).collect();
        assert_eq!(cpus_of(0), rest);
    }

    #[test]
    fn processes_are_labelled_by_node_id_or_replica_name() {
        let names = vec!["kv-e0".to_string()];
        assert_eq!(
            super::label_of_cmdline("/t/zz\0agreement\0--config\0c.toml\0--id\x003\0", &names).as_deref(),
            Some("a3")
        );
        assert_eq!(
            super::label_of_cmdline("/t/zz-agent\0--replica\0kv-e0\0", &names).as_deref(),
            Some("kv-e0")
        );
        assert_eq!(super::label_of_cmdline("/t/zz\0bench\0", &names), None);
    }

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
