//! `cargo xtask bench`: the same two-node topology (node a, node b, a pod on each, pod
//! a → pod b) built three ways, measured round by round with the mode order rotated
//! each round, so slow drift of the machine spreads over every mode instead of
//! favouring one:
//!
//! - `host-gw`: no encapsulation (Flannel's host-gw backend), the ceiling;
//! - `flannel`: kernel vxlan `flannel.1` as Flannel's vxlan backend configures it;
//! - `weft`: the weft agents.
//!
//! Two wires: `veth` (the underlay as created, offloads on: GSO super-packets cross
//! the switch, which no real wire carries) and `nic` (segmentation off towards the
//! wire, GRO on the receiving uplink only: what a NIC does; the figures that count).
//! All three clusters are built once; the veth rounds run first, then every cluster's
//! wire is switched to `nic` and the nic rounds run (one switch per phase, not per
//! round: toggling offloads mid-run would leave a round measuring a half-applied state).
//!
//! `--masquerade` measures the masquerade instead: pod a → a host on the "internet"
//! behind a router on the underlay, every mode masquerading — host-gw and Flannel
//! with flanneld `--ip-masq`'s iptables rules, weft with its own `--ip-masq`.
//!
//! - [`metrics`]: iperf3, sockperf and /proc/stat, with their parsers;
//! - [`bpf`]: what each weft BPF program costs per packet, from the kernel's run-time
//!   statistics, during the weft modes' 1-stream TCP run;
//! - [`crr`]: the in-process TCP connect/request/response/close tool;
//! - [`report`]: medians, ratios, the table, the CSVs and the SVG chart.

pub mod bpf;
pub mod crr;
pub mod metrics;
pub mod report;

use std::{
    borrow::Cow,
    collections::BTreeSet,
    path::PathBuf,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{
    cluster::{Cluster, Kind},
    netns::Netns,
    traffic,
};

/// Set by the binary's SIGINT/SIGTERM handler: stop between measurements and tear down.
pub static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    HostGw,
    Flannel,
    /// weft as deployed by default (`--decap auto`; on these veth uplinks that is TC
    /// decap, as on a kind-style node).
    Weft,
    /// weft with the opt-in `--fast-path` (and the default decap): pod-to-pod traffic
    /// skips the host stack on both nodes.
    WeftFast,
    /// weft with `--decap xdp`: what `auto` picks on a NIC with native XDP (on a veth,
    /// plus the veth's copy of every frame).
    WeftXdp,
    /// `--fast-path` with `--decap xdp`.
    WeftFastXdp,
}

impl Mode {
    pub const ALL: [Mode; 6] = [Mode::HostGw, Mode::Flannel, Mode::Weft, Mode::WeftFast, Mode::WeftXdp, Mode::WeftFastXdp];

    pub fn kind(self) -> Kind {
        match self {
            Mode::HostGw => Kind::HostGw,
            Mode::Flannel => Kind::Flannel,
            Mode::Weft | Mode::WeftFast | Mode::WeftXdp | Mode::WeftFastXdp => Kind::Weft,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::WeftFast => "weft-fast",
            Mode::WeftXdp => "weft-xdp",
            Mode::WeftFastXdp => "weft-fast-xdp",
            m => m.kind().name(),
        }
    }

    /// Agent arguments the mode implies (before the bench's `--weft-args`).
    fn agent_args(self) -> &'static [&'static str] {
        match self {
            Mode::WeftFast => &["--fast-path"],
            Mode::WeftXdp => &["--decap", "xdp"],
            Mode::WeftFastXdp => &["--fast-path", "--decap", "xdp"],
            _ => &[],
        }
    }

    pub fn parse(s: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s.trim() || (s.trim() == "hostgw" && *m == Mode::HostGw))
            .ok_or_else(|| anyhow!("unknown mode {s:?} (host-gw, flannel, weft, weft-fast, weft-xdp, weft-fast-xdp)"))
    }

    /// `a,b,c` → modes in the canonical order (host-gw, flannel, weft), no duplicates.
    pub fn parse_list(s: &str) -> Result<Vec<Mode>> {
        let asked: Vec<Mode> = s.split(',').filter(|p| !p.trim().is_empty()).map(Mode::parse).collect::<Result<_>>()?;
        let modes: Vec<Mode> = Mode::ALL.into_iter().filter(|m| asked.contains(m)).collect();
        if modes.is_empty() {
            bail!("no modes in {s:?}");
        }
        Ok(modes)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    Veth,
    Nic,
}

