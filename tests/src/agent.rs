//! A `weft-agent` process in a node's namespace, started as the sandbox and an
//! operator would: `nsenter --net=/run/netns/NODE weft-agent ...` (nsenter keeps the
//! host's mounts, so pins land in the host's bpffs).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::{sys::signal::Signal, unistd::Pid};

use crate::{netns::Netns, wait_for};

pub struct AgentProcess {
    child: Option<Child>,
    pub log: PathBuf,
    pub node: String,
}

/// Tests resync every 2 s, unless they ask for another period.
fn resync(extra: &[&str]) -> &'static [&'static str] {
    if extra.contains(&"--resync-seconds") { &[] } else { &["--resync-seconds", "2"] }
}

/// The command line an agent of `node` is started with.
pub fn command(ns: &Netns, peers: &Path, node: &str, bpffs_dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path()))
        .arg(crate::agent_binary())
        .arg("--peers")
        .arg(peers)
        .args(["--node-name", node])
        .arg("--bpffs-dir")
        .arg(bpffs_dir)
        .args(["--bpf-log", "warn"])
        .args(resync(extra))
        .args(extra);
    c
}

/// The command line of an agent in Kubernetes mode (no node table).
pub fn kube_command(ns: &Netns, node: &str, bpffs_dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path()))
        .arg(crate::agent_binary())
        .args(["--node-name", node])
        .arg("--bpffs-dir")
        .arg(bpffs_dir)
        .args(["--bpf-log", "warn"])
        .args(resync(extra))
        .args(extra);
    c
}

impl AgentProcess {
    /// Starts the agent and waits until it reports the dataplane up.
    pub fn start(cmd: Command, node: &str, log: PathBuf) -> Result<Self> {
        let mut agent = AgentProcess::spawn(cmd, node, log)?;
        let up = wait_for(Duration::from_secs(20), || {
            if agent.log_text().contains("dataplane up") {
                return Some(true);
            }
            match agent.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) => Some(false),
                _ => None,
            }
        });
        if up != Some(true) {
            bail!("agent {node} did not come up:\n{}", agent.log_text());
        }
        Ok(agent)
    }

    /// Starts the agent without waiting for anything (it may be waiting itself).
    pub fn spawn(mut cmd: Command, node: &str, log: PathBuf) -> Result<Self> {
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).env("RUST_LOG", "info");
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(AgentProcess { child: Some(child), log, node: node.to_owned() })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    pub fn signal(&self, sig: Signal) -> Result<()> {
        if let Some(pid) = self.pid() {
            nix::sys::signal::kill(pid, sig)?;
        }
        Ok(())
    }

    /// SIGTERM, then wait (SIGKILL after 10 s).
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
        match status {
            Some(s) => Ok(Some(s)),
            None => {
                let _ = child.kill();
                Ok(Some(child.wait()?))
            }
        }
    }

    /// SIGKILL, as the OOM killer or a forced pod deletion ends it: no signal handler,
    /// no clean-up. Waits for the process; the status says it died of the signal.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let Some(mut child) = self.child.take() else {
            bail!("agent {} is not running", self.node);
        };
        // nsenter execs the agent (no --fork): the child's pid is the agent's.
        nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
        let status = child.wait()?;
        if status.signal() != Some(Signal::SIGKILL as i32) {
            bail!("agent {} ended with {status} before the SIGKILL:\n{}", self.node, self.log_text());
        }
        Ok(status)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("cleanup: stopping agent {}: {e}", self.node);
        }
    }
}

/// Runs the agent to completion (for start-up failures): exit status and output.
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> Result<(ExitStatus, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let status = wait_for(timeout, || child.try_wait().ok().flatten());
    let Some(_) = status else {
        let _ = child.kill();
        let out = child.wait_with_output()?;
        bail!("agent still running after {timeout:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    };
    let out = child.wait_with_output()?;
    Ok((out.status, format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))))
}
