//! Live per-app series of what web clients get from the gateway: certified
//! answers and 503s per second and the latency of the answers (p50, p99),
//! over a sliding window of whole seconds. The gateway records each request;
//! the admin API serves the window (`GET /v1/series`, the dashboard's
//! charts) and `/metrics` exports the newest whole second of the same
//! window, so both show the same figures.
//!
//! Time is an input (unix ms): the recorder reads no clock.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use utoipa::ToSchema;

/// Seconds the window keeps (whole seconds, the current one excluded).
pub const WINDOW_SECS: u64 = 60;

/// Latency histogram resolution: sub-buckets per power of two. A value's
/// bucket spans at most 1/32 of it, so a percentile read from the buckets
/// is within about 1.6 % of the exact one (its bucket's midpoint is used).
const SUB: u64 = 32;
const SUB_BITS: u32 = 5;

/// The bucket a latency in microseconds falls in.
fn bucket_of(us: u64) -> u32 {
    let b = if us < SUB {
        us
    } else {
        let shift = 63 - us.leading_zeros() - SUB_BITS;
        let mantissa = (us >> shift) - SUB; // 0..SUB
        (u64::from(shift) + 1) * SUB + mantissa
    };
    // At most 60 octaves of 32: fits.
    u32::try_from(b).unwrap_or(u32::MAX)
}

/// The range `[low, high)` of latencies (µs) in `bucket`.
fn bucket_range(bucket: u32) -> (u64, u64) {
    let b = u64::from(bucket);
    if b < SUB {
        return (b, b + 1);
    }
    let shift = b / SUB - 1;
    let mantissa = b % SUB + SUB;
    (mantissa << shift, (mantissa + 1) << shift)
}

/// What the gateway made of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// f+1 agreement nodes vouched for an answer; its latency in µs.
    Certified { latency_us: u64 },
    /// No certified answer by the deadline: the client got a 503.
    Unavailable,
}

#[derive(Clone, Debug, Default)]
struct Second {
    /// Unix second.
    at: u64,
    answers: u64,
    errors: u64,
    /// Latency bucket → answers in it.
    latency: BTreeMap<u32, u64>,
}

impl Second {
    /// The nearest-rank quantile (`permille`/1000) of the answers'
    /// latencies, in ms: the midpoint of the bucket holding it.
    fn quantile_ms(&self, permille: u64) -> Option<f64> {
        if self.answers == 0 {
            return None;
        }
        let rank = (self.answers * permille).div_ceil(1000).clamp(1, self.answers);
        let mut seen = 0;
        for (b, n) in &self.latency {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bucket_range(*b);
                return Some(round2((lo + hi - 1) as f64 / 2.0 / 1000.0));
            }
        }
        None
    }

    fn point(&self) -> Point {
        Point {
            t_ms: self.at * 1000,
            answers: self.answers,
            errors: self.errors,
            p50_ms: self.quantile_ms(500),
            p99_ms: self.quantile_ms(990),
        }
    }
}

/// Rounds to hundredths of a millisecond (10 µs), the precision served.
fn round2(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// One whole second of one app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Point {
    /// Start of the second (unix ms).
    pub t_ms: u64,
    /// Certified answers in that second (so: answers/s).
    pub answers: u64,
    /// Requests answered 503 (no certified answer in time) in that second.
    pub errors: u64,
    /// Median latency of the second's certified answers (ms); none without answers.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the second's certified answers (ms).
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Default)]
struct AppSeries {
    /// Oldest first; only seconds that saw a request.
    seconds: VecDeque<Second>,
    answers_total: u64,
    errors_total: u64,
}

#[derive(Debug, Default)]
struct State {
    apps: BTreeMap<String, AppSeries>,
    /// The newest second a reader was served: it no longer changes (a
    /// request recorded late for it counts in the next second), so what
    /// the dashboard and `/metrics` show of one second is the same.
    frozen_through: Option<u64>,
}

/// The recorder: one per process (see [`global`]), or one per test.
#[derive(Debug)]
pub struct Series {
    window_secs: u64,
    state: Mutex<State>,
}

/// Totals since the process started, for Prometheus counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub answers: u64,
    pub errors: u64,
}

