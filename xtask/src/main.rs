//! `cargo xtask`: the project's own build, setup and test entry points.
//!
//! - `setup`: installs what a fresh Debian 12 machine lacks (pinned nightly + rust-src,
//!   LLVM 22, bpf-linker built against it, iproute2, bpftool, the test tools);
//!   idempotent and fast when everything is there.
//! - `build-ebpf`: the one pipeline that builds the eBPF object; the agent embeds it.
//! - `build`: `build-ebpf`, then the agent.
//! - `test`: `setup`, `build`, formatting and lints, then every test (unit,
//!   BPF_PROG_TEST_RUN, end-to-end; the amd64 image archive before the end-to-end ones).
//! - `image`: `build-ebpf`, then the static agent and its OCI image archive
//!   (`target/oci/`), without a container engine.
//! - `sandbox`: `build`, then the local multi-node sandbox (the README's main command).
//! - `bench`: `setup`, `build`, then host-gw vs Flannel vs weft (`weft-bench`, release).

mod image;
mod kernels;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// The nightly that builds the eBPF crate (`-Z build-std`); newer aya crates need rustc 1.98.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";
pub const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Parser)]
#[command(name = "xtask", about = "weft's build, setup and test tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing toolchains and system packages (needs root for apt).
    Setup,
    /// Build the eBPF object with the pinned nightly.
    BuildEbpf,
    /// Build the eBPF object and the agent.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build the agent's image archive (OCI layout + docker's manifest.json) in target/oci/.
    Image {
        /// One archive per architecture (amd64,arm64 by default).
        #[arg(long, value_enum, value_delimiter = ',', default_values = ["amd64", "arm64"])]
        arch: Vec<image::Arch>,
        /// The cargo profile of the static agent.
        #[arg(long, default_value = "image")]
        profile: String,
    },
    /// Set up, build and run every test.
    Test {
        /// Only the kernel test, in guests on Debian's 6.1 and 6.12 kernels (which
        /// the full run ends with).
        #[arg(long)]
        kernels: bool,
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the local sandbox: nodes and pods in network namespaces with weft between them.
    Sandbox {
        /// Check once and tear down instead of running until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Benchmark host-gw, Flannel's kernel vxlan and weft pod to pod (weft-bench --help).
    Bench {
        /// Arguments for weft-bench (e.g. --rounds 1 --seconds 2 --wire nic).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Build { release } => build(release),
        Cmd::Image { arch, profile } => {
            setup::run()?;
            build_ebpf()?;
            arch.into_iter().try_for_each(|arch| image::build(arch, &profile).map(drop))
        }
        Cmd::Test { kernels: true, .. } => setup::run().and_then(|()| build(false)).and_then(|()| kernels::run()),
        Cmd::Test { args, .. } => test(&args),
        Cmd::Sandbox { once } => sandbox(once),
        Cmd::Bench { args } => bench(&args),
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Where `build-ebpf` leaves the object; the agent's build.rs reads it from here.
pub fn ebpf_object() -> PathBuf {
    workspace_root().join("target/ebpf/bpfel-unknown-none/release/weft-dataplane")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// `cargo <verb>` on the eBPF crate with the pinned nightly, for the BPF target.
fn ebpf_cargo(verb: &str) -> Command {
    let root = workspace_root();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join("dataplane-ebpf"))
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO")
        // BTF is required: aya refuses BTF-defined maps in an object without it.
        .env("CARGO_ENCODED_RUSTFLAGS", ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"))
        .args([
            &format!("+{EBPF_TOOLCHAIN}"),
            verb,
            "--package",
            "weft-dataplane",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Zbuild-std=core",
            "--target-dir",
        ])
        .arg(root.join("target/ebpf"));
    cmd
}

fn build_ebpf() -> Result<()> {
    setup::require_ebpf_toolchain()?;
    run(&mut ebpf_cargo("build")).context("building the eBPF object")?;
    println!("eBPF object: {}", ebpf_object().display());
    Ok(())
}

fn build(release: bool) -> Result<()> {
    build_ebpf()?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).args(["build", "--package", "weft-agent", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    build(false)?;
    let root = workspace_root();
    // Formatting and lints first: cheap, and they name the line. The eBPF crate is
    // no_std for another target: its clippy runs with the pinned nightly.
    run(Command::new("cargo").current_dir(&root).args(["fmt", "--all", "--check"]))?;
    run(ebpf_cargo("clippy").args(["--", "-D", "warnings"])).context("clippy on the eBPF crate")?;
    run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--exclude",
        "weft-dataplane",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Unit and BPF_PROG_TEST_RUN tests: in parallel.
    run(Command::new("cargo").current_dir(&root).args(["test", "--workspace", "--exclude", "weft-e2e", "--"]).args(args))?;
    // The image test reads an amd64 archive (what this machine can run; arm64 differs
    // only in the target), written as `cargo xtask image` writes it but around an
    // unoptimised agent: the optimised build alone would cost CI 6-9 minutes here.
    image::build(image::Arch::Amd64, "image-test")?;
    // End-to-end tests share the machine's namespaces and CPU: one at a time.
    run(Command::new("cargo").current_dir(&root).args(["test", "--package", "weft-e2e", "--", "--test-threads=1"]).args(args))?;
    // The clsact (netlink) attach path of kernels before 6.6, on this kernel: the
    // dataplane tests, restart adoption and uninstall again (the agents take
    // `--tc-attach` from the environment).
    if args.is_empty() {
        for tests in [
            &["--test", "dataplane", "--"][..],
            &["--test", "agent", "--test", "kubernetes", "--", "restart_keeps_forwarding", "uninstall_leaves"],
        ] {
            run(Command::new("cargo")
                .current_dir(&root)
                .env("WEFT_TC_ATTACH", "netlink")
                .args(["test", "--package", "weft-e2e"])
                .args(tests)
                .arg("--test-threads=1"))?;
        }
        // Debian's 6.1 (no TCX) and 6.12 kernels, in guests.
        kernels::run()?;
    }
    Ok(())
}

fn sandbox(once: bool) -> Result<()> {
    setup::run()?;
    build(false)?;
    let root = workspace_root();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root).args(["run", "--quiet", "--package", "weft-e2e", "--bin", "weft-sandbox", "--"]);
    if once {
        cmd.arg("--once");
    }
    run(&mut cmd)
}

/// The dataplane bench (arguments go to weft-bench), then the control-plane scale
/// bench; with `--fuzz-packets N`, only weft-bench's reference-model fuzzing. Both run in release (the harness's in-process connect/request/close tool
/// must not be the bottleneck) and start the release agent, as deployed, through
/// `WEFT_AGENT_BIN` (tests use the debug one). The datapath is the eBPF object, built
/// in release by `build-ebpf` either way.
fn bench(args: &[String]) -> Result<()> {
    setup::run()?;
    build(true)?;
    let agent = workspace_root().join("target/release/weft-agent");
    // `--fuzz-packets N` runs the reference-model fuzzing alone (no topology).
    let fuzz_only = args.iter().any(|a| a.starts_with("--fuzz-packets"));
    let benches =
        if fuzz_only { &[("weft-bench", args)][..] } else { &[("weft-bench", args), ("weft-bench-control-plane", &[][..])] };
    for &(bin, args) in benches {
        run(Command::new("cargo")
            .current_dir(workspace_root())
            .env("WEFT_AGENT_BIN", &agent)
            .args(["run", "--quiet", "--release", "--package", "weft-e2e", "--bin", bin, "--"])
            .args(args))?;
    }
    Ok(())
}
