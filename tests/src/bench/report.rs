//! Medians over rounds (robust to one disturbed round), ratios of medians against
//! host-gw (the no-encapsulation ceiling) and Flannel (what weft replaces), and the
//! outputs: a text table per wire, `results.csv` (every value), `summary.csv` and a
//! hand-written SVG chart (no plotting dependency). The weft programs' BPF costs have
//! rows in the table and the CSVs, without ratios, and no bars: they have no reference.

use std::{collections::BTreeSet, fmt::Write as _};

use super::{Metric, Mode, Sample, Wire};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// Median of `values` (mean of the middle two for an even count); None if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

pub fn stats(values: &[f64]) -> Option<Stats> {
    let median = median(values)?;
    let finite = values.iter().copied().filter(|x| x.is_finite());
    Some(Stats {
        median,
        min: finite.clone().fold(f64::INFINITY, f64::min),
        max: finite.clone().fold(f64::NEG_INFINITY, f64::max),
        n: finite.count(),
    })
}

/// `a / b`, None unless both are finite and `b` is non-zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b != 0.0).then(|| a / b)
}

/// One (wire, metric, mode): its stats and its median over host-gw's and Flannel's
/// (only for the flannel and weft rows; a mode is not compared with itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub wire: Wire,
    pub metric: Metric,
    pub mode: Mode,
    pub stats: Stats,
    pub vs_host_gw: Option<f64>,
    pub vs_flannel: Option<f64>,
}

/// [`Metric::ALL`], then the BPF costs `samples` hold, by program name.
fn metrics_in(samples: &[Sample]) -> Vec<Metric> {
    let programs: BTreeSet<&'static str> = samples
        .iter()
        .filter_map(|s| match s.metric {
            Metric::BpfNs(program) => Some(program),
            _ => None,
        })
        .collect();
    Metric::ALL.into_iter().chain(programs.into_iter().map(Metric::BpfNs)).collect()
}

pub fn summarise(samples: &[Sample], wires: &[Wire], modes: &[Mode]) -> Vec<Row> {
    let values = |w: Wire, m: Metric, mode: Mode| -> Vec<f64> {
        samples.iter().filter(|s| s.wire == w && s.metric == m && s.mode == mode).map(|s| s.value).collect()
    };
    let mut rows = Vec::new();
    for &wire in wires {
        for metric in metrics_in(samples) {
            let med = |mode: Mode| median(&values(wire, metric, mode));
            for &mode in modes {
                let Some(st) = stats(&values(wire, metric, mode)) else {
                    continue;
                };
                let against = |reference: Mode| {
                    if mode == reference || mode == Mode::HostGw || !metric.compared() {
                        return None;
                    }
                    ratio(st.median, med(reference)?)
                };
                rows.push(Row {
                    wire,
                    metric,
                    mode,
                    stats: st,
                    vs_host_gw: against(Mode::HostGw),
                    vs_flannel: against(Mode::Flannel),
                });
            }
        }
    }
    rows
}

/// A number with about four significant digits, no exponent.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "nan".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

/// The table of one wire: metric, mode, median, min–max, ratios.
pub fn table(rows: &[Row], wire: Wire, rounds: u32) -> String {
    let mut metrics: Vec<Metric> = Vec::new();
    for r in rows.iter().filter(|r| r.wire == wire) {
        if !metrics.contains(&r.metric) {
            metrics.push(r.metric);
        }
    }
    let names: Vec<String> = metrics
        .iter()
        .map(|m| format!("{} [{}] {}", m.label(), m.unit(), if m.higher_is_better() { "↑" } else { "↓" }))
        .collect();
    // The BPF costs' labels are longer than the rest: the column widens to the longest.
    let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max(38);
    let mut out = format!("== wire {}: {} ==\n", wire.name(), wire.describe());
    let _ = writeln!(out, "   (median and min–max over {rounds} round(s); ratios are of medians; ↑/↓: higher/lower is better)");
    let _ = writeln!(
        out,
        "{:<w$} {:<8} {:>10} {:>21} {:>11} {:>11}",
        "metric", "mode", "median", "min–max", "vs host-gw", "vs flannel"
    );
    for (metric, name) in metrics.into_iter().zip(names) {
        let mut first = true;
        for r in rows.iter().filter(|r| r.wire == wire && r.metric == metric) {
            let range = format!("{} – {}", fmt_value(r.stats.min), fmt_value(r.stats.max));
            let _ = writeln!(
                out,
                "{:<w$} {:<8} {:>10} {:>21} {:>11} {:>11}",
                if first { name.as_str() } else { "" },
                r.mode.name(),
                fmt_value(r.stats.median),
                range,
                fmt_ratio(r.vs_host_gw),
                fmt_ratio(r.vs_flannel)
            );
            first = false;
        }
    }
    out
}

