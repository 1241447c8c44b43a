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

#[cfg(test)]
mod tests {
    use super::*;

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
