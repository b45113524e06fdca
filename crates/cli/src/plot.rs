//! Line charts as PNG files, for training metrics.
//!
//! Text is drawn with DejaVu Sans Mono, embedded in the binary (its
//! license is `assets/DejaVu-LICENSE.txt`), so charts look the same on
//! every machine and need no system fonts. A chart is rendered to a
//! temporary file next to its destination and renamed over it, so a
//! failure never leaves a half-written image.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// The embedded font.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// Chart size in pixels.
const SIZE: (u32, u32) = (800, 500);

/// One named line.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points; non-finite ones (and, on a log axis, non-positive
    /// ones) are skipped.
    pub points: Vec<(f64, f64)>,
}

/// Titles and the y scale of a chart.
#[derive(Clone, Copy, Debug)]
pub struct Chart<'a> {
    /// Caption.
    pub title: &'a str,
    /// X-axis label.
    pub x: &'a str,
    /// Y-axis label.
    pub y: &'a str,
    /// A logarithmic y axis (for gains that grow by orders of magnitude).
    pub log_y: bool,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn font_registered() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if !ok {
        bail!("the embedded chart font could not be loaded");
    }
    Ok(())
}

/// Draws `series` as lines into the PNG file `path`.
pub fn line_chart(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<()> {
    font_registered()?;
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.log_y || y > 0.0);
    let clean: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.points.iter().copied().filter(keep).collect(),
            )
        })
        .collect();
    let all: Vec<(f64, f64)> = clean.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if all.is_empty() {
        bail!("{}: nothing to plot for '{}'", path.display(), chart.title);
    }
    let (x0, x1) = span(all.iter().map(|p| p.0));
    let (y0, y1) = span(all.iter().map(|p| p.1));
    // A log axis over less than a decade shows no labels worth reading.
    let log = chart.log_y && y0 > 0.0 && y1 / y0 > 10.0;
    let chart = &Chart {
        log_y: log,
        ..*chart
    };
    // The encoder picks the format by extension, so the temporary name
    // ends in `.png` too.
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.partial.png", file.unwrap_or_default()));
    let drawn = draw(&tmp, chart, &clean, (x0, x1), (y0, y1));
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("drawing {}", path.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The range of `v`, widened when it is a single value.
fn span(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if hi > lo {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

fn draw(
    path: &Path,
    chart: &Chart<'_>,
    series: &[(String, Vec<(f64, f64)>)],
    xs: (f64, f64),
    ys: (f64, f64),
) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut b = ChartBuilder::on(&root);
    b.caption(chart.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(95);
    let legend = series.len() > 1 || !series.first().is_some_and(|s| s.0.is_empty());
    macro_rules! body {
        ($c:expr) => {{
            let mut c = $c;
            c.configure_mesh()
                .x_desc(chart.x)
                .y_desc(chart.y)
                .label_style(("sans-serif", 13))
                .y_label_formatter(&|v: &f64| label(*v, ys))
                .draw()?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let s =
                    c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
                s.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
            if legend {
                c.configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .label_font(("sans-serif", 14))
                    .background_style(WHITE.mix(0.9))
                    .border_style(BLACK)
                    .draw()?;
            }
        }};
    }
    if chart.log_y {
        body!(b.build_cartesian_2d(xs.0..xs.1, (ys.0..ys.1).log_scale())?);
    } else {
        let pad = (ys.1 - ys.0) * 0.05;
        body!(b.build_cartesian_2d(xs.0..xs.1, (ys.0 - pad)..(ys.1 + pad))?);
    }
    root.present()?;
    Ok(())
}

/// A y label with enough digits to tell ticks over `ys` apart.
fn label(v: f64, ys: (f64, f64)) -> String {
    let span = (ys.1 - ys.0).abs();
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        return format!("{v:.1e}");
    }
    let digits = if span > 0.0 {
        (2.0 - span.log10().floor()).clamp(0.0, 8.0) as usize
    } else {
        2
    };
    format!("{v:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_png_files_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = d.join("loss.png");
        let s = |name: &str, k: f64| Series {
            name: name.into(),
            points: (0..50)
                .map(|i| (i as f64, 5.0 * (-(i as f64) / k).exp()))
                .collect(),
        };
        let chart = Chart {
            title: "loss",
            x: "step",
            y: "nats",
            log_y: false,
        };
        line_chart(&p, &chart, &[s("mhc", 20.0), s("hc", 30.0)]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let log = Chart {
            log_y: true,
            ..chart
        };
        line_chart(&d.join("gain.png"), &log, &[s("gain", 10.0)]).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["gain.png", "loss.png"]);
    }

    #[test]
    fn labels_show_the_digits_that_differ() {
        assert_eq!(label(1.0005, (1.0, 1.0006)), "1.000500");
        assert_eq!(label(4.5, (4.0, 5.5)), "4.50");
        assert_eq!(label(250.0, (0.0, 3000.0)), "250");
        assert_eq!(label(2.0e6, (0.0, 3.0e6)), "2.0e6");
    }

    #[test]
    fn nothing_to_plot_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        let chart = Chart {
            title: "gain",
            x: "step",
            y: "gain",
            log_y: true,
        };
        let bad = Series {
            name: "s".into(),
            points: vec![(0.0, -1.0), (1.0, f64::NAN)],
        };
        let e = line_chart(&p, &chart, &[bad]).unwrap_err();
        assert!(e.to_string().contains("nothing to plot"), "{e}");
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
