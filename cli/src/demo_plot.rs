//! The picture of a demo run: per app, certified answers/s and 503s/s, and
//! the answers' p50/p99 latency, second by second (`GET /v1/series`, the
//! dashboard's charts), with the fault episode's markers, on seconds since
//! the fault was injected.

use crate::plot::{color, ensure_font, err, legend, pad, FONT};
use plotters::prelude::*;
use std::path::Path;
use zz_orchestrator::api::SeriesView;

pub const DEMO_SIZE: (u32, u32) = (1400, 800);

/// A marker kind's colour, as on the dashboard.
fn marker_color(kind: &str) -> RGBColor {
    match kind {
        "fault" => RGBColor(214, 39, 40),
        "incident" => RGBColor(255, 127, 14),
        "woken" => RGBColor(31, 119, 180),
        "certified" => RGBColor(44, 160, 44),
        "fenced" => RGBColor(148, 103, 189),
        "replaced" => RGBColor(140, 86, 75),
        _ => RGBColor(60, 60, 60),
    }
}

/// An app's colour: the palette without red, which marks errors and faults.
fn app_color(i: usize) -> RGBColor {
    const NOT_RED: [usize; 8] = [0, 2, 3, 5, 6, 7, 8, 9];
    color(NOT_RED[i % NOT_RED.len()])
}

/// Seconds of `t_ms` relative to `t0_ms`.
fn rel(t_ms: u64, t0_ms: u64) -> f64 {
    (t_ms as f64 - t0_ms as f64) / 1000.0
}

/// Draws `series` from `from_ms` on, relative to the injection at `t0_ms`,
/// with its markers and `extra` ones (unix ms, label) the caller saw.
pub fn demo_timeline(
    title: &str,
    series: &SeriesView,
    extra: &[(u64, String)],
    from_ms: u64,
    t0_ms: u64,
    path: &Path,
) -> anyhow::Result<()> {
    ensure_font()?;
    let to_ms = series.now_ms / 1000 * 1000;
    let x_range = rel(from_ms, t0_ms)..rel(to_ms, t0_ms).max(rel(from_ms, t0_ms) + 1.0);
    let in_range = |t: u64| t >= from_ms && t <= to_ms;
    let points = |app: &zz_orchestrator::api::AppSeries| {
        app.points
            .iter()
            .filter(|p| in_range(p.t_ms))
            .cloned()
            .collect::<Vec<_>>()
    };
    // Markers of every app once (a node's fault is in each app's list).
    let mut markers: Vec<&zz_orchestrator::timeline::Marker> = series
        .apps
        .iter()
        .flat_map(|a| a.markers.iter())
        .filter(|m| in_range(m.at_ms))
        .collect();
    markers.sort_by_key(|m| m.event);
    markers.dedup_by_key(|m| m.event);
    let mut markers: Vec<(u64, String)> = markers
        .into_iter()
        .map(|m| (m.at_ms, m.kind.clone()))
        .chain(extra.iter().filter(|(at, _)| in_range(*at)).cloned())
        .collect();
    markers.sort();

    let root = BitMapBackend::new(path, DEMO_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 24)).map_err(err)?;
    let (top, bottom) = root.split_vertically(DEMO_SIZE.1 / 2);

    let max_rate = series
        .apps
        .iter()
        .flat_map(&points)
        .map(|p| p.answers.max(p.errors) as f64)
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption("certified answers/s (lines) and 503s/s (bars)", (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.clone(), 0.0..pad(max_rate))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("s since the fault was injected")
        .y_desc("per second")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for (i, app) in series.apps.iter().enumerate() {
        let pts = points(app);
        let c = app_color(i);
        // Each point is the second that starts at t: drawn at its middle.
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (rel(p.t_ms + 500, t0_ms), p.answers as f64)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{} answers/s", app.app))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        let bar = marker_color("fault").mix(0.5).filled();
        chart
            .draw_series(pts.iter().filter(|p| p.errors > 0).map(|p| {
                let x = rel(p.t_ms, t0_ms);
                Rectangle::new([(x + 0.1, 0.0), (x + 0.9, p.errors as f64)], bar)
            }))
            .map_err(err)?;
    }
    draw_markers(&mut chart, &markers, t0_ms, pad(max_rate))?;
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;

    let max_ms = series
        .apps
        .iter()
        .flat_map(&points)
        .filter_map(|p| p.p99_ms)
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency of certified answers: p50 (solid), p99 (thin)", (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, 0.0..pad(max_ms))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("s since the fault was injected")
        .y_desc("ms")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(err)?;
    for (i, app) in series.apps.iter().enumerate() {
        let pts = points(app);
        let c = app_color(i);
        for (q, width) in [(50, 3), (99, 1)] {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| {
                    let v = if q == 50 { p.p50_ms } else { p.p99_ms };
                    v.map(|v| (rel(p.t_ms + 500, t0_ms), v))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(line, c.stroke_width(width)))
                .map_err(err)?
                .label(format!("{} p{q}", app.app))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(width)));
        }
    }
    draw_markers(&mut chart, &markers, t0_ms, pad(max_ms))?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)?;
    Ok(())
}

fn draw_markers<'a>(
    chart: &mut ChartContext<
        'a,
        BitMapBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    markers: &[(u64, String)],
    t0_ms: u64,
    y_max: f64,
) -> anyhow::Result<()> {
    // Labels of markers close together are stacked downwards.
    let mut last_x = f64::NEG_INFINITY;
    let mut stack = 0u32;
    let span = {
        let r = chart.x_range();
        (r.end - r.start).max(1.0)
    };
    for (at_ms, kind) in markers {
        let x = rel(*at_ms, t0_ms);
        let c = marker_color(kind);
        stack = if (x - last_x) < span / 25.0 { stack + 1 } else { 0 };
        last_x = x;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, y_max)],
                c.stroke_width(1),
            )))
            .map_err(err)?;
        let y = y_max * (0.97 - 0.07 * f64::from(stack % 8));
        chart
            .draw_series(std::iter::once(Text::new(
                kind.clone(),
                (x, y),
                (FONT, 13).into_font().color(&c),
            )))
            .map_err(err)?;
    }
    Ok(())
}