impl Wire {
    pub fn name(self) -> &'static str {
        match self {
            Wire::Veth => "veth",
            Wire::Nic => "nic",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Wire::Veth => "veth underlay as created, offloads on (GSO super-packets cross the switch)",
            Wire::Nic => "simulated NIC: no TSO/GSO towards the wire, switch forwards MTU frames, GRO on the receiving uplink",
        }
    }
}

/// What one round measures per mode. Values are stored in the unit given here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Tcp1,
    Tcp4,
    CpuPerGb,
    RrRate,
    RrP50,
    RrP99,
    UdpPps,
    Crr,
    /// Nanoseconds per run of the weft BPF program so named, both nodes' instances
    /// together, during the 1-stream TCP run (weft modes only). A run is a packet as the
    /// hook sees it: an XDP frame, or an skb (a GSO or GRO aggregate counts once).
    BpfNs(&'static str),
}

impl Metric {
    /// Every metric but the BPF costs, whose programs are known only once measured.
    pub const ALL: [Metric; 8] =
        [Metric::Tcp1, Metric::Tcp4, Metric::CpuPerGb, Metric::RrRate, Metric::RrP50, Metric::RrP99, Metric::UdpPps, Metric::Crr];

    /// The BPF cost metric of `program`. Its name is interned (leaked once per program
    /// name) so that metrics stay `Copy`; a run sees a handful of names.
    pub fn bpf_ns(program: &str) -> Metric {
        static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
        let name = match names.get(program) {
            Some(&name) => name,
            None => {
                let name: &'static str = Box::leak(program.into());
                names.insert(name);
                name
            }
        };
        Metric::BpfNs(name)
    }

    /// Column value in the CSVs.
    pub fn key(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Metric::BpfNs(program) => return format!("bpf_ns_{program}").into(),
            Metric::Tcp1 => "tcp_1_stream",
            Metric::Tcp4 => "tcp_4_streams",
            Metric::CpuPerGb => "cpu_per_gb",
            Metric::RrRate => "tcp_rr_rate",
            Metric::RrP50 => "tcp_rr_p50_half_rtt",
            Metric::RrP99 => "tcp_rr_p99_half_rtt",
            Metric::UdpPps => "udp_64b_rx_rate",
            Metric::Crr => "tcp_crr_rate",
        })
    }

    pub fn label(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Metric::BpfNs(program) => return format!("BPF {program} per packet (TCP 1 stream)").into(),
            Metric::Tcp1 => "TCP 1 stream",
            Metric::Tcp4 => "TCP 4 streams",
            Metric::CpuPerGb => "CPU per GB (TCP 1 stream)",
            Metric::RrRate => "TCP RR 64 B rate",
            Metric::RrP50 => "TCP RR p50 (half RTT)",
            Metric::RrP99 => "TCP RR p99 (half RTT)",
            Metric::UdpPps => "UDP 64 B received",
            Metric::Crr => "TCP CRR rate",
        })
    }

    /// A short label for the chart.
    pub fn short(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Metric::BpfNs(program) => return format!("BPF {program}").into(),
            Metric::Tcp1 => "TCP 1 stream",
            Metric::Tcp4 => "TCP 4 streams",
            Metric::CpuPerGb => "CPU-s per GB",
            Metric::RrRate => "TCP RR rate",
            Metric::RrP50 => "RR p50 ½RTT",
            Metric::RrP99 => "RR p99 ½RTT",
            Metric::UdpPps => "UDP 64 B pps",
            Metric::Crr => "TCP CRR rate",
        })
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::Tcp1 | Metric::Tcp4 => "Gbit/s",
            Metric::CpuPerGb => "CPU-s/GB",
            Metric::RrRate => "trans/s",
            Metric::RrP50 | Metric::RrP99 => "usec",
            Metric::UdpPps => "kpps",
            Metric::Crr => "conn/s",
            Metric::BpfNs(_) => "ns",
        }
    }

    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::CpuPerGb | Metric::RrP50 | Metric::RrP99 | Metric::BpfNs(_))
    }

    /// Whether a ratio against host-gw's or Flannel's median means anything: they run no
    /// BPF program.
    pub fn compared(self) -> bool {
        !matches!(self, Metric::BpfNs(_))
    }
}

