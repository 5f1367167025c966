//! Fail early and clearly when the agent lacks the capabilities it needs.

use anyhow::{Result, bail};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// The kernels weft is tested on start at 6.1 (Debian 12's); older ones may work, or
/// the verifier says which program it refuses. TCX (6.6) is optional: without it the
/// programs attach as clsact filters (see `--tc-attach`).
pub fn check_kernel() -> Result<()> {
    let v = aya::util::KernelVersion::current()?;
    if v < aya::util::KernelVersion::new(6, 1, 0) {
        tracing::warn!("Linux {v:?} is older than the kernels weft is tested on (6.1 and newer)");
    }
    Ok(())
}

pub fn check() -> Result<()> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    if !missing.is_empty() {
        bail!(
            "missing privileges: weft-agent needs {} to manage links, routes and BPF programs; \
             run it as root (in Kubernetes: a privileged container)",
            missing.join(" and ")
        );
    }
    Ok(())
}
