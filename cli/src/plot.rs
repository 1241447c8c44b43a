//! PNG plots of bench results with plotters. Text uses a font compiled into
//! the binary (DejaVu Sans, `cli/assets/`), so a machine without any system
//! fonts draws the same image.

use crate::report::{mode_rank, standby_rank, RecoveryRun, ThroughputRun};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

/// Image sizes in pixels (width, height); the tests check them.
pub const THROUGHPUT_SIZE: (u32, u32) = (1400, 640);
pub const RECOVERY_SIZE: (u32, u32) = (1000, 680);

pub(crate) const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// tab10: distinct on white and for the common kinds of colour blindness.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(crate) fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// plotters' errors borrow the backend's error type; keep only the message.
pub(crate) fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

pub(crate) fn ensure_font() -> anyhow::Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    anyhow::ensure!(ok, "the embedded font did not load");
    Ok(())
}

/// A series' points, sorted by x.
type Points = Vec<(f64, f64)>;

/// One series per (mode and CPU layout, f, apps, via, workload), so runs of different
/// shapes are never joined into one line; via and workload are named in the
/// label only when they are not the defaults.
fn throughput_series(runs: &[ThroughputRun]) -> Vec<(String, Points, Points)> {
    // (mode rank, mode, f, apps, via, workload) → (p50, p99) points.
    type Key = (u8, String, usize, usize, String, String);
    let mut groups: BTreeMap<Key, (Points, Points)> = BTreeMap::new();
    for r in runs {
        let key = (
            mode_rank(&r.mode),
            r.mode_label(),
            r.f,
            r.apps,
            r.via.clone(),
            r.workload.clone(),
        );
        let g = groups.entry(key).or_default();
        g.0.push((r.throughput_ops, r.p50_ms));
        g.1.push((r.throughput_ops, r.p99_ms));
    }
    groups
        .into_iter()
        .map(|((_, mode, f, apps, via, workload), (mut p50, mut p99))| {
            p50.sort_by(|a, b| a.0.total_cmp(&b.0));
            p99.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut name = format!("{mode} f={f}");
            if apps != 1 {
                name.push_str(&format!(" apps={apps}"));
            }
            if via != "client" {
                name.push_str(&format!(" via {via}"));
            }
            if workload != "kv-put" {
                name.push_str(&format!(" {workload}"));
            }
            (name, p50, p99)
        })
        .collect()
}

/// `throughput-latency.png`: p50 and p99 latency against throughput, one
/// panel each, one line per series; the points are runs at different loads.
pub fn throughput_latency(runs: &[ThroughputRun], path: &Path) -> anyhow::Result<()> {
    ensure_font()?;
    let series = throughput_series(runs);
    let x_max = runs.iter().map(|r| r.throughput_ops).fold(0.0, f64::max);
    let root = BitMapBackend::new(path, THROUGHPUT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled("Throughput vs latency (closed-loop clients)", (FONT, 26))
        .map_err(err)?;
    let panels = root.split_evenly((1, 2));
    for (panel, (label, pick)) in panels.iter().zip([("p50", 0usize), ("p99", 1)]) {
        let y_max = series
            .iter()
            .flat_map(|s| if pick == 0 { &s.1 } else { &s.2 })
            .map(|p| p.1)
            .fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{label} latency"), (FONT, 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..pad(x_max), 0.0..pad(y_max))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("throughput (ops/s)")
            .y_desc(format!("{label} latency (ms)"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        for (i, (name, p50, p99)) in series.iter().enumerate() {
            let c = color(i);
            let pts = if pick == 0 { p50 } else { p99 };
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
        // Upper right stays clear: the fast unreplicated runs have the
        // lowest latencies, the replicated ones the lowest throughputs.
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// 10% headroom above the largest value; a range that is never empty.
pub(crate) fn pad(max: f64) -> f64 {
    if max > 0.0 && max.is_finite() {
        max * 1.1
    } else {
        1.0
    }
}

pub(crate) fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    pos: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(pos)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// `recovery.png`: fault → answer p99 against state size, both log scale;
/// one panel per backend, one line per standby tier, the full-transfer
/// baselines dashed.
pub fn recovery(runs: &[RecoveryRun], path: &Path) -> anyhow::Result<()> {
    ensure_font()?;
    // Log axes cannot show zero; such a point is a broken run anyway.
    let runs: Vec<&RecoveryRun> = runs
        .iter()
        .filter(|r| r.state_mb > 0.0 && r.fault_to_answer_p99_ms > 0.0)
        .collect();
    let mut by_backend: BTreeMap<String, Vec<&RecoveryRun>> = BTreeMap::new();
    for r in &runs {
        let name = r
            .accel
            .as_ref()
            .map_or_else(|| r.backend.clone(), |a| format!("{} ({a})", r.backend));
        by_backend.entry(name).or_default().push(r);
    }
    let root = BitMapBackend::new(path, RECOVERY_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled("Recovery: fault → first certified correct answer (p99)", (FONT, 24))
        .map_err(err)?;
    let panels = root.split_evenly((1, by_backend.len().max(1)));
    // One colour per tier across panels, so the same tier reads the same.
    let mut tiers: Vec<&str> = runs.iter().map(|r| r.standby.as_str()).collect();
    tiers.sort_by_key(|t| (standby_rank(t), t.to_string()));
    tiers.dedup();
    let (x_lo, x_hi) = log_range(runs.iter().map(|r| r.state_mb));
    let (y_lo, y_hi) = log_range(runs.iter().map(|r| r.fault_to_answer_p99_ms));
    for (panel, (backend, rs)) in panels.iter().zip(&by_backend) {
        recovery_panel(panel, backend, rs, &tiers, (x_lo..x_hi, y_lo..y_hi))?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn recovery_panel(
    panel: &DrawingArea<BitMapBackend<'_>, Shift>,
    backend: &str,
    runs: &[&RecoveryRun],
    tiers: &[&str],
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(panel)
        .caption(format!("{backend} backend"), (FONT, 20))
        .margin(12)
        // The last decade's label is centred on the right edge.
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x.log_scale(), y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("state size (MB)")
        .y_desc("fault → answer p99 (ms)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(err)?;
    let mut lines: BTreeMap<(bool, usize), Points> = BTreeMap::new();
    for r in runs {
        let tier = tiers.iter().position(|t| *t == r.standby).unwrap_or(0);
        lines
            .entry((r.baseline, tier))
            .or_default()
            .push((r.state_mb, r.fault_to_answer_p99_ms));
    }
    for ((baseline, tier), mut pts) in lines {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = color(tier);
        let name = tiers.get(tier).copied().unwrap_or("?");
        if baseline {
            chart
                .draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 6, c.stroke_width(2)))
                .map_err(err)?
                .label(format!("{name}, full-transfer baseline"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], c.stroke_width(2)));
            chart
                .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 5, c.filled())))
                .map_err(err)?;
        } else {
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// A log-axis range on whole decades (so the ticks are 1, 10, 100, ...)
/// with room on both sides of the values.
fn log_range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !(lo.is_finite() && lo > 0.0) {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf((lo / 1.5).log10().floor());
    let hi = 10f64.powf((hi * 1.5).log10().ceil());
    (lo, hi)
}

/// Tick labels on a log axis: no long fractions.
fn short(v: f64) -> String {
    if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
