//! weft's test harness, shared by the end-to-end tests and the sandbox.
//!
//! Everything it builds lives in network namespaces it created (a namespace per node,
//! pod and external host, and one for the underlay switch); nothing touches the root
//! namespace. Guards remove namespaces, pins and files by name on drop, so a failing
//! test cleans up too.
//!
//! - [`prereq`]: tools the tests need, failing with what to install;
//! - [`netns`]: namespace guards, commands and threads inside a namespace;
//! - [`cni`]: pods made by Debian's reference CNI plugins, as a runtime makes them;
//! - [`agent`]: a `weft-agent` process per node;
//! - [`allocator`]: `weft-agent allocate-node-cidrs` replicas, and the history check;
//! - [`flannel`]: a node configured exactly as Flannel's vxlan backend configures it;
//! - [`kube`]: the control plane (API server namespace, Node objects, flanneld's part);
//! - [`cluster`]: the topology: underlay switch, nodes, pods, external hosts;
//! - [`traffic`]: ping, content-verified TCP transfers, UDP probes;
//! - [`stream`]: steady sequenced UDP and paced TCP across an event, losses counted;
//! - [`packet`]: crafted frames for BPF_PROG_TEST_RUN;
//! - [`testrun`]: the programs loaded privately and run through BPF_PROG_TEST_RUN;
//! - [`fuzz`]: a reference model of every program's decision, and random and mutated frames compared with it;
//! - [`apiserver`]: a Kubernetes API server serving Nodes to kube and kubectl;
//! - [`bench`]: `cargo xtask bench`, host-gw vs Flannel vs weft on the same topology.

pub mod agent;
pub mod allocator;
pub mod apiserver;
pub mod bench;
pub mod cluster;
pub mod cni;
pub mod flannel;
pub mod flannel_lease;
pub mod fuzz;
pub mod kube;
pub mod manifests;
pub mod narrow;
pub mod netns;
pub mod packet;
pub mod prereq;
pub mod stream;
pub mod testrun;
pub mod traffic;

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Runs a command to completion; fails with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

/// `sh -c`-free command from a whitespace-separated string (no quoting needed in tests).
pub fn cmd(line: &str) -> Command {
    let mut parts = line.split_whitespace();
    let mut c = Command::new(parts.next().expect("empty command"));
    c.args(parts);
    c
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent binary built by `cargo xtask build` (or `$WEFT_AGENT_BIN`).
pub fn agent_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("WEFT_AGENT_BIN") {
        return p.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let bin = root.join("target/debug/weft-agent");
    assert!(bin.exists(), "{} is missing: run `cargo xtask build` (the README's test command does)", bin.display());
    bin
}
