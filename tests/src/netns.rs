//! Network namespace guards and ways to run things inside one.
//!
//! Names carry the test process's pid, so a later run can tell (and sweep) what a
//! crashed run left behind, and parallel test binaries never collide.

use std::{
    fs::File,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
};

use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TcAttachType};
use nix::sched::{CloneFlags, setns};

use crate::run;

pub const PREFIX: &str = "weft-e2e-";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique id for one topology: `<pid>-<n>`.
pub fn run_id() -> String {
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Deletes namespaces left by test processes that no longer exist.
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
        if let Some(pid) = pid
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
        {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &str) -> Result<String> {
        let out = run(Command::new("ip").args(["-n", &self.name]).args(args.split_whitespace()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `bridge -n NS ARGS`.
    pub fn bridge(&self, args: &str) -> Result<String> {
        let out = run(Command::new("bridge").args(["-n", &self.name]).args(args.split_whitespace()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command to run inside the namespace with `ip netns exec` (test tools only;
    /// the agent runs under `nsenter --net`, which keeps the host's bpffs visible).
    pub fn exec(&self, line: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(line.split_whitespace());
        c
    }

    /// As [`Netns::exec`], with arguments that may contain spaces.
    pub fn exec_args(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs `line` inside the namespace and returns its stdout; fails on non-zero exit.
    pub fn sh(&self, line: &str) -> Result<String> {
        let out = run(&mut self.exec(line))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a new thread that has entered this namespace (only that thread).
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> JoinHandle<Result<T>> {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            setns(file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {path}"))?;
            f()
        })
    }
}

impl Netns {
    /// The programs (id, name) on `iface`'s TC `hook` in this namespace: its TCX
    /// programs (where the kernel has TCX), then its clsact filters' programs.
    /// (`bpftool net` of Debian 12 does not list TCX attachments.)
    pub fn tc_programs(&self, iface: &str, hook: TcAttachType) -> Result<Vec<(u32, String)>> {
        let iface = iface.to_owned();
        self.spawn(move || {
            let mut out = Vec::new();
            if let Ok((_, progs)) = SchedClassifier::query_tcx(&iface, hook) {
                out.extend(progs.iter().map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_owned())));
            }
            let index = nix::net::if_::if_nametoindex(iface.as_str()).with_context(|| format!("no interface {iface}"))?;
            let filters =
                weft_agent::tc_netlink::filters(index, hook).with_context(|| format!("listing clsact filters of {iface}"))?;
            for f in filters {
                let name = aya::programs::loaded_programs()
                    .filter_map(Result::ok)
                    .find(|p| p.id() == f.prog_id)
                    .and_then(|p| p.name_as_str().map(str::to_owned))
                    .unwrap_or(f.name);
                out.push((f.prog_id, name));
            }
            Ok(out)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("query thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip").args(["netns", "del", &self.name]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("cleanup: ip netns del {}: {}", self.name, String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("cleanup: ip netns del {}: {e}", self.name),
        }
    }
}
