//! PNG plots of a run (training loss, validation PSNR), redrawn as training goes.
//!
//! Text is drawn with the bundled DejaVu Sans (`assets/fonts`), so plotting needs no system
//! fonts or font libraries.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use pyra_tasks::image::{write_png, Depth, Image};

static FONT: Once = Once::new();

fn register() {
    FONT.call_once(|| {
        // The bytes are a valid TrueType font compiled into the binary.
        let _ = register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../../../assets/fonts/DejaVuSans.ttf"),
        );
    });
}

const WIDTH: u32 = 800;
const HEIGHT: u32 = 480;

/// One line of a [`chart`]: its legend label (none: no legend) and its points.
pub struct Series {
    pub label: Option<String>,
    pub points: Vec<(f64, f64)>,
}

/// Draw `points` (x = step) as a line chart into `path` (PNG, written atomically).
pub fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    points: &[(f64, f64)],
    log_y: bool,
) -> Result<(), String> {
    let series = Series {
        label: None,
        points: points.to_vec(),
    };
    chart(path, title, "step", y_label, &[series], log_y)
}

const COLOURS: [RGBColor; 5] = [
    BLUE,
    RGBColor(220, 50, 32),
    RGBColor(0, 150, 60),
    RGBColor(140, 80, 200),
    BLACK,
];

/// Draw several series as lines (with markers) into `path` (PNG, written atomically); a
/// legend names those with a label.
pub fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<(), String> {
    register();
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                .collect(),
        })
        .collect();
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    if all().next().is_none() {
        return Ok(());
    }
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for (x, y) in all() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if log_y {
        y0 /= 1.1;
        y1 *= 1.1;
    } else {
        let pad = ((y1 - y0) * 0.05).max(0.05);
        y0 -= pad;
        y1 += pad;
    }
    let markers = series.len() > 1;
    let mut buffer = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        // The same drawing for a linear and a logarithmic y axis (different coordinate types).
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart.map_err(|e| fail(&e))?;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .draw()
                    .map_err(|e| fail(&e))?;
                for (i, Series { label, points }) in series.iter().enumerate() {
                    let colour = COLOURS[i % COLOURS.len()];
                    let line = chart
                        .draw_series(LineSeries::new(
                            points.iter().copied(),
                            colour.stroke_width(2),
                        ))
                        .map_err(|e| fail(&e))?;
                    if let Some(label) = label {
                        line.label(label.as_str()).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                        });
                    }
                    if markers {
                        chart
                            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                            .map_err(|e| fail(&e))?;
                    }
                }
                if series.iter().any(|s| s.label.is_some()) {
                    chart
                        .configure_series_labels()
                        .position(SeriesLabelPosition::LowerRight)
                        .background_style(WHITE.mix(0.9))
                        .border_style(BLACK)
                        .label_font(("sans-serif", 15))
                        .draw()
                        .map_err(|e| fail(&e))?;
                }
            }};
        }
        if log_y {
            draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()));
        } else {
            draw!(builder.build_cartesian_2d(x0..x1, y0..y1));
        }
        root.present().map_err(|e| fail(&e))?;
    }
    let values: Vec<f32> = buffer.iter().map(|&v| v as f32).collect();
    let image = Image::from_interleaved(WIDTH as usize, HEIGHT as usize, 3, &values);
    write_png(&image, path, Depth::Eight).map_err(|e| e.to_string())
}
