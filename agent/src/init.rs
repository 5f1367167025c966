//! `weft-agent mount-bpffs`, `install-cni-conf` and `install-cni-plugins`: the node's
//! preparation, run as the DaemonSet's init containers. The image has no shell, so
//! what Flannel's init containers do with `cp` (and Cilium's with `mount`) is done
//! here. Each is idempotent and says what it did, one line per thing.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use clap::{Parser, Subcommand};
use thiserror::Error;

use crate::{bpffs, cni};

/// The reference plugins a conflist of Flannel's or weft's names (`loopback` for the
/// runtime's own `lo`).
pub const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

/// Where the image keeps them: not `/opt/cni/bin`, which the DaemonSet mounts from the host.
pub const IMAGE_CNI_DIR: &str = "/usr/lib/cni";

#[derive(Parser, Debug)]
#[command(name = "weft-agent", about = "Prepare the node (the DaemonSet's init containers)")]
pub struct Init {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a bpffs at --path unless it is on one already. In a pod, --path must be a
    /// hostPath with Bidirectional mount propagation, so the mount is the host's.
    MountBpffs {
        #[arg(long, default_value = "/sys/fs/bpf")]
        path: PathBuf,
    },
    /// Copy the CNI conflist into place atomically (Flannel's install-cni container).
    InstallCniConf {
        /// The ConfigMap's cni-conf.json.
        #[arg(long, default_value = "/etc/kube-flannel/cni-conf.json")]
        source: PathBuf,
        #[arg(long, default_value = "/etc/cni/net.d/10-flannel.conflist")]
        dest: PathBuf,
    },
    /// Copy bridge, host-local, portmap and loopback into --dest, each only when missing
    /// there (the host's own, or a newer one, stays).
    InstallCniPlugins {
        #[arg(long, default_value = IMAGE_CNI_DIR)]
        source: PathBuf,
        #[arg(long, default_value = "/opt/cni/bin")]
        dest: PathBuf,
    },
}

#[derive(Debug, Error)]
pub enum InitError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not JSON (a CNI conflist)")]
    NotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] cni::WriteError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InitError {
    let path = path.to_path_buf();
    move |source| InitError::Io { op, path, source }
}

/// Whether the command line asks for one of the init subcommands.
pub fn wanted(args: &[String]) -> bool {
    args.get(1).is_some_and(|a| matches!(a.as_str(), "mount-bpffs" | "install-cni-conf" | "install-cni-plugins"))
}

/// Does what `command` asks; what it did, one line each.
pub fn run(command: &Command) -> Result<Vec<String>, InitError> {
    match command {
        Command::MountBpffs { path } => mount_bpffs(path).map(|line| vec![line]),
        Command::InstallCniConf { source, dest } => install_cni_conf(source, dest).map(|line| vec![line]),
        Command::InstallCniPlugins { source, dest } => install_cni_plugins(source, dest),
    }
}

fn mount_bpffs(path: &Path) -> Result<String, InitError> {
    std::fs::create_dir_all(path).map_err(io_err("creating", path))?;
    if bpffs::is_bpffs(path) {
        return Ok(format!("{} is on a bpffs already", path.display()));
    }
    // The agent's own mode: pins are root's.
    nix::mount::mount(Some("bpffs"), path, Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
        .map_err(|e| io_err("mounting bpffs at", path)(e.into()))?;
    Ok(format!("mounted bpffs at {}", path.display()))
}

fn install_cni_conf(source: &Path, dest: &Path) -> Result<String, InitError> {
    let conf = std::fs::read_to_string(source).map_err(io_err("reading", source))?;
    // A broken conflist would stop every pod on the node: refuse it here instead.
    serde_json::from_str::<serde_json::Value>(&conf).map_err(|e| InitError::NotJson { path: source.into(), source: e })?;
    if std::fs::read_to_string(dest).is_ok_and(|old| old == conf) {
        return Ok(format!("{} unchanged", dest.display()));
    }
    cni::write_atomic(dest, &conf)?;
    Ok(format!("installed {} from {}", dest.display(), source.display()))
}

fn install_cni_plugins(source: &Path, dest: &Path) -> Result<Vec<String>, InitError> {
    std::fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let mut done = Vec::new();
    for name in CNI_PLUGINS {
        let target = dest.join(name);
        if target.symlink_metadata().is_ok() {
            done.push(format!("left {} (already there)", target.display()));
            continue;
        }
        // Copied beside the target and renamed: the runtime never runs half a binary.
        let tmp = dest.join(format!(".{name}.weft-tmp.{}", std::process::id()));
        let copied = std::fs::copy(source.join(name), &tmp)
            .map_err(io_err("copying", &source.join(name)))
            .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &tmp)))
            .and_then(|()| std::fs::rename(&tmp, &target).map_err(io_err("renaming into place", &target)));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        done.push(format!("installed {}", target.display()));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-init-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn conf_is_copied_verbatim_and_left_when_unchanged() {
        let dir = scratch("conf");
        let (source, dest) = (dir.join("cni-conf.json"), dir.join("net.d/10-flannel.conflist"));
        std::fs::write(&source, "{ \"name\": \"cbr0\",\n  \"plugins\": [] }\n").unwrap();
        assert_eq!(install_cni_conf(&source, &dest).unwrap(), format!("installed {} from {}", dest.display(), source.display()));
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&source).unwrap());
        assert_eq!(install_cni_conf(&source, &dest).unwrap(), format!("{} unchanged", dest.display()));
        // Only the conflist in the directory: no temporary file left behind.
        assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn conf_that_is_not_json_is_refused() {
        let dir = scratch("badconf");
        let (source, dest) = (dir.join("cni-conf.json"), dir.join("10-flannel.conflist"));
        std::fs::write(&source, "{ \"name\": ").unwrap();
        assert!(matches!(install_cni_conf(&source, &dest), Err(InitError::NotJson { .. })));
        assert!(!dest.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn plugins_are_installed_only_where_missing() {
        let dir = scratch("plugins");
        let (source, dest) = (dir.join("image"), dir.join("host"));
        std::fs::create_dir_all(&source).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        for name in CNI_PLUGINS {
            std::fs::write(source.join(name), format!("image's {name}")).unwrap();
        }
        std::fs::write(dest.join("portmap"), "host's portmap").unwrap();
        let lines = install_cni_plugins(&source, &dest).unwrap();
        assert_eq!(lines[2], format!("left {} (already there)", dest.join("portmap").display()));
        assert_eq!(lines.iter().filter(|l| l.starts_with("installed ")).count(), 3);
        assert_eq!(std::fs::read_to_string(dest.join("portmap")).unwrap(), "host's portmap");
        assert_eq!(std::fs::read_to_string(dest.join("bridge")).unwrap(), "image's bridge");
        assert_eq!(std::fs::metadata(dest.join("bridge")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
