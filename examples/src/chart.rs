//! The charts of the testnet report, drawn on a [`Canvas`]: distributions as density step lines
//! over a shared axis (with labelled vertical markers: an ideal, a target), bars against
//! reference lines, and a grid of panels in one image.

use crate::plot::{Canvas, Rgb};

/// Panel size in pixels.
const W: usize = 900;
const H: usize = 540;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 870.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 470.0;
const BLACK: Rgb = [0, 0, 0];
const GREY: Rgb = [200, 200, 200];

/// One series of a density chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Line colour.
    pub colour: Rgb,
    /// Density per bin (the bins of [`density_chart`]).
    pub density: Vec<f64>,
}

/// A labelled line across a chart at `at` (x for density charts, y for bar charts).
#[derive(Debug, Clone)]
pub struct Marker {
    /// Where.
    pub at: f64,
    /// Legend text.
    pub label: String,
    /// Colour.
    pub colour: Rgb,
}

/// One bar of a bar chart.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Label under the bar.
    pub label: String,
    /// Its height.
    pub value: f64,
    /// Colour.
    pub colour: Rgb,
}

/// Normalised histogram of `samples` over `bins` equal bins of `[0, max)` (each bin's share
/// of the samples; values at or beyond `max` go to the last bin).
pub fn histogram(samples: &[f64], max: f64, bins: usize) -> Vec<f64> {
    let mut counts = vec![0.0; bins];
    if samples.is_empty() || max <= 0.0 || bins == 0 {
        return counts;
    }
    for &s in samples {
        let i = ((s / max) * bins as f64)
            .floor()
            .clamp(0.0, (bins - 1) as f64) as usize;
        counts[i] += 1.0;
    }
    let n = samples.len() as f64;
    counts.iter_mut().for_each(|c| *c /= n);
    counts
}

