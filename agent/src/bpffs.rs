//! Where pins live.
//!
//! Pins keep the dataplane running across agent restarts, so they must live in the
//! host's bpffs. If no bpffs is mounted at `/sys/fs/bpf`, the agent mounts one — but
//! only from the host's mount namespace: under `ip netns exec` (which remounts `/sys`)
//! or in a pod without a hostPath for `/sys/fs/bpf`, a mount would be private to this
//! process and every pin would vanish with it, so the agent refuses instead.

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::sys::statfs::{BPF_FS_MAGIC, FsType};
use thiserror::Error;

const DEFAULT_MOUNT: &str = "/sys/fs/bpf";
/// Kernels ≥ 6.x give the initial mount namespace a fixed inode (`PROC_MNT_INIT_INO`).
const PROC_MNT_INIT_INO: u64 = 0xEFFF_FFF8;
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

#[derive(Debug, Error)]
pub enum BpffsError {
    #[error(
        "{dir} is not on a bpffs and no bpffs is mounted at {DEFAULT_MOUNT}, and this process is not \
         in the host's mount namespace (e.g. it runs under `ip netns exec`, which remounts /sys, or in a \
         pod without a hostPath for /sys/fs/bpf): a bpffs mounted here would be private and the pins would \
         die with the agent. Mount it on the host (`mount -t bpf bpf /sys/fs/bpf`), use `nsenter --net=...` \
         instead of `ip netns exec`, or give the pod the hostPath"
    )]
    PrivateMount { dir: PathBuf },
    #[error("{dir} is not on a bpffs; mount one there or choose a directory under {DEFAULT_MOUNT}")]
    NotBpffs { dir: PathBuf },
    #[error("mounting bpffs at {DEFAULT_MOUNT}")]
    Mount(#[source] io::Error),
    #[error("creating pin directory {dir}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The filesystem type of the nearest existing ancestor of `path`. nix's `FsType`
/// rather than its raw field, which is `i64` on glibc and `u64` on musl.
fn fs_type(path: &Path) -> Option<FsType> {
    let existing = path.ancestors().find(|p| p.exists())?;
    nix::sys::statfs::statfs(existing).ok().map(|s| s.filesystem_type())
}

fn ns_inode(link: &str) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let s = target.to_str()?;
    s.split_once('[')?.1.trim_end_matches(']').parse().ok()
}

/// Whether `path` (or its nearest existing ancestor) is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    fs_type(path) == Some(BPF_FS_MAGIC)
}

/// Whether a mount made by this process is visible to the host (and outlives us).
pub fn in_host_mount_namespace() -> bool {
    let Some(own) = ns_inode("/proc/self/ns/mnt") else {
        return false;
    };
    if own == PROC_MNT_INIT_INO {
        return true;
    }
    // Older kernels: same mount namespace as init, and we are in the initial PID
    // namespace (so init is the host's, not a container's).
    ns_inode("/proc/1/ns/mnt") == Some(own) && ns_inode("/proc/self/ns/pid") == Some(PROC_PID_INIT_INO)
}

/// Makes sure `dir` exists on a bpffs that outlives this process.
pub fn ensure(dir: &Path) -> Result<(), BpffsError> {
    if !is_bpffs(dir) {
        if !dir.starts_with(DEFAULT_MOUNT) {
            return Err(BpffsError::NotBpffs { dir: dir.into() });
        }
        if !in_host_mount_namespace() {
            return Err(BpffsError::PrivateMount { dir: dir.into() });
        }
        tracing::info!("no bpffs at {DEFAULT_MOUNT}: mounting one");
        nix::mount::mount(Some("bpffs"), DEFAULT_MOUNT, Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
            .map_err(|e| BpffsError::Mount(e.into()))?;
    }
    std::fs::create_dir_all(dir).map_err(|source| BpffsError::CreateDir { dir: dir.into(), source })
}