/// One measured value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub wire: Wire,
    pub mode: Mode,
    pub metric: Metric,
    /// 1-based.
    pub round: u32,
    pub value: f64,
}

pub struct Config {
    pub rounds: u32,
    pub seconds: u32,
    pub wires: Vec<Wire>,
    pub modes: Vec<Mode>,
    pub out: PathBuf,
    pub weft_args: Vec<String>,
    /// Measure the weft programs' cost per packet (BPF run-time statistics, on during
    /// the weft modes' 1-stream TCP runs only).
    pub bpf_stats: bool,
    /// Pod a → an internet host, masqueraded, instead of pod a → pod b.
    pub masquerade: bool,
}

/// What a run produced; `failures` says which measurements are missing and why.
pub struct Outcome {
    pub samples: Vec<Sample>,
    pub failures: Vec<String>,
}

/// One mode's cluster: nodes a and b, a pod on each (and, masquerading, the internet).
pub struct Topology {
    pub mode: Mode,
    pub cluster: Cluster,
    /// Pod a's traffic goes to the internet host, masqueraded.
    pub masquerade: bool,
}

impl Topology {
    pub fn build(mode: Mode, weft_args: &[&str]) -> Result<Topology> {
        Topology::build_for(mode, weft_args, false)
    }

    /// With `masquerade`, every node masquerades as its mode does it (weft:
    /// `--ip-masq`; host-gw and Flannel: flanneld `--ip-masq`'s iptables rules) and
    /// the server is a host behind a router on the underlay.
    pub fn build_for(mode: Mode, weft_args: &[&str], masquerade: bool) -> Result<Topology> {
        let kind = mode.kind();
        let conf = crate::cluster::static_net_conf()?.display().to_string();
        let mut args: Vec<&str> = mode.agent_args().iter().chain(weft_args).copied().collect();
        if masquerade {
            args.extend(["--ip-masq", "--net-config-path", &conf]);
        }
        let mut cluster = Cluster::new_with_agent_args(&[("a", kind), ("b", kind)], &args)
            .with_context(|| format!("building the {} cluster", mode.name()))?;
        cluster.add_pod("a")?;
        cluster.add_pod("b")?;
        if masquerade {
            cluster.add_internet(crate::cluster::UPLINK_MTU)?;
            if kind != Kind::Weft {
                for n in &cluster.nodes {
                    crate::flannel::masquerade(&n.ns, crate::kube::NETWORK.parse()?, n.pod_cidr)?;
                }
            }
        }
        let t = Topology { mode, cluster, masquerade };
        // Reachability (and ARP/FDB warm) before anything is timed.
        traffic::ping_ok(t.client(), t.server_ip(), 3)
            .with_context(|| format!("{}: pod a cannot reach its server\n{}", mode.name(), t.cluster.logs()))?;
        Ok(t)
    }

    /// What the weft agents chose for the datapath (where decapsulation runs, GRO), from
    /// their logs: the figures depend on it.
    fn datapath_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for n in self.cluster.nodes.iter().filter(|n| n.agent.is_some()) {
            for line in self.cluster.agent_log(&n.name).lines() {
                if ["XDP", "decap", "GRO", "fast path"].iter().any(|k| line.contains(k)) {
                    // Drop the timestamp and level the log format starts with.
                    let text = line.split_once(" weft").map(|(_, rest)| format!("weft{rest}")).unwrap_or_else(|| line.to_owned());
                    notes.push(format!("node {}: {}", n.name, text.trim()));
                }
            }
        }
        notes
    }

    fn client(&self) -> &Netns {
        &self.cluster.pod_on("a").ns
    }

    fn server(&self) -> &Netns {
        match (&self.cluster.internet, self.masquerade) {
            (Some(internet), true) => &internet.host.ns,
            _ => &self.cluster.pod_on("b").ns,
        }
    }

    fn server_ip(&self) -> std::net::Ipv4Addr {
        if self.masquerade { crate::cluster::INTERNET_HOST } else { self.cluster.pod_on("b").ip }
    }
}