/// A tick label for `v` on an axis whose ticks are `step` apart.
fn tick(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else if step >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A round step (1, 2 or 5 times a power of ten) giving about five ticks up to `max`.
pub fn round_step(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let rough = max / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    let unit = rough / power;
    // The nearest of 1, 2, 5 and 10: between three and ten ticks.
    let nice = if unit < 1.5 {
        1.0
    } else if unit < 3.0 {
        2.0
    } else if unit < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// The round ticks from 0 to `max` (every multiple of [`round_step`] that fits).
fn ticks(max: f64) -> (f64, Vec<f64>) {
    let step = round_step(max);
    let n = (max / step + 1e-9).floor() as usize;
    (step, (0..=n.min(50)).map(|k| k as f64 * step).collect())
}

/// Grid lines and labels: x ticks at round values of `[0, max]`, y ticks at round values of
/// `[0, top]` labelled by `y_label`.
fn axes(c: &mut Canvas, max: f64, top: f64, y_label: impl Fn(f64, f64) -> String) {
    let (step, xs) = ticks(max);
    for v in xs {
        let x = LEFT + (RIGHT - LEFT) * v / max.max(1e-12);
        c.line((x, TOP), (x, BOTTOM), 1, GREY);
        let label = tick(v, step);
        c.text(
            x as i64 - Canvas::text_width(&label, 2) / 2,
            BOTTOM as i64 + 10,
            &label,
            2,
            BLACK,
        );
    }
    let (step, ys) = ticks(top);
    for v in ys {
        let y = BOTTOM - (BOTTOM - TOP) * v / top.max(1e-12);
        c.line((LEFT, y), (RIGHT, y), 1, GREY);
        let label = y_label(v, step);
        c.text(
            LEFT as i64 - 10 - Canvas::text_width(&label, 1),
            y as i64 - 3,
            &label,
            1,
            BLACK,
        );
    }
}

fn frame(c: &mut Canvas, title: &str, x_label: &str, y_label: &str) {
    c.text(LEFT as i64, 20, title, 2, BLACK);
    c.line((LEFT, TOP), (LEFT, BOTTOM), 2, BLACK);
    c.line((LEFT, BOTTOM), (RIGHT, BOTTOM), 2, BLACK);
    c.text(
        ((LEFT + RIGHT) / 2.0) as i64 - Canvas::text_width(x_label, 2) / 2,
        BOTTOM as i64 + 35,
        x_label,
        2,
        BLACK,
    );
    c.text(8, TOP as i64 - 18, y_label, 1, BLACK);
}

/// Where a panel's legend goes: where its lines leave room.
#[derive(Clone, Copy)]
enum Corner {
    TopRight,
    /// Where a CDF has nothing to hide.
    BottomRight,
}

/// Draws the legend in `corner`, on white so that lines under it do not cross it.
fn legend(c: &mut Canvas, entries: &[(&str, Rgb)], corner: Corner) {
    let widest = entries
        .iter()
        .map(|(name, _)| Canvas::text_width(name, 2))
        .max()
        .unwrap_or(0);
    let x = RIGHT as i64 - 10 - widest;
    let rows = 22 * entries.len() as i64;
    let first = match corner {
        Corner::TopRight => TOP as i64 + 10,
        Corner::BottomRight => BOTTOM as i64 - 10 - rows,
    };
    if !entries.is_empty() {
        c.fill(
            x - 40,
            first - 6,
            RIGHT as i64 - 4,
            first + rows - 4,
            [255, 255, 255],
        );
    }
    for (row, (name, colour)) in entries.iter().enumerate() {
        let ly = first + 22 * row as i64;
        c.fill(x - 30, ly, x - 10, ly + 10, *colour);
        c.text(x, ly, name, 2, BLACK);
    }
}

/// Draws `series` (densities over equal bins of `[0, max)`) as step lines, with axes, ticks,
/// a title, vertical `markers` and a legend.
pub fn density_chart(
    title: &str,
    x_label: &str,
    max: f64,
    series: &[Series],
    markers: &[Marker],
) -> Canvas {
    let mut c = Canvas::new(W, H);
    // Headroom for the legend (about a twentieth of the height per row), so that it never
    // hides the top of a series.
    let rows = (series.len() + markers.len()) as f64;
    let peak = series
        .iter()
        .flat_map(|s| s.density.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * (1.1 + 0.06 * rows);
    axes(&mut c, max, peak * 100.0, |v, step| {
        format!("{}%", tick(v, step))
    });
    frame(&mut c, title, x_label, "SHARE PER BIN");
    for s in series {
        let bins = s.density.len().max(1);
        let bw = (RIGHT - LEFT) / bins as f64;
        let y = |d: f64| BOTTOM - (BOTTOM - TOP) * d / peak;
        let mut prev: Option<(f64, f64)> = None;
        for (i, &d) in s.density.iter().enumerate() {
            let x0 = LEFT + bw * i as f64;
            let point = (x0, y(d));
            if let Some(p) = prev {
                c.line(p, (x0, p.1), 2, s.colour);
                c.line((x0, p.1), point, 2, s.colour);
            }
            c.line(point, (x0 + bw, point.1), 2, s.colour);
            prev = Some((x0 + bw, point.1));
        }
    }
    for m in markers {
        let x = LEFT + (RIGHT - LEFT) * (m.at / max.max(1e-12)).clamp(0.0, 1.0);
        // Dashed, so that the series under it stay visible.
        let mut y = TOP;
        while y < BOTTOM {
            c.line((x, y), (x, (y + 8.0).min(BOTTOM)), 2, m.colour);
            y += 14.0;
        }
    }
    let entries: Vec<(&str, Rgb)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.colour))
        .chain(markers.iter().map(|m| (m.label.as_str(), m.colour)))
        .collect();
    legend(&mut c, &entries, Corner::TopRight);
    c
}

/// Draws the cumulative distributions of `series` (densities over equal bins of `[0, max)`, as
/// [`density_chart`] takes them) as step lines from 0 to 100 %, with round ticks, a title
/// and a legend: where the quantiles lie, which a density's bins hide.
pub fn cdf_chart(title: &str, x_label: &str, max: f64, series: &[Series]) -> Canvas {
    let mut c = Canvas::new(W, H);
    axes(&mut c, max, 100.0, |v, _| format!("{v:.0}%"));
    frame(&mut c, title, x_label, "SHARE AT OR BELOW");
    for s in series {
        let bins = s.density.len().max(1);
        let bw = (RIGHT - LEFT) / bins as f64;
        let y = |d: f64| BOTTOM - (BOTTOM - TOP) * d.clamp(0.0, 1.0);
        let mut sum = 0.0;
        let mut prev = (LEFT, y(0.0));
        for (i, &d) in s.density.iter().enumerate() {
            sum += d;
            let x1 = LEFT + bw * (i + 1) as f64;
            c.line(prev, (prev.0, y(sum)), 2, s.colour);
            c.line((prev.0, y(sum)), (x1, y(sum)), 2, s.colour);
            prev = (x1, y(sum));
        }
    }
    let entries: Vec<(&str, Rgb)> = series.iter().map(|s| (s.name.as_str(), s.colour)).collect();
    // A CDF climbs from the bottom left to the top right: the bottom right is empty.
    legend(&mut c, &entries, Corner::BottomRight);
    c
}

/// Draws `bars` (heights in `[0, max]`, shown with `unit`) with horizontal `markers`.
pub fn bar_chart(title: &str, unit: &str, max: f64, bars: &[Bar], markers: &[Marker]) -> Canvas {
    let mut c = Canvas::new(W, H);
    let max = max.max(1e-12);
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * (v / max).clamp(0.0, 1.0);
    let (step, levels) = ticks(max);
    for v in levels {
        c.line((LEFT, y(v)), (RIGHT, y(v)), 1, GREY);
        let label = format!("{}{unit}", tick(v, step));
        c.text(
            LEFT as i64 - 10 - Canvas::text_width(&label, 1),
            y(v) as i64 - 3,
            &label,
            1,
            BLACK,
        );
    }
    frame(&mut c, title, "", "");
    let slot = (RIGHT - LEFT) / bars.len().max(1) as f64;
    for (i, b) in bars.iter().enumerate() {
        let x0 = LEFT + slot * (i as f64 + 0.2);
        let x1 = LEFT + slot * (i as f64 + 0.8);
        c.fill(
            x0 as i64,
            y(b.value) as i64,
            x1 as i64,
            BOTTOM as i64 - 1,
            b.colour,
        );
        let value = format!("{}{unit}", tick(b.value, step / 10.0));
        let mid = ((x0 + x1) / 2.0) as i64;
        c.text(
            mid - Canvas::text_width(&value, 2) / 2,
            y(b.value) as i64 - 20,
            &value,
            2,
            BLACK,
        );
        c.text(
            mid - Canvas::text_width(&b.label, 2) / 2,
            BOTTOM as i64 + 12,
            &b.label,
            2,
            BLACK,
        );
    }
    for m in markers {
        let mut x = LEFT;
        while x < RIGHT {
            c.line((x, y(m.at)), ((x + 10.0).min(RIGHT), y(m.at)), 2, m.colour);
            x += 18.0;
        }
    }
    let entries: Vec<(&str, Rgb)> = markers
        .iter()
        .map(|m| (m.label.as_str(), m.colour))
        .collect();
    legend(&mut c, &entries, Corner::TopRight);
    c
}

/// `panels` in rows of `columns`, in one image.
pub fn grid(panels: &[Canvas], columns: usize) -> Canvas {
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let (pw, ph) = panels.first().map_or((W, H), Canvas::size);
    let mut c = Canvas::new(pw * columns.min(panels.len().max(1)), ph * rows);
    for (i, p) in panels.iter().enumerate() {
        c.paste(((i % columns) * pw) as i64, ((i / columns) * ph) as i64, p);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_and_give_about_five_ticks() {
        for (max, step) in [
            (1.0, 0.2),
            (7.3, 1.0),
            (170.0, 50.0),
            (1234.0, 200.0),
            (100.0, 20.0),
        ] {
            assert!(
                (round_step(max) - step).abs() < 1e-9,
                "{max}: {}",
                round_step(max)
            );
        }
        for max in [0.37, 3.0, 49.0, 512.0, 9_999.0] {
            let n = (max / round_step(max)).floor();
            assert!((2.0..=10.0).contains(&n), "{max}: {n} ticks");
        }
        assert_eq!(round_step(0.0), 1.0);
        assert_eq!(round_step(f64::NAN), 1.0);
    }

    #[test]
    fn histogram_shares_sum_to_one() {
        let h = histogram(&[1.0, 2.0, 9.9, 50.0], 10.0, 10);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(h[9], 0.5);
    }

    #[test]
    fn a_grid_holds_every_panel() {
        let mut a = Canvas::new(4, 3);
        a.set(0, 0, [1, 2, 3]);
        let g = grid(&[a.clone(), a.clone(), a], 2);
        assert_eq!(g.size(), (8, 6));
        let bars = bar_chart(
            "T",
            "%",
            10.0,
            &[Bar {
                label: "A".into(),
                value: 5.0,
                colour: [9, 9, 9],
            }],
            &[],
        );
        assert_eq!(bars.size(), (W, H));
    }
}
