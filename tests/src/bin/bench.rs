//! `weft-bench` (run by `cargo xtask bench`): host-gw, Flannel's kernel vxlan and weft
//! on the same two-node namespace topology, pod a → pod b, round by round; prints a
//! table per wire (with, for the weft modes, what each BPF program costs per packet)
//! and writes results.csv, summary.csv and chart.svg. Needs root and a machine with
//! nothing else to do (CPU per GB is machine-wide).

use std::{path::PathBuf, sync::atomic::Ordering, time::Instant};

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use weft_e2e::bench::{self, Config, Mode, Wire};

#[derive(Clone, Copy, ValueEnum)]
enum WireArg {
    Veth,
    Nic,
    Both,
}

#[derive(Parser)]
#[command(name = "weft-bench", about = "host-gw vs Flannel vxlan vs weft, pod to pod across two nodes in network namespaces")]
struct Cli {
    /// Rounds per wire; every metric runs once per mode per round, the mode order rotated.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=60))]
    seconds: u32,
    /// veth: the underlay as created (offloads on); nic: segmentation off on the wire and
    /// GRO on the receiving uplink, as with real NICs (the figures that count).
    #[arg(long, value_enum, default_value_t = WireArg::Both)]
    wire: WireArg,
    /// Comma-separated subset of host-gw,flannel,weft,weft-fast,weft-xdp,weft-fast-xdp
    /// (weft-fast-xdp is left out by default to keep the bench under 15 minutes).
    #[arg(long, default_value = "host-gw,flannel,weft,weft-fast,weft-xdp")]
    modes: String,
    /// Output directory (default: the workspace's target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra arguments for every weft agent, e.g. --weft-args "--decap tc".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    weft_args: String,
    /// Do not measure the weft programs' cost per packet. It comes from the kernel's BPF
    /// run-time statistics, switched on during the weft modes' 1-stream TCP runs only,
    /// which adds two clock reads to every program run of those runs.
    #[arg(long)]
    no_bpf_stats: bool,
    /// Measure the masquerade: pod a -> a host beyond a router on the underlay, every
    /// mode masquerading (host-gw and Flannel with flanneld --ip-masq's iptables
    /// rules, weft with --ip-masq); modes: host-gw, flannel, weft.
    #[arg(long)]
    masquerade: bool,
    /// Instead of the dataplane bench: the reference-model fuzzing (issue 16) at scale,
    /// this many frames spread over the eight programs, each compared with the model
    /// (BPF_PROG_TEST_RUN, no topology). Prints frames/s and mismatches, fails on any.
    /// `WEFT_FUZZ_SEED` replays a run.
    #[arg(long, value_name = "N")]
    fuzz_packets: Option<u64>,
}

extern "C" fn on_signal(_: libc::c_int) {
    bench::STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(n) = cli.fuzz_packets {
        return fuzz(n);
    }
    let started = Instant::now();
    let handler = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &handler) }?;
    }
    let cfg = Config {
        rounds: cli.rounds,
        seconds: cli.seconds,
        wires: match cli.wire {
            WireArg::Veth => vec![Wire::Veth],
            WireArg::Nic => vec![Wire::Nic],
            WireArg::Both => vec![Wire::Veth, Wire::Nic],
        },
        modes: Mode::parse_list(&cli.modes)?,
        out: cli.out.unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").join("target/bench")
        }),
        weft_args: cli.weft_args.split_whitespace().map(str::to_owned).collect(),
        bpf_stats: !cli.no_bpf_stats,
        masquerade: cli.masquerade,
    };
    let outcome = bench::run(&cfg);
    println!("elapsed: {:.0} s ({:.1} min)", started.elapsed().as_secs_f64(), started.elapsed().as_secs_f64() / 60.0);
    let outcome = outcome?;
    if !outcome.failures.is_empty() {
        bail!("{} measurement(s) failed (listed above)", outcome.failures.len());
    }
    Ok(())
}

/// The reference-model fuzzing, `n` frames in all.
fn fuzz(n: u64) -> Result<()> {
    let seed = weft_e2e::fuzz::seed();
    let programs = weft_e2e::fuzz::model::Prog::ALL.len() as u64;
    println!("fuzzing: {n} frames over {programs} programs, WEFT_FUZZ_SEED={seed}");
    let report = weft_e2e::fuzz::run(n.div_ceil(programs), seed, 20)?;
    print!("{}", report.table());
    let secs = report.elapsed.as_secs_f64();
    println!(
        "{} frames in {secs:.1} s ({:.0} frames/s), {} mismatches",
        report.packets,
        report.packets as f64 / secs,
        report.mismatches
    );
    if report.mismatches != 0 {
        bail!("{} frames disagree with the model; first ones:\n{}", report.mismatches, report.first.join("\n"));
    }
    Ok(())
}