pub fn results_csv(samples: &[Sample]) -> String {
    let mut out = String::from("wire,mode,metric,round,value,unit\n");
    for s in samples {
        let _ =
            writeln!(out, "{},{},{},{},{},{}", s.wire.name(), s.mode.name(), s.metric.key(), s.round, s.value, s.metric.unit());
    }
    out
}

pub fn summary_csv(rows: &[Row]) -> String {
    let mut out = String::from("wire,metric,unit,better,mode,rounds,median,min,max,vs_host_gw,vs_flannel\n");
    let opt = |r: Option<f64>| r.map(|r| format!("{r:.4}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.wire.name(),
            r.metric.key(),
            r.metric.unit(),
            if r.metric.higher_is_better() { "higher" } else { "lower" },
            r.mode.name(),
            r.stats.n,
            r.stats.median,
            r.stats.min,
            r.stats.max,
            opt(r.vs_host_gw),
            opt(r.vs_flannel)
        );
    }
    out
}

fn colour(mode: Mode) -> &'static str {
    match mode {
        Mode::HostGw => "#9a9a9a",
        Mode::Flannel => "#4e79a7",
        Mode::Weft => "#f28e2b",
        Mode::WeftXdp => "#f7c99a",
        Mode::WeftFast => "#2ca02c",
        Mode::WeftFastXdp => "#98df8a",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Per wire, grouped bars per metric: each mode's median over the reference's (host-gw,
/// or the first mode when host-gw was not run), so 1.0 is the reference everywhere.
pub fn chart_svg(rows: &[Row], wires: &[Wire], modes: &[Mode], rounds: u32, seconds: u32) -> String {
    const LEFT: f64 = 70.0;
    const GROUP: f64 = 135.0;
    const BAR: f64 = 30.0;
    const PANEL_H: f64 = 250.0;
    const PANEL_GAP: f64 = 95.0;
    const TOP: f64 = 95.0;
    let reference = if modes.contains(&Mode::HostGw) { Mode::HostGw } else { modes[0] };
    let width = LEFT + GROUP * Metric::ALL.len() as f64 + 20.0;
    let height = TOP + wires.len() as f64 * (PANEL_H + PANEL_GAP) - 20.0;
    let median_of = |w: Wire, m: Metric, mode: Mode| {
        rows.iter().find(|r| r.wire == w && r.metric == m && r.mode == mode).map(|r| r.stats.median)
    };
    let norm = |w: Wire, m: Metric, mode: Mode| ratio(median_of(w, m, mode)?, median_of(w, m, reference)?);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{width}" height="{height}" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="24" font-size="17" font-weight="bold">{}</text>"##,
        esc(&format!("weft bench: median of each mode / median of {} (= 1.0)", reference.name()))
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="44" fill="#444">{}</text>"##,
        esc(&format!(
            "pod a → pod b across two nodes, {rounds} round(s) × {seconds} s per metric, mode order rotated each round. ↑ higher is better, ↓ lower is better."
        ))
    );
    // Legend.
    for (i, &mode) in modes.iter().enumerate() {
        let x = LEFT + i as f64 * 120.0;
        let _ = writeln!(s, r##"<rect x="{x}" y="56" width="14" height="14" fill="{}"/>"##, colour(mode));
        let _ = writeln!(s, r##"<text x="{}" y="68">{}</text>"##, x + 20.0, esc(mode.name()));
    }

    for (p, &wire) in wires.iter().enumerate() {
        let top = TOP + p as f64 * (PANEL_H + PANEL_GAP) + 30.0;
        let base = top + PANEL_H;
        let peak =
            Metric::ALL.iter().flat_map(|&m| modes.iter().filter_map(move |&mode| norm(wire, m, mode))).fold(1.0f64, f64::max);
        // Axis to the next 0.25 above the tallest bar, at most 3 (taller bars are clipped and say so).
        let ymax = ((peak * 1.1 / 0.25).ceil() * 0.25).clamp(1.25, 3.0);
        let y = |v: f64| base - v.min(ymax) / ymax * PANEL_H;
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"##,
            top - 16.0,
            esc(&format!("wire {}: {}", wire.name(), wire.describe()))
        );
        let mut tick = 0.0;
        while tick <= ymax + 1e-9 {
            let ty = y(tick);
            let (stroke, dash) = if (tick - 1.0).abs() < 1e-9 { ("#333", r##" stroke-dasharray="5,3""##) } else { ("#ddd", "") };
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="{stroke}"{dash}/>"##,
                width - 20.0
            );
            let _ =
                writeln!(s, r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#555">{tick:.2}</text>"##, LEFT - 6.0, ty + 4.0);
            tick += 0.25;
        }
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{base}" stroke="#333"/>"##);
        for (g, &metric) in Metric::ALL.iter().enumerate() {
            let gx = LEFT + g as f64 * GROUP;
            let bars_w = BAR * modes.len() as f64;
            let x0 = gx + (GROUP - bars_w) / 2.0;
            for (b, &mode) in modes.iter().enumerate() {
                let x = x0 + b as f64 * BAR;
                let Some(v) = norm(wire, metric, mode) else {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#a00">n/a</text>"##,
                        x + BAR / 2.0,
                        base - 4.0
                    );
                    continue;
                };
                let by = y(v);
                let _ = writeln!(
                    s,
                    r##"<rect x="{:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"##,
                    x + 2.0,
                    BAR - 4.0,
                    base - by,
                    colour(mode),
                    esc(&format!(
                        "{} {} {}: median {} {} ({v:.2} of {})",
                        wire.name(),
                        metric.label(),
                        mode.name(),
                        fmt_value(median_of(wire, metric, mode).unwrap_or(f64::NAN)),
                        metric.unit(),
                        reference.name()
                    ))
                );
                // A bar clipped at the axis top carries its value inside, in white.
                let (label, ly, fill) =
                    if v > ymax { (format!("▲{v:.1}"), by + 12.0, "white") } else { (format!("{v:.2}"), by - 3.0, "black") };
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{ly:.1}" text-anchor="middle" font-size="10" fill="{fill}">{}</text>"##,
                    x + BAR / 2.0,
                    esc(&label)
                );
            }
            let cx = gx + GROUP / 2.0;
            let arrow = if metric.higher_is_better() { "↑" } else { "↓" };
            let _ = writeln!(
                s,
                r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                base + 16.0,
                esc(&format!("{} {arrow}", metric.short()))
            );
            let reference_value =
                median_of(wire, metric, reference).map(|v| format!("{} = {} {}", reference.name(), fmt_value(v), metric.unit()));
            let _ = writeln!(
                s,
                r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#555">{}</text>"##,
                base + 30.0,
                esc(&reference_value.unwrap_or_else(|| format!("no {}", reference.name())))
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(wire: Wire, mode: Mode, metric: Metric, round: u32, value: f64) -> Sample {
        Sample { wire, mode, metric, round, value }
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(stats(&[5.0, 1.0, 3.0]).unwrap(), Stats { median: 3.0, min: 1.0, max: 5.0, n: 3 });
        assert_eq!(ratio(1.0, 0.0), None);

        let mut samples = Vec::new();
        for (round, (h, f, w)) in [(10.0, 5.0, 8.0), (12.0, 6.0, 9.0), (11.0, 4.0, 7.0)].into_iter().enumerate() {
            let r = round as u32 + 1;
            samples.push(sample(Wire::Nic, Mode::HostGw, Metric::Tcp1, r, h));
            samples.push(sample(Wire::Nic, Mode::Flannel, Metric::Tcp1, r, f));
            samples.push(sample(Wire::Nic, Mode::Weft, Metric::Tcp1, r, w));
        }
        let rows = summarise(&samples, &[Wire::Nic], &Mode::ALL);
        assert_eq!(rows.len(), 3);
        let row = |m: Mode| rows.iter().find(|r| r.mode == m).unwrap();
        assert_eq!((row(Mode::HostGw).vs_host_gw, row(Mode::HostGw).vs_flannel), (None, None));
        assert_eq!((row(Mode::Flannel).vs_host_gw, row(Mode::Flannel).vs_flannel), (Some(5.0 / 11.0), None));
        assert_eq!(row(Mode::Weft).vs_host_gw, Some(8.0 / 11.0));
        assert_eq!(row(Mode::Weft).vs_flannel, Some(8.0 / 5.0));
        assert_eq!(row(Mode::Weft).stats, Stats { median: 8.0, min: 7.0, max: 9.0, n: 3 });

        let table = table(&rows, Wire::Nic, 3);
        assert!(table.contains("1.60x") && table.contains("0.45x") && table.contains("7.000 – 9.000"), "{table}");
        assert_eq!(results_csv(&samples).lines().count(), 10);
        assert_eq!(summary_csv(&rows).lines().nth(3).unwrap(), "nic,tcp_1_stream,Gbit/s,higher,weft,3,8,7,9,0.7273,1.6000");
    }

    #[test]
    fn bpf_costs_have_rows_without_ratios() {
        let mut samples = Vec::new();
        for (mode, v) in [(Mode::HostGw, 10.0), (Mode::Flannel, 5.0), (Mode::Weft, 8.0)] {
            samples.push(sample(Wire::Nic, mode, Metric::Tcp1, 1, v));
        }
        for (program, v) in [("weft_weft0_ingress", 60.0), ("weft_decap", 150.0)] {
            samples.push(sample(Wire::Nic, Mode::Weft, Metric::bpf_ns(program), 1, v));
            samples.push(sample(Wire::Nic, Mode::WeftFast, Metric::bpf_ns(program), 1, v / 2.0));
        }
        let rows = summarise(&samples, &[Wire::Nic], &Mode::ALL);
        let metrics: Vec<Metric> = rows.iter().map(|r| r.metric).collect();
        let (decap, ingress) = (Metric::bpf_ns("weft_decap"), Metric::bpf_ns("weft_weft0_ingress"));
        assert_eq!(metrics[3..], [decap, decap, ingress, ingress], "after the fixed metrics, by program name");
        assert!(rows.iter().filter(|r| !r.metric.compared()).all(|r| r.vs_host_gw.is_none() && r.vs_flannel.is_none()));

        let table = table(&rows, Wire::Nic, 1);
        let line = table.lines().find(|l| l.starts_with("BPF weft_decap per packet (TCP 1 stream) [ns] ↓")).expect(&table);
        assert!(line.contains("weft ") && line.ends_with("  -           -"), "{table}");
        // The metric column widens to the longest label: the columns stay aligned (rows of
        // modes named in 8 characters or fewer).
        let widths: BTreeSet<usize> =
            table.lines().skip(2).filter(|l| !l.contains("weft-fast")).map(|l| l.chars().count()).collect();
        assert_eq!(widths.len(), 1, "{table}");
        assert!(summary_csv(&rows).contains("nic,bpf_ns_weft_decap,ns,lower,weft,1,150,150,150,,\n"));
        assert!(results_csv(&samples).contains("nic,weft-fast,bpf_ns_weft_weft0_ingress,1,30,ns\n"));
    }

    /// Every tag closed in order, one root, entities escaped.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            assert!(!text.contains('>'), "stray > in {text:?}");
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..text[i..].find(';').map(|e| i + e + 1).unwrap_or(text.len())];
                assert!(["&amp;", "&lt;", "&gt;", "&quot;"].contains(&entity), "bad entity {entity:?}");
            }
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
            } else {
                assert!(!tag.contains('<'), "< inside tag {tag:?}");
                assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in {tag:?}");
                let name = tag.split_whitespace().next().unwrap_or_default().trim_end_matches('/');
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1);
        assert!(rest.trim().is_empty());
    }

    #[test]
    fn chart_is_well_formed_svg() {
        let mut samples = Vec::new();
        for wire in [Wire::Veth, Wire::Nic] {
            for (k, metric) in Metric::ALL.into_iter().enumerate() {
                for (j, mode) in Mode::ALL.into_iter().enumerate() {
                    // One mode missing one metric, one bar far above the axis.
                    if mode == Mode::Weft && metric == Metric::Crr {
                        continue;
                    }
                    let v = if metric == Metric::RrP99 && mode == Mode::Flannel { 50.0 } else { 1.0 + (k + j) as f64 / 10.0 };
                    samples.push(sample(wire, mode, metric, 1, v));
                }
            }
        }
        let rows = summarise(&samples, &[Wire::Veth, Wire::Nic], &Mode::ALL);
        let svg = chart_svg(&rows, &[Wire::Veth, Wire::Nic], &Mode::ALL, 1, 2);
        assert!(svg.starts_with("<svg ") && svg.contains("n/a") && svg.contains("▲"));
        assert_well_formed(&svg);
        // Without host-gw, the first mode is the reference.
        let rows = summarise(&samples, &[Wire::Nic], &[Mode::Flannel, Mode::Weft]);
        let svg = chart_svg(&rows, &[Wire::Nic], &[Mode::Flannel, Mode::Weft], 1, 2);
        assert!(svg.contains("median of flannel"));
        assert_well_formed(&svg);
    }
}
