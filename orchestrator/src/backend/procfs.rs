//! Reading `/proc/<pid>/stat`: the process state letter and its start time,
//! which together with the pid name a process without pid-reuse ambiguity.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start_ticks: u64,
}

pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse(&text)
}

/// The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted after the last `)`.
pub fn parse(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), start time is field 22: 19 fields further on.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// Whether `pid` is still the process that started at `start_ticks` and has
/// not exited.
pub fn alive(pid: u32, start_ticks: u64) -> Option<ProcStat> {
    stat(pid).filter(|s| s.start_ticks == start_ticks && s.state != 'Z' && s.state != 'X')
}

/// CPU time of the whole machine, in clock ticks since boot: (busy, total),
/// busy being all but idle and I/O wait (the `cpu` line of `/proc/stat`).
pub fn cpu_times() -> Option<(u64, u64)> {
    parse_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub fn parse_cpu(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is counted in user already.
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_cpu_time_leaves_out_idle_iowait_and_guest() {
        let text = "cpu  100 5 50 800 20 3 2 10 40 0\ncpu0 50 2 25 400 10 1 1 5 20 0\nintr 1\n";
        assert_eq!(parse_cpu(text), Some((170, 990)));
        assert_eq!(parse_cpu("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(parse_cpu("cpu  1 2 x 4 5\n"), None);
        assert!(cpu_times().is_some_and(|(busy, total)| busy <= total));
    }

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "4242 (a (b) c) T 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        let s = parse(line).unwrap();
        assert_eq!(s.state, 'T');
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn own_process_is_running() {
        let s = stat(std::process::id()).unwrap();
        assert!(matches!(s.state, 'R' | 'S'));
        assert!(alive(std::process::id(), s.start_ticks).is_some());
        assert!(alive(std::process::id(), s.start_ticks + 1).is_none());
    }
}