impl Series {
    pub fn new(window_secs: u64) -> Series {
        Series {
            window_secs: window_secs.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves counts, never a broken invariant.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `app` appear (with zeros) before its first request.
    pub fn register(&self, app: &str) {
        self.lock().apps.entry(app.to_string()).or_default();
    }

    /// Records one request of `app` that finished at `now_ms`.
    pub fn record(&self, app: &str, outcome: Outcome, now_ms: u64) {
        let mut state = self.lock();
        let at = match state.frozen_through {
            Some(f) => (now_ms / 1000).max(f + 1),
            None => now_ms / 1000,
        };
        let apps = &mut state.apps;
        if !apps.contains_key(app) {
            apps.insert(app.to_string(), AppSeries::default());
        }
        let Some(s) = apps.get_mut(app) else {
            return;
        };
        // Requests finish out of order across tasks: one finishing just
        // after a second ended still belongs to its own second.
        let idx = match s.seconds.iter().rposition(|x| x.at <= at) {
            Some(i) if s.seconds[i].at == at => i,
            found => {
                let i = found.map_or(0, |i| i + 1);
                s.seconds.insert(
                    i,
                    Second {
                        at,
                        ..Second::default()
                    },
                );
                i
            }
        };
        let sec = &mut s.seconds[idx];
        match outcome {
            Outcome::Certified { latency_us } => {
                sec.answers += 1;
                *sec.latency.entry(bucket_of(latency_us)).or_default() += 1;
                s.answers_total += 1;
            }
            Outcome::Unavailable => {
                sec.errors += 1;
                s.errors_total += 1;
            }
        }
        let oldest = at.saturating_sub(self.window_secs + 1);
        while s.seconds.front().is_some_and(|x| x.at < oldest) {
            s.seconds.pop_front();
        }
    }

    /// The window as of `now_ms`: per app, one point per whole second from
    /// `window_secs` seconds ago up to the last second that has ended
    /// (seconds without requests are zeros), oldest first.
    pub fn window(&self, now_ms: u64) -> BTreeMap<String, Vec<Point>> {
        let last = (now_ms / 1000).saturating_sub(1);
        let first = (last + 1).saturating_sub(self.window_secs);
        let mut state = self.lock();
        state.freeze(last);
        state
            .apps
            .iter()
            .map(|(app, s)| {
                let mut have = s.seconds.iter().filter(|x| x.at >= first && x.at <= last).peekable();
                let points = (first..=last)
                    .map(|at| match have.next_if(|x| x.at == at) {
                        Some(x) => x.point(),
                        None => Second {
                            at,
                            ..Second::default()
                        }
                        .point(),
                    })
                    .collect();
                (app.clone(), points)
            })
            .collect()
    }

    /// The newest whole second as of `now_ms`, per app: what `/metrics`
    /// exports as gauges.
    pub fn latest(&self, now_ms: u64) -> BTreeMap<String, Point> {
        let at = (now_ms / 1000).saturating_sub(1);
        let mut state = self.lock();
        state.freeze(at);
        state
            .apps
            .iter()
            .map(|(app, s)| {
                let p = s.seconds.iter().rev().find(|x| x.at == at).map_or_else(
                    || {
                        Second {
                            at,
                            ..Second::default()
                        }
                        .point()
                    },
                    Second::point,
                );
                (app.clone(), p)
            })
            .collect()
    }

    pub fn totals(&self) -> BTreeMap<String, Totals> {
        self.lock()
            .apps
            .iter()
            .map(|(app, s)| {
                (
                    app.clone(),
                    Totals {
                        answers: s.answers_total,
                        errors: s.errors_total,
                    },
                )
            })
            .collect()
    }

    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }
}

impl State {
    fn freeze(&mut self, through: u64) {
        self.frozen_through = Some(self.frozen_through.map_or(through, |f| f.max(through)));
    }
}

/// The process's recorder, like the Prometheus one: the gateway records
/// into it and the admin API of the same process serves it (`zz up`,
/// `zz demo`). A gateway in a process of its own (`zz gateway`) records
/// into its own, which no admin API serves.
pub fn global() -> &'static Series {
    static SERIES: OnceLock<Series> = OnceLock::new();
    SERIES.get_or_init(|| Series::new(WINDOW_SECS))
}