/// `ethtool -K` features and their wanted states.
type Features = Vec<(&'static str, &'static str)>;

/// `ethtool -K` settings of the nic wire: (namespace, device, features).
fn nic_settings(c: &Cluster) -> Vec<(&Netns, String, Features)> {
    let mut out = Vec::new();
    for n in &c.nodes {
        out.push((
            &n.ns,
            "ul0".to_owned(),
            vec![("tso", "off"), ("gso", "off"), ("tx-udp_tnl-segmentation", "off"), ("gro", "on")],
        ));
    }
    for n in &c.nodes {
        out.push((&c.underlay, format!("u-{}", n.name), vec![("tso", "off"), ("gso", "off"), ("gro", "off")]));
    }
    // The router is a machine with a NIC on the same wire.
    if let Some(internet) = &c.internet {
        out.push((&internet.router, "eth0".to_owned(), vec![("tso", "off"), ("gso", "off"), ("gro", "on")]));
        out.push((&c.underlay, "u-rt".to_owned(), vec![("tso", "off"), ("gso", "off"), ("gro", "off")]));
    }
    out
}

/// The name `ethtool -k` prints for a feature `ethtool -K` accepts.
fn long_feature_name(short: &str) -> &str {
    match short {
        "tso" => "tcp-segmentation-offload",
        "gso" => "generic-segmentation-offload",
        "gro" => "generic-receive-offload",
        other => other,
    }
}

/// Features of `dev` that are not in the wanted state, as `name: actual` lines.
fn feature_mismatches(ns: &Netns, dev: &str, want: &[(&str, &str)]) -> Result<Vec<String>> {
    let shown = ns.sh(&format!("ethtool -k {dev}"))?;
    let mut bad = Vec::new();
    for (short, state) in want {
        let long = long_feature_name(short);
        let line = shown.lines().map(str::trim).find(|l| l.split(':').next() == Some(long));
        match line {
            None => bad.push(format!("{dev}: feature {short} ({long}) is not listed by `ethtool -k {dev}`")),
            Some(l) if !l.split(':').nth(1).unwrap_or_default().trim().starts_with(state) => {
                bad.push(format!("{dev}: {short} wanted {state}, is `{l}`"))
            }
            Some(_) => {}
        }
    }
    Ok(bad)
}

/// Switches a cluster's underlay to the nic wire; fails naming any feature this
/// ethtool does not know or the device would not change.
pub fn apply_nic(c: &Cluster) -> Result<()> {
    for (ns, dev, features) in nic_settings(c) {
        let args: Vec<String> = features.iter().map(|(f, s)| format!("{f} {s}")).collect();
        let line = format!("ethtool -K {dev} {}", args.join(" "));
        if let Err(e) = ns.sh(&line) {
            let unknown: Vec<&str> = features
                .iter()
                .map(|(f, _)| *f)
                .filter(|f| {
                    ns.exec(&format!("ethtool -K {dev} {f} {}", if *f == "gro" { "on" } else { "off" }))
                        .output()
                        .map(|o| !o.status.success())
                        .unwrap_or(true)
                })
                .collect();
            bail!(
                "`{line}` in {} failed (features refused: {}): {e:#}",
                ns.name,
                if unknown.is_empty() { "?".into() } else { unknown.join(", ") }
            );
        }
        let bad = feature_mismatches(ns, &dev, &features)?;
        if !bad.is_empty() {
            bail!("nic wire not applied in {}: {}", ns.name, bad.join("; "));
        }
    }
    Ok(())
}

