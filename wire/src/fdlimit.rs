//! The open-file limit. Every connection holds a descriptor, and a soft
//! limit of 1024 is a common default, so each role raises its soft limit to
//! the hard one at start; servers size their connection caps from it.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Linux refuses a soft limit above `fs.nr_open` (1 Mi by default), even
/// when the hard limit is unlimited.
const CEILING: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both; returns
/// the soft limit in force afterwards (`None` if it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return None;
        }
    };
    let want = hard.min(CEILING);
    if soft >= want {
        tracing::info!(soft, hard, "open-file limit");
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = want, hard, "raised the open-file soft limit");
            Some(want)
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open-file soft limit");
            Some(soft)
        }
    }
}

/// The soft `RLIMIT_NOFILE` now, if it can be read.
pub fn nofile_limit() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft)
}
