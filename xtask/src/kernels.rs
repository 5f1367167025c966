//! The per-kernel tests (`tests/tests/kernel.rs`) in qemu guests on Debian's own 6.1
//! and 6.12 kernels, booted by virtme-ng on this machine's userspace (read-only root
//! over 9p; the guest writes only to its tmpfs and the result directory). TCG, not
//! KVM: this machine kind's KVM cannot run Debian's kernels (KERNEL-NOTES.md).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{run as run_cmd, workspace_root};

/// The kernel packages: the newest of each series the archive holds (old ABI versions
/// leave it). The generic flavour: the cloud one has no 9p for virtme-ng's root.
pub const SERIES: [(&str, &str); 2] = [("6.1", "linux-image-6.1.0-"), ("6.12", "linux-image-6.12.")];

/// virtme-ng, in a venv of its own (Debian's Python refuses system-wide pip).
pub const VNG_VERSION: &str = "1.42";
const VENV: &str = "/opt/weft-virtme-ng";

/// The newest package of `prefix` apt knows (`-amd64` generic flavour).
pub fn newest_package(prefix: &str) -> Result<String> {
    let out = Command::new("apt-cache").args(["search", "--names-only", &format!("^{}", prefix.replace('.', "\\."))]).output()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.ends_with("-amd64") && !n.contains("-cloud-") && !n.contains("-rt-") && !n.contains("unsigned"))
        .map(str::to_owned)
        .collect();
    names.sort_by_key(|n| version_key(n));
    names.pop().with_context(|| format!("apt knows no {prefix}*-amd64 package: `apt-get update`?"))
}

/// Numeric parts of a package name, for ordering `6.12.9` before `6.12.107`.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok()).collect()
}

/// Installs virtme-ng in its venv unless the right version is there.
pub fn virtme_ng() -> Result<()> {
    let vng = Path::new(VENV).join("bin/vng");
    let present = Command::new(&vng).arg("--version").output();
    if matches!(present, Ok(o) if String::from_utf8_lossy(&o.stdout).contains(VNG_VERSION)) {
        return Ok(());
    }
    println!("setup: installing virtme-ng {VNG_VERSION} in {VENV}");
    run_cmd(Command::new("python3").args(["-m", "venv", VENV]))?;
    run_cmd(Command::new(Path::new(VENV).join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        &format!("virtme-ng=={VNG_VERSION}"),
    ]))
}

/// The kernel test binary, built (debug, as the agent the tests start).
fn test_binary() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .current_dir(workspace_root())
        .args(["test", "--package", "weft-e2e", "--test", "kernel", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the kernel test failed");
    }
    // One JSON object per line; the test's artifact names its `"executable":"PATH"`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("\"executable\":\"").and_then(|(_, rest)| rest.split_once('"')).map(|(p, _)| p.to_owned()))
        .find(|p| p.contains("/kernel-"))
        .map(PathBuf::from)
        .context("cargo named no kernel test executable")
}

/// Boots each series' installed kernel and runs the kernel test inside; fails on the
/// first kernel whose test fails, with its output.
pub fn run() -> Result<()> {
    let bin = test_binary()?;
    let path = format!("{VENV}/bin:{}", std::env::var("PATH").unwrap_or_default());
    for (series, prefix) in SERIES {
        let package = newest_package(prefix)?;
        let release = package.trim_start_matches("linux-image-");
        let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{release}"));
        if !vmlinuz.exists() {
            bail!("{} is missing: `cargo xtask setup` installs {package}", vmlinuz.display());
        }
        let dir = workspace_root().join(format!("target/kernels/{release}"));
        std::fs::create_dir_all(&dir)?;
        let result = dir.join("test.out");
        let _ = std::fs::remove_file(&result);
        // bpffs is not mounted in the guest; the harness puts its pins under it.
        let script = format!(
            "export PATH='{path}'; mount -t bpf bpf /sys/fs/bpf; cd {tests} && RUST_BACKTRACE=0 {bin} --nocapture --test-threads=1 >{out} 2>&1; echo rc=$? >>{out}",
            tests = workspace_root().join("tests").display(),
            bin = bin.display(),
            out = result.display(),
        );
        let started = Instant::now();
        // One vCPU: with two, a 6.12 guest panicked under TCG in about one boot of five
        // ("Oops: int3" in netif_rx_internal: a static key patched by text_poke_bp on
        // one vCPU while the other ran the site; cross-modifying code under TCG, no
        // weft program on the stack). A guest that still vanishes before the test
        // prints its result is booted once more, its console kept; a test that fails
        // is never retried.
        let mut boot = None;
        for attempt in 1..=2 {
            println!("kernels: booting {release} (qemu TCG, 1 CPU){}", if attempt > 1 { ", again" } else { "" });
            let _ = std::fs::remove_file(&result);
            // qemu reopens its stdout and stderr: never the same regular file for both.
            // --verbose: the guest's console (kernel messages) goes to vng-N.err.
            let status = Command::new(format!("{VENV}/bin/vng"))
                .env("PATH", &path)
                .args(["--verbose", "--run"])
                .arg(&vmlinuz)
                .args(["--disable-kvm", "--cpus", "1", "--memory", "2G", "--rwdir"])
                .arg(&dir)
                .args(["--exec", &script])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.join("vng.out"))?)
                .stderr(std::fs::File::create(dir.join(format!("vng-{attempt}.err")))?)
                .status()
                .context("running vng")?;
            boot = Some(status);
            let finished = std::fs::read_to_string(&result).unwrap_or_default().lines().any(|l| l.starts_with("rc="));
            if finished {
                break;
            }
            println!(
                "kernels: the {release} guest ended ({status}) before the test's result; console: {}",
                dir.join(format!("vng-{attempt}.err")).display()
            );
        }
        let boot = boot.expect("one boot at least");
        let output = std::fs::read_to_string(&result).unwrap_or_default();
        let passed = output.lines().any(|l| l == "rc=0");
        println!("kernels: {series} ({release}): {} in {:.0?}", if passed { "passed" } else { "FAILED" }, started.elapsed());
        if !passed {
            bail!("the kernel test failed on {release} (vng: {boot}):\n{output}\n(guest console: {}/vng-*.err)", dir.display());
        }
        for line in output.lines().filter(|l| l.contains("bytes verified") || l.starts_with("kernel ")) {
            println!("  {line}");
        }
    }
    Ok(())
}