/// Checks the nic settings still hold (an agent could re-enable something).
fn check_nic(c: &Cluster) -> Vec<String> {
    let mut bad = Vec::new();
    for (ns, dev, features) in nic_settings(c) {
        match feature_mismatches(ns, &dev, &features) {
            Ok(b) => bad.extend(b.into_iter().map(|b| format!("{}: {b}", ns.name))),
            Err(e) => bad.push(format!("{dev}: {e:#}")),
        }
    }
    bad
}

/// The mode order of round `round` (0-based): the configured order rotated by `round`.
pub fn rotation<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    (0..items.len()).map(|i| items[(i + round) % items.len()]).collect()
}

fn stopped() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs every metric once on one topology; values and failures are appended.
fn measure(
    t: &Topology,
    wire: Wire,
    round: u32,
    cfg: &Config,
    samples: &mut Vec<Sample>,
    failures: &mut Vec<String>,
) -> Result<()> {
    let (client, server, ip, seconds) = (t.client(), t.server(), t.server_ip(), cfg.seconds);
    let mut line = format!("  [{} round {round}] {:<8}", wire.name(), t.mode.name());
    let mut record = |metric: Metric, value: f64, line: &mut String| {
        samples.push(Sample { wire, mode: t.mode, metric, round, value });
        *line += &format!(" {}={}", metric.key(), report::fmt_value(value));
    };
    let mut fail = |what: &str, e: anyhow::Error, line: &mut String| {
        failures.push(format!("{} round {round} {} {what}: {e:#}", wire.name(), t.mode.name()));
        *line += &format!(" {what}=FAILED");
    };

    stopped()?;
    // The BPF statistics are on for this run only (and its figures carry their cost).
    let probe = (cfg.bpf_stats && t.mode.kind() == Kind::Weft).then(|| bpf::Probe::start(&t.cluster));
    let tcp = metrics::tcp_with_cpu(client, server, ip, seconds);
    let costs = probe.map(|p| p.and_then(bpf::Probe::finish));
    match tcp {
        Ok(r) => {
            record(Metric::Tcp1, r.gbit_s, &mut line);
            record(Metric::CpuPerGb, r.cpu_s_per_gb, &mut line);
            match costs {
                Some(Ok(costs)) => costs.iter().for_each(|(program, ns)| record(Metric::bpf_ns(program), *ns, &mut line)),
                Some(Err(e)) => fail("bpf_ns", e, &mut line),
                None => {}
            }
        }
        Err(e) => fail("tcp_1_stream", e, &mut line),
    }
    stopped()?;
    match metrics::tcp_throughput(client, server, ip, seconds, 4) {
        Ok(r) => record(Metric::Tcp4, r.gbit_s, &mut line),
        Err(e) => fail("tcp_4_streams", e, &mut line),
    }
    stopped()?;
    match metrics::sockperf_rr(client, server, ip, seconds) {
        Ok(r) => {
            record(Metric::RrRate, r.rate, &mut line);
            record(Metric::RrP50, r.p50_us, &mut line);
            record(Metric::RrP99, r.p99_us, &mut line);
        }
        Err(e) => fail("tcp_rr", e, &mut line),
    }
    stopped()?;
    match metrics::udp_pps(client, server, ip, seconds) {
        Ok(pps) => record(Metric::UdpPps, pps / 1e3, &mut line),
        Err(e) => fail("udp_64b", e, &mut line),
    }
    stopped()?;
    match crr::run(client, server, ip, seconds, crr::CLIENTS) {
        Ok(r) => {
            record(Metric::Crr, r.rate(), &mut line);
            if r.errors > 0 {
                line += &format!(" (crr errors: {})", r.errors);
            }
        }
        Err(e) => fail("tcp_crr", e, &mut line),
    }
    println!("{line}");
    Ok(())
}