/// Unix time in ms (0 before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn ok(ms: u64) -> Outcome {
        Outcome::Certified { latency_us: ms * 1000 }
    }

    #[test]
    fn buckets_tile_the_line_and_stay_within_a_thirty_second_of_their_value() {
        let mut prev_high = 0;
        for b in 0..1280u32 {
            let (lo, hi) = bucket_range(b);
            assert_eq!(lo, prev_high, "bucket {b} starts where {} ended", b.saturating_sub(1));
            assert!(hi > lo);
            assert!(hi - lo <= (lo / SUB).max(1), "bucket {b} [{lo}, {hi}) too wide");
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(hi - 1), b);
            prev_high = hi;
        }
    }

    #[test]
    fn rate_is_answers_per_whole_second_and_errors_are_apart() {
        let s = Series::new(60);
        for i in 0..250 {
            s.record("kv", ok(5), T0 + i * 4); // 250 in [T0, T0+1 s)
        }
        for i in 0..100 {
            s.record("kv", ok(5), T0 + 1000 + i * 10);
        }
        s.record("kv", Outcome::Unavailable, T0 + 1500);
        s.record("kv", Outcome::Unavailable, T0 + 1999);
        let w = s.window(T0 + 2500);
        let kv = &w["kv"];
        assert_eq!(kv.len(), 60);
        let last2: Vec<(u64, u64, u64)> = kv[58..].iter().map(|p| (p.t_ms, p.answers, p.errors)).collect();
        assert_eq!(last2, vec![(T0, 250, 0), (T0 + 1000, 100, 2)]);
        // Earlier seconds had nothing: zeros, not missing points.
        assert!(kv[..58]
            .iter()
            .all(|p| p.answers == 0 && p.errors == 0 && p.p50_ms.is_none()));
        assert_eq!(
            s.totals()["kv"],
            Totals {
                answers: 350,
                errors: 2
            }
        );
    }

    #[test]
    fn the_current_second_is_not_served_until_it_ends() {
        let s = Series::new(60);
        s.record("kv", ok(1), T0 + 100);
        assert!(s.window(T0 + 900)["kv"].iter().all(|p| p.answers == 0));
        assert_eq!(s.latest(T0 + 900)["kv"].answers, 0);
        assert_eq!(s.latest(T0 + 1000)["kv"].answers, 1);
        assert_eq!(s.latest(T0 + 1000)["kv"].t_ms, T0);
    }

    #[test]
    fn percentiles_are_nearest_rank_within_the_bucket_precision() {
        let s = Series::new(60);
        // 1..=100 ms, shuffled deterministically.
        for i in 0..100u64 {
            s.record("kv", ok(i * 37 % 100 + 1), T0 + i);
        }
        let p = s.latest(T0 + 1000)["kv"].clone();
        let (p50, p99) = (p.p50_ms.unwrap_or(0.0), p.p99_ms.unwrap_or(0.0));
        assert!((p50 - 50.0).abs() <= 50.0 / 32.0, "p50 {p50}");
        assert!((p99 - 99.0).abs() <= 99.0 / 32.0, "p99 {p99}");
        // One slow answer among 100 is the p99 only if it is the 99th rank.
        let s = Series::new(60);
        for i in 0..98 {
            s.record("kv", ok(2), T0 + i);
        }
        s.record("kv", ok(2), T0 + 98);
        s.record("kv", ok(800), T0 + 99);
        let p = s.latest(T0 + 1000)["kv"].clone();
        assert!((p.p99_ms.unwrap_or(0.0) - 2.0).abs() < 0.1, "{p:?}");
        // Two more slow ones (in a second not served yet): 3 of 102 are
        // slow, so the 101st rank is.
        let s = Series::new(60);
        for i in 0..99 {
            s.record("kv", ok(2), T0 + i);
        }
        for i in 99..102 {
            s.record("kv", ok(800), T0 + i);
        }
        let p = s.latest(T0 + 1000)["kv"].clone();
        assert!((p.p99_ms.unwrap_or(0.0) - 800.0).abs() < 800.0 / 32.0, "{p:?}");
        assert!((p.p50_ms.unwrap_or(0.0) - 2.0).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn the_window_slides_and_forgets_old_seconds() {
        let s = Series::new(10);
        for sec in 0..30u64 {
            for _ in 0..=sec {
                s.record("bank", ok(3), T0 + sec * 1000 + 10);
            }
        }
        let w = s.window(T0 + 30_000);
        let bank = &w["bank"];
        assert_eq!(bank.len(), 10);
        assert_eq!(bank[0].t_ms, T0 + 20_000);
        assert_eq!(bank[9].t_ms, T0 + 29_000);
        assert_eq!(
            bank.iter().map(|p| p.answers).collect::<Vec<_>>(),
            (21..=30).collect::<Vec<_>>()
        );
        // Memory stays bounded by the window.
        assert!(s.lock().apps["bank"].seconds.len() <= 12);
    }

    #[test]
    fn a_late_finisher_lands_in_its_own_second() {
        let s = Series::new(60);
        s.record("kv", ok(1), T0 + 1500);
        s.record("kv", ok(1), T0 + 900); // finished earlier, recorded later
        s.record("kv", ok(1), T0 + 950);
        let w = s.window(T0 + 2000);
        let kv = &w["kv"];
        assert_eq!((kv[58].answers, kv[59].answers), (2, 1));
    }

    #[test]
    fn a_second_once_served_does_not_change() {
        let s = Series::new(60);
        s.record("kv", ok(1), T0 + 100);
        assert_eq!(s.latest(T0 + 1000)["kv"].answers, 1);
        // A request whose end was timed within T0's second but recorded
        // after T0 was served counts in the next second.
        s.record("kv", ok(1), T0 + 999);
        assert_eq!(s.latest(T0 + 1000)["kv"].answers, 1);
        assert_eq!(s.window(T0 + 1001)["kv"][59].answers, 1);
        let next = s.latest(T0 + 2000)["kv"].clone();
        assert_eq!((next.t_ms, next.answers), (T0 + 1000, 1));
        assert_eq!(s.totals()["kv"].answers, 2);
    }

    #[test]
    fn registered_apps_show_zeros_before_any_request() {
        let s = Series::new(5);
        s.register("bank");
        let w = s.window(T0);
        assert_eq!(w["bank"].len(), 5);
        assert!(w["bank"].iter().all(|p| p.answers == 0 && p.p99_ms.is_none()));
    }
}
