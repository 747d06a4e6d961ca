//! The overview's charts, drawn on the server: the geometry of an SVG (coordinates in a fixed
//! `viewBox`, scaled by the browser) that the template writes out. No script: the pages'
//! Content-Security-Policy allows none inline, and a chart of a few dozen points needs none.

use chrono::NaiveDate;

/// The `viewBox`'s size and the plot area's margins (room for the axes' labels).
pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 240.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

/// A labelled position on an axis.
pub struct Tick {
    pub at: String,
    pub label: String,
}

/// A value over time as a step line: it holds its value until the next change.
pub struct StepChart {
    /// The SVG path of the line.
    pub path: String,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    /// The last value, labelled (also said in the chart's title).
    pub last: String,
}

/// One bar.
pub struct Bar {
    pub x: String,
    pub y: String,
    pub width: String,
    pub height: String,
    /// Where the bar's label and value are written.
    pub center: String,
    pub value_y: String,
    pub label: String,
    pub value: i64,
}

pub struct BarChart {
    pub bars: Vec<Bar>,
    pub y_ticks: Vec<Tick>,
}

/// The plot area's edges, for the axes' lines.
pub struct Frame {
    pub left: String,
    pub right: String,
    pub top: String,
    pub bottom: String,
}

pub fn frame() -> Frame {
    Frame {
        left: fmt(LEFT),
        right: fmt(WIDTH - RIGHT),
        top: fmt(TOP),
        bottom: fmt(HEIGHT - BOTTOM),
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// The smallest of 1, 2, 5 × 10ⁿ that is at least `v` (at least 1): the top of an axis.
pub fn nice_ceiling(v: i64) -> i64 {
    let v = v.max(1);
    let mut magnitude: i64 = 1;
    while magnitude.saturating_mul(10) < v {
        magnitude = magnitude.saturating_mul(10);
    }
    [1, 2, 5, 10]
        .into_iter()
        .map(|k| magnitude.saturating_mul(k))
        .find(|&top| top >= v)
        .unwrap_or(i64::MAX)
}

#[expect(clippy::cast_precision_loss, reason = "positions on a drawing")]
fn y_of(value: i64, low: i64, high: i64) -> f64 {
    let span = (high - low).max(1) as f64;
    let plot = HEIGHT - TOP - BOTTOM;
    HEIGHT - BOTTOM - (value - low) as f64 / span * plot
}

fn y_ticks(low: i64, high: i64, label: &impl Fn(i64) -> String) -> Vec<Tick> {
    let middle = if low == 0 { high / 2 } else { 0 };
    let mut values = vec![low, middle, high];
    values.dedup();
    values
        .into_iter()
        .map(|v| Tick {
            at: fmt(y_of(v, low, high)),
            label: label(v),
        })
        .collect()
}

/// Running totals by day (`points`, oldest first, each day's total after its changes) drawn
/// from the first day to `today`. `label` writes a value (money, a count).
pub fn step_chart(
    points: &[(NaiveDate, i64)],
    today: NaiveDate,
    label: impl Fn(i64) -> String,
) -> Option<StepChart> {
    let &(first, _) = points.first()?;
    let &(_, last) = points.last()?;
    let end = today.max(points.last()?.0);
    let days = (end - first).num_days().max(1);
    let low = points.iter().map(|&(_, v)| v).min().unwrap_or(0).min(0);
    let low = if low < 0 { -nice_ceiling(-low) } else { 0 };
    let high = nice_ceiling(points.iter().map(|&(_, v)| v).max().unwrap_or(0));
    #[expect(clippy::cast_precision_loss, reason = "positions on a drawing")]
    let x_of = |day: NaiveDate| {
        LEFT + (day - first).num_days() as f64 / days as f64 * (WIDTH - LEFT - RIGHT)
    };
    let mut path = format!("M{} {}", fmt(x_of(first)), fmt(y_of(0, low, high)));
    for &(day, value) in points {
        path.push_str(&format!(
            " H{} V{}",
            fmt(x_of(day)),
            fmt(y_of(value, low, high))
        ));
    }
    path.push_str(&format!(" H{}", fmt(x_of(end))));
    let day_label = |d: NaiveDate| d.format("%-d %b %Y").to_string();
    let mut x_ticks = vec![Tick {
        at: fmt(x_of(first)),
        label: day_label(first),
    }];
    if end != first {
        x_ticks.push(Tick {
            at: fmt(x_of(end)),
            label: day_label(end),
        });
    }
    Some(StepChart {
        path,
        y_ticks: y_ticks(low, high, &label),
        x_ticks,
        last: label(last),
    })
}

/// Bars of counts, labelled, side by side.
pub fn bar_chart(counts: &[(String, i64)]) -> BarChart {
    let high = nice_ceiling(counts.iter().map(|(_, v)| *v).max().unwrap_or(0));
    #[expect(clippy::cast_precision_loss, reason = "positions on a drawing")]
    let slot = (WIDTH - LEFT - RIGHT) / counts.len().max(1) as f64;
    let width = slot * 0.6;
    let bars = counts
        .iter()
        .enumerate()
        .map(|(i, (label, value))| {
            #[expect(clippy::cast_precision_loss, reason = "positions on a drawing")]
            let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
            let y = y_of((*value).max(0), 0, high);
            Bar {
                x: fmt(x),
                y: fmt(y),
                width: fmt(width),
                height: fmt(HEIGHT - BOTTOM - y),
                center: fmt(x + width / 2.0),
                value_y: fmt(y - 4.0),
                label: label.clone(),
                value: *value,
            }
        })
        .collect();
    BarChart {
        bars,
        y_ticks: y_ticks(0, high, &|v| v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(2000), 2000);
        assert_eq!(nice_ceiling(2001), 5000);
        assert_eq!(nice_ceiling(49_999), 50_000);
    }

    #[test]
    fn a_step_line_holds_each_value_until_the_next_change_and_runs_to_today() {
        let chart = step_chart(
            &[(day("2026-01-01"), 1000), (day("2026-01-11"), 2000)],
            day("2026-01-21"),
            |v| v.to_string(),
        )
        .expect("a chart");
        // Up from 0 to 1000 on the first day, flat, up to 2000 half-way, flat to today.
        assert_eq!(
            chart.path, "M84.0 204.0 H84.0 V108.0 H334.0 V12.0 H584.0",
            "{}",
            chart.path
        );
        assert_eq!(chart.last, "2000");
        let labels: Vec<&str> = chart.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "1000", "2000"]);
        let days: Vec<&str> = chart.x_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(days, ["1 Jan 2026", "21 Jan 2026"]);
    }

    #[test]
    fn no_points_no_chart() {
        assert!(step_chart(&[], day("2026-01-01"), |v| v.to_string()).is_none());
    }

    #[test]
    fn bars_are_as_tall_as_their_counts() {
        let chart = bar_chart(&[
            ("Free".into(), 10),
            ("Paid".into(), 5),
            ("Comped".into(), 0),
        ]);
        let heights: Vec<&str> = chart.bars.iter().map(|b| b.height.as_str()).collect();
        assert_eq!(heights, ["192.0", "96.0", "0.0"]);
        let one = bar_chart(&[("Free".into(), 1)]);
        let labels: Vec<&str> = one.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "1"], "no tick twice");
    }
}
