//! Stacked bar charts as inline SVG, drawn on the server: no chart library and no script. Each
//! bar segment carries a `<title>` (the browser's tooltip) and `data-*` attributes with its
//! series, bucket and figure, so the numbers are readable by people and by tests alike.
//!
//! Colours are CSS classes `s0`…`s7` (see `assets/style.css`): the page's content policy allows
//! no inline styles, and the legend reuses the same classes.

use std::fmt::Write as _;

use super::html::esc;

/// How many colours the palette has; series beyond it are folded into one rest series first.
pub(super) const PALETTE: usize = 8;

/// One stacked series: a name and one figure per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Series {
    /// What it is (a key, model or account name, or the rest).
    pub name: String,
    /// Its figure in each bucket, in bucket order.
    pub values: Vec<u64>,
}

/// A chart to draw.
#[derive(Debug)]
pub(super) struct StackedBars<'a> {
    /// `requests` or `tokens`: in tooltips and the axis title.
    pub unit: &'a str,
    /// Bucket labels in full (`2025-01-31T13:00:00Z`, `2025-01-31`), in time order.
    pub buckets: &'a [String],
    /// Short labels for the x axis, one per bucket.
    pub ticks: &'a [String],
    /// Axis title under the bars, e.g. `hour (UTC)`.
    pub x_title: &'a str,
    /// At most [`PALETTE`] series, bottom first.
    pub series: &'a [Series],
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 44.0;
/// Most x-axis labels drawn; the others are skipped evenly so labels never overlap.
const MAX_TICKS: usize = 12;

/// The smallest 1, 2 or 5 × 10ⁿ at least `x`.
fn nice_ceiling(x: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for m in [1, 2, 5] {
            let candidate = magnitude.saturating_mul(m);
            if candidate >= x {
                return candidate;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

/// `1234567` as `1.2M`, `12345` as `12.3k`: axis labels only; tooltips carry exact figures.
fn short(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl StackedBars<'_> {
    /// The chart as an `<svg>` element followed by its legend (with each series' total).
    pub(super) fn render(&self) -> String {
        let n = self.buckets.len().max(1);
        let totals: Vec<u64> = (0..self.buckets.len())
            .map(|i| self.series.iter().map(|s| s.values[i]).sum())
            .collect();
        let top = totals.iter().copied().max().unwrap_or(0);
        // Up to four gridlines above zero at a round step, the top one at or just above the
        // tallest bar.
        let step = nice_ceiling(top.div_ceil(4).max(1));
        let lines = top.div_ceil(step).max(1);
        let scale_max = step * lines;
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let slot = plot_w / n as f64;
        let bar = (slot * 0.8).max(1.0);
        let y_of = |v: u64| TOP + plot_h - plot_h * v as f64 / scale_max as f64;

        let mut out = String::with_capacity(2048 + 160 * self.buckets.len() * self.series.len());
        let _ = write!(
            out,
            "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
             aria-label=\"{} per bucket, stacked\" data-unit=\"{}\">",
            esc(self.unit),
            esc(self.unit)
        );
        for i in 0..=lines {
            let y = y_of(step * i);
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
                 <text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                short(step * i)
            );
        }
        for (i, bucket) in self.buckets.iter().enumerate() {
            let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
            let mut base = 0u64;
            for (s, series) in self.series.iter().enumerate() {
                let value = series.values[i];
                if value == 0 {
                    continue;
                }
                let (y_top, y_bottom) = (y_of(base + value), y_of(base));
                base += value;
                let _ = write!(
                    out,
                    "<rect class=\"s{}\" x=\"{x:.1}\" y=\"{y_top:.1}\" width=\"{bar:.1}\" \
                     height=\"{:.1}\" data-series=\"{}\" data-bucket=\"{}\" data-value=\"{value}\">\
                     <title>{}, {}: {value} {}</title></rect>",
                    s % PALETTE,
                    (y_bottom - y_top).max(0.5),
                    esc(&series.name),
                    esc(bucket),
                    esc(&series.name),
                    esc(bucket),
                    esc(self.unit)
                );
            }
        }
        let every = n.div_ceil(MAX_TICKS);
        for (i, tick) in self.ticks.iter().enumerate().step_by(every) {
            let x = LEFT + slot * (i as f64 + 0.5);
            let _ = write!(
                out,
                "<text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + plot_h + 16.0,
                esc(tick)
            );
        }
        let _ = write!(
            out,
            "<text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text class=\"axis-title\" x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" \
             transform=\"rotate(-90 14 {:.1})\">{}</text></svg>",
            LEFT + plot_w / 2.0,
            HEIGHT - 6.0,
            esc(self.x_title),
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            esc(self.unit)
        );
        out.push_str("<ul class=\"legend\">");
        if self.series.is_empty() {
            out.push_str("<li>nothing recorded in this range</li>");
        }
        for (s, series) in self.series.iter().enumerate() {
            let total: u64 = series.values.iter().sum();
            let _ = write!(
                out,
                "<li data-series=\"{}\" data-total=\"{total}\"><svg class=\"swatch\" \
                 viewBox=\"0 0 10 10\"><rect class=\"s{}\" width=\"10\" height=\"10\"/></svg>\
                 {} <span class=\"figure\">{total}</span></li>",
                esc(&series.name),
                s % PALETTE,
                esc(&series.name)
            );
        }
        out.push_str("</ul>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_steps() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(250), 500);
        assert_eq!(short(12_345), "12.3k");
        assert_eq!(short(999), "999");
    }

    #[test]
    fn segments_stack_with_titles_and_escaped_names() {
        let buckets = vec!["2025-01-01".to_owned(), "2025-01-02".to_owned()];
        let series = vec![
            Series {
                name: "alice".to_owned(),
                values: vec![3, 0],
            },
            Series {
                name: "<bob>".to_owned(),
                values: vec![1, 2],
            },
        ];
        let svg = StackedBars {
            unit: "requests",
            buckets: &buckets,
            ticks: &buckets,
            x_title: "day (UTC)",
            series: &series,
        }
        .render();
        assert_eq!(
            svg.matches("<rect class=\"s").count(),
            3 + 2,
            "3 segments, 2 swatches"
        );
        assert!(
            svg.contains("<title>alice, 2025-01-01: 3 requests</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("data-series=\"&lt;bob&gt;\" data-bucket=\"2025-01-02\" data-value=\"2\"")
        );
        assert!(!svg.contains("<bob>"));
        assert!(
            svg.contains("data-series=\"alice\" data-total=\"3\""),
            "alice's total in the legend"
        );
        // The tallest bar (4) sits under a scale of 4 × 1.
        assert!(svg.contains(">4</text>"), "{svg}");
    }
}
