//! One agent per pin directory: an exclusive `flock` on `--bpffs-dir` itself.
//!
//! Two agents on one node would fight over the same pins, links and routes, each
//! undoing the other's resync. The lock is taken on the bpffs directory, not on a file
//! under `/run/weft`, because that directory *is* the shared state: bpffs holds no
//! regular files (so no lock file beside the pins), but a directory fd can be
//! flock'ed; it is on the host through the hostPath the DaemonSet already mounts
//! (a `/run/weft` would need one more, and a container's private `/run` would make the
//! lock private too); and agents with different `--bpffs-dir`s (the tests' nodes on
//! one host) do not exclude each other. The kernel drops the lock when the holder
//! exits, however it exits: no stale lock to clean up after a crash.
//!
//! The holder is named from `/proc/locks` (its pid, as this process's PID namespace
//! sees it: 0 when it is in another one, e.g. another pod).

use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use thiserror::Error;

/// Held for as long as it lives; dropping it (or exiting) releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
}

/// Who holds a lock, as `/proc/locks` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Its pid, and its command name when readable.
    Pid(u32, Option<String>),
    /// A process this PID namespace cannot see (pid 0 in `/proc/locks`).
    OtherNamespace,
    /// Not found (released meanwhile, or `/proc` unreadable).
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Pid(pid, Some(comm)) => write!(f, "pid {pid} ({comm})"),
            Holder::Pid(pid, None) => write!(f, "pid {pid}"),
            Holder::OtherNamespace => f.write_str("a process in another PID namespace"),
            Holder::Unknown => f.write_str("an unknown process"),
        }
    }
}

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "another weft-agent holds {dir} ({holder}): two agents on one node would fight over its pins and links; \
         stop that agent first"
    )]
    Held { dir: PathBuf, holder: Holder },
    #[error("opening {dir} to lock it")]
    Open {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("locking {dir}")]
    Lock {
        dir: PathBuf,
        #[source]
        source: Errno,
    },
}

impl LockError {
    /// The holder, when the lock is held by someone else.
    pub fn holder(&self) -> Option<&Holder> {
        match self {
            LockError::Held { holder, .. } => Some(holder),
            _ => None,
        }
    }
}

/// Takes the exclusive lock on `dir` (which must exist), failing at once if held.
pub fn lock(dir: &Path) -> Result<DirLock, LockError> {
    // std opens with O_CLOEXEC: helpers the agent runs (iptables) do not inherit it.
    let file = File::open(dir).map_err(|source| LockError::Open { dir: dir.into(), source })?;
    let inode = file.metadata().map_err(|source| LockError::Open { dir: dir.into(), source })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DirLock { _lock: lock }),
        Err((_, Errno::EWOULDBLOCK)) => {
            let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            let holder = holder(&locks, inode.dev(), inode.ino());
            Err(LockError::Held { dir: dir.into(), holder })
        }
        Err((_, source)) => Err(LockError::Lock { dir: dir.into(), source }),
    }
}

/// The holder of the FLOCK on (`dev`, `ino`) in a `/proc/locks` text, whose lines read
/// `1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF` (device as hex major:minor).
fn holder(locks: &str, dev: u64, ino: u64) -> Holder {
    let want = format!("{:02x}:{:02x}:{ino}", nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let pid = locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line starts with "->": skip it, it is not the holder.
        (f.len() >= 6 && f[1] == "FLOCK" && f[5] == want).then(|| f[4].parse::<u32>().ok())?
    });
    match pid {
        Some(0) => Holder::OtherNamespace,
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_owned());
            Holder::Pid(pid, comm)
        }
        None => Holder::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKS: &str = "1: POSIX  ADVISORY  WRITE 77 00:1a:99 0 EOF\n\
                         2: FLOCK  ADVISORY  WRITE 4242 00:2b:1234 0 EOF\n\
                         3: FLOCK  ADVISORY  WRITE 0 103:02:5 0 EOF\n";

    #[test]
    fn the_holder_is_found_by_device_and_inode() {
        let dev = nix::sys::stat::makedev(0, 0x2b);
        assert!(matches!(holder(LOCKS, dev, 1234), Holder::Pid(4242, _)));
        assert_eq!(holder(LOCKS, dev, 99), Holder::Unknown, "POSIX locks and other inodes are not ours");
        assert_eq!(holder(LOCKS, nix::sys::stat::makedev(0x103, 2), 5), Holder::OtherNamespace);
    }

    #[test]
    fn a_second_lock_fails_at_once_naming_this_process_and_a_released_one_is_free() {
        let dir = std::env::temp_dir().join(format!("weft-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = lock(&dir).expect("first lock");
        // flock locks belong to the open file description: a second open conflicts
        // even within one process, as a second agent's would.
        let err = lock(&dir).expect_err("second lock");
        assert!(matches!(err.holder(), Some(Holder::Pid(pid, _)) if *pid == std::process::id()), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("stop that agent first"), "{msg}");
        drop(first);
        let again = lock(&dir).expect("free after release");
        drop(again);
        std::fs::remove_dir(&dir).unwrap();
    }
}