/// Builds the clusters, runs every round on every wire, writes the outputs into
/// `cfg.out` and prints the tables.
pub fn run(cfg: &Config) -> Result<Outcome> {
    let started = Instant::now();
    let extra: Vec<&str> = cfg.weft_args.iter().map(String::as_str).collect();
    println!(
        "weft bench{}: modes {}, wires {}, {} round(s) x {} s per metric{}",
        if cfg.masquerade { " (masquerade: pod a -> internet host)" } else { "" },
        cfg.modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(","),
        cfg.wires.iter().map(|w| w.name()).collect::<Vec<_>>().join(","),
        cfg.rounds,
        cfg.seconds,
        if extra.is_empty() { String::new() } else { format!(", weft agent args: {}", extra.join(" ")) }
    );
    // Machine-wide CPU per GB and every throughput figure assume an idle machine.
    let busy = metrics::machine_busy(std::time::Duration::from_secs(1))?;
    println!("  machine busy before the bench: {:.0}% of CPU", busy * 100.0);
    if busy > 0.05 {
        println!("  warning: the machine is not idle; the figures will carry that load's noise");
    }
    let mut topologies = Vec::new();
    for &mode in &cfg.modes {
        stopped()?;
        let t0 = Instant::now();
        let t = Topology::build_for(mode, &extra, cfg.masquerade)?;
        let path = if cfg.masquerade { "pod a -> internet host, masqueraded" } else { "pod a -> pod b" };
        println!("  built {} (nodes a, b; {path}) in {:.1} s", mode.name(), t0.elapsed().as_secs_f64());
        for note in t.datapath_notes() {
            println!("    {note}");
        }
        topologies.push(t);
    }

    let (mut samples, mut failures) = (Vec::new(), Vec::new());
    for &wire in &cfg.wires {
        stopped()?;
        println!("\nwire {}: {}", wire.name(), wire.describe());
        if wire == Wire::Nic {
            let applied: Result<()> =
                topologies.iter().try_for_each(|t| apply_nic(&t.cluster).with_context(|| format!("{} cluster", t.mode.name())));
            if let Err(e) = applied {
                println!("  cannot simulate the nic wire, skipping it: {e:#}");
                failures.push(format!("nic wire skipped: {e:#}"));
                continue;
            }
        }
        for round in 0..cfg.rounds {
            for mode in rotation(&cfg.modes, round as usize) {
                let t = topologies.iter().find(|t| t.mode == mode).expect("built");
                measure(t, wire, round + 1, cfg, &mut samples, &mut failures)?;
            }
        }
        if wire == Wire::Nic {
            for t in &topologies {
                for b in check_nic(&t.cluster) {
                    println!("  warning: nic setting changed during the run: {b}");
                    failures.push(format!("nic setting changed during the run ({}): {b}", t.mode.name()));
                }
            }
        }
    }

    let rows = report::summarise(&samples, &cfg.wires, &cfg.modes);
    println!();
    for &wire in &cfg.wires {
        println!("{}", report::table(&rows, wire, cfg.rounds));
    }
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let files = [
        ("results.csv", report::results_csv(&samples)),
        ("summary.csv", report::summary_csv(&rows)),
        ("chart.svg", report::chart_svg(&rows, &cfg.wires, &cfg.modes, cfg.rounds, cfg.seconds)),
    ];
    for (name, text) in files {
        let path = cfg.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !failures.is_empty() {
        println!("\n{} measurement(s) failed:", failures.len());
        for f in &failures {
            println!("  {f}");
        }
    }
    println!("measured in {:.0} s; tearing down", started.elapsed().as_secs_f64());
    drop(topologies);
    Ok(Outcome { samples, failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_in_canonical_order_and_rotate() {
        assert_eq!(Mode::parse_list("weft,host-gw").unwrap(), vec![Mode::HostGw, Mode::Weft]);
        assert_eq!(Mode::parse_list("hostgw,flannel,weft-fast-xdp,weft,weft,weft-xdp,weft-fast").unwrap(), Mode::ALL.to_vec());
        assert!(Mode::parse_list("vxlan").is_err());
        assert_eq!(rotation(&[1, 2, 3], 0), vec![1, 2, 3]);
        assert_eq!(rotation(&[1, 2, 3], 1), vec![2, 3, 1]);
        assert_eq!(rotation(&[1, 2, 3], 5), vec![3, 1, 2]);
    }
}
