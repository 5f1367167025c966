//! The image archive `cargo xtask image` writes, read by OCI tooling that did not
//! write it. skopeo reads the one file through both of its views — the OCI image
//! layout (`oci-archive:`, what `ctr images import`, `kind load image-archive` and
//! `podman load` read) and docker's `manifest.json` (`docker-archive:`, what `docker
//! load` reads) — and finds the same image; umoci unpacks it; the unpacked agent runs
//! with nothing but the image around it (chroot), and its init subcommands prepare
//! scratch directories as they prepare a node in the DaemonSet.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use weft_e2e::{prereq, run};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The amd64 archive `cargo xtask test` builds before the end-to-end tests (profile
/// `image-test`: the shipped layout around an unoptimised agent).
fn archive() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let path = root.join(format!("target/oci/image-test/weft-agent-{VERSION}-amd64.tar"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask image --arch amd64 --profile image-test` (the README's test command builds it)",
        path.display()
    );
    path
}

/// A scratch directory; on drop, unmounts what a test mounted under it and removes it.
struct Scratch {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch { dir, mounts: Vec::new() }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            // EINVAL when the test failed before mounting: nothing to undo.
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

fn json_of(cmd: &mut Command) -> Result<Value> {
    let out = run(cmd)?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("{cmd:?} printed no JSON"))
}

fn skopeo_inspect(reference: &str, config: bool) -> Result<Value> {
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect");
    if config {
        cmd.arg("--config");
    }
    json_of(cmd.arg(reference))
}

/// Unpacks the image with umoci into `scratch`/bundle; the root filesystem's path.
fn unpack(scratch: &Scratch) -> Result<PathBuf> {
    let layout = scratch.dir.join("layout");
    std::fs::create_dir_all(&layout)?;
    run(Command::new("tar").arg("-xf").arg(archive()).arg("-C").arg(&layout))?;
    let bundle = scratch.dir.join("bundle");
    run(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:{VERSION}", layout.display())).arg(&bundle))?;
    Ok(bundle.join("rootfs"))
}

/// The unpacked agent, run inside the unpacked root: it has no shell, no libc, nothing else.
fn in_image(rootfs: &Path, args: &[&str]) -> Result<String> {
    let out = run(Command::new("chroot").arg(rootfs).args(args))?;
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn skopeo_reads_the_same_image_through_both_views() -> Result<()> {
    prereq::require();
    let path = archive();
    let oci = skopeo_inspect(&format!("oci-archive:{}:{VERSION}", path.display()), false)?;
    // docker-archive selects by manifest.json's RepoTags: the name docker load gives it.
    let docker = skopeo_inspect(&format!("docker-archive:{}:weft-agent:{VERSION}", path.display()), false)?;
    for (view, image) in [("oci-archive", &oci), ("docker-archive", &docker)] {
        ensure!(image["Architecture"] == "amd64" && image["Os"] == "linux", "{view}: {image}");
        ensure!(image["Labels"]["org.opencontainers.image.version"] == VERSION, "{view}: {image}");
        ensure!(image["Layers"].as_array().map(Vec::len) == Some(2), "{view}: two layers (plugins, agent): {image}");
        let config = skopeo_inspect(&format!("{view}:{}", path.display()), true)?;
        ensure!(config["config"]["Entrypoint"] == serde_json::json!(["/usr/local/bin/weft-agent"]), "{view}: {config}");
    }
    ensure!(oci["Layers"] == docker["Layers"], "the views hold different layers: {oci} vs {docker}");
    ensure!(docker["Name"] == "docker.io/library/weft-agent", "docker load's name: {docker}");
    // A copy reads every blob and checks it against its digest.
    let scratch = Scratch::new("copy");
    for view in ["oci-archive", "docker-archive"] {
        let copy = scratch.dir.join(view);
        run(Command::new("skopeo").arg("copy").arg(format!("{view}:{}", path.display())).arg(format!("dir:{}", copy.display())))?;
    }

    // The names ctr (and kind through it) and podman give the OCI view.
    let index = json_of(Command::new("tar").arg("-xOf").arg(&path).arg("index.json"))?;
    let annotations = &index["manifests"][0]["annotations"];
    ensure!(annotations["io.containerd.image.name"] == format!("docker.io/library/weft-agent:{VERSION}"), "{index}");
    ensure!(annotations["org.opencontainers.image.ref.name"] == VERSION, "{index}");
    Ok(())
}

#[test]
fn unpacked_agent_runs_alone() -> Result<()> {
    prereq::require();
    let scratch = Scratch::new("version");
    let rootfs = unpack(&scratch)?;
    let expected = format!("weft-agent {VERSION}\n");
    ensure!(in_image(&rootfs, &["/usr/local/bin/weft-agent", "--version"])? == expected);
    // kube-flannel.yml's command: swapping only its image runs weft.
    ensure!(in_image(&rootfs, &["/opt/bin/flanneld", "--version"])? == expected);
    // Nothing in the image but the agent, flanneld's link to it and the plugins.
    let mut files: Vec<String> = walk(&rootfs)?.into_iter().filter(|p| !p.starts_with("usr/share/doc/")).collect();
    files.sort();
    let expected = [
        "opt/bin/flanneld",
        "usr/lib/cni/bridge",
        "usr/lib/cni/host-local",
        "usr/lib/cni/loopback",
        "usr/lib/cni/portmap",
        "usr/local/bin/weft-agent",
    ];
    ensure!(files == expected, "the image holds {files:?}");
    Ok(())
}

/// Every non-directory under `root`, relative to it.
fn walk(root: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            } else {
                found.push(entry.path().strip_prefix(root)?.to_string_lossy().into_owned());
            }
        }
    }
    Ok(found)
}

#[test]
fn install_cni_plugins_adds_only_the_missing_ones() -> Result<()> {
    prereq::require();
    let scratch = Scratch::new("plugins");
    let rootfs = unpack(&scratch)?;
    // The host's bin directory, as the DaemonSet mounts it, with a portmap of its own.
    let host_bin = rootfs.join("host/opt/cni/bin");
    std::fs::create_dir_all(&host_bin)?;
    let hosts_portmap = host_bin.join("portmap");
    std::fs::write(&hosts_portmap, b"the host's own portmap")?;
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(&hosts_portmap)?.set_modified(old)?;

    let out = in_image(&rootfs, &["/usr/local/bin/weft-agent", "install-cni-plugins", "--dest", "/host/opt/cni/bin"])?;
    let expected = "installed /host/opt/cni/bin/bridge\ninstalled /host/opt/cni/bin/host-local\n\
                    left /host/opt/cni/bin/portmap (already there)\ninstalled /host/opt/cni/bin/loopback\n";
    ensure!(out == expected, "install-cni-plugins printed:\n{out}");
    for plugin in ["bridge", "host-local", "loopback"] {
        let installed = host_bin.join(plugin);
        ensure!(std::fs::read(&installed)? == std::fs::read(rootfs.join("usr/lib/cni").join(plugin))?, "{plugin} differs");
        ensure!(std::fs::metadata(&installed)?.permissions().mode() & 0o777 == 0o755, "{plugin} is not executable");
    }
    ensure!(std::fs::read(&hosts_portmap)? == b"the host's own portmap", "the host's portmap was replaced");
    ensure!(std::fs::metadata(&hosts_portmap)?.modified()? == old, "the host's portmap was touched");
    ensure!(std::fs::read_dir(&host_bin)?.count() == 4, "a temporary file was left in {}", host_bin.display());

    // A second run finds everything there.
    let again = in_image(&rootfs, &["/usr/local/bin/weft-agent", "install-cni-plugins", "--dest", "/host/opt/cni/bin"])?;
    ensure!(again.lines().all(|l| l.starts_with("left ")) && again.lines().count() == 4, "second run:\n{again}");
    Ok(())
}

#[test]
fn install_cni_conf_replaces_the_conflist_atomically() -> Result<()> {
    prereq::require();
    let scratch = Scratch::new("conf");
    let rootfs = unpack(&scratch)?;
    // kube-flannel.yml's cni-conf.json, where its ConfigMap is mounted (the default --source).
    let conf = "{\n  \"name\": \"cbr0\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [\n    {\n      \"type\": \"flannel\",\n      \
                \"delegate\": {\n        \"hairpinMode\": true,\n        \"isDefaultGateway\": true\n      }\n    },\n    {\n      \
                \"type\": \"portmap\",\n      \"capabilities\": {\n        \"portMappings\": true\n      }\n    }\n  ]\n}\n";
    std::fs::create_dir_all(rootfs.join("etc/kube-flannel"))?;
    std::fs::write(rootfs.join("etc/kube-flannel/cni-conf.json"), conf)?;
    let net_d = rootfs.join("host/etc/cni/net.d");
    std::fs::create_dir_all(&net_d)?;
    let dest = net_d.join("10-flannel.conflist");
    std::fs::write(&dest, "{\"an\": \"older conflist\"}")?;
    // A reader holding the old file open keeps reading it whole: replaced by a rename, not rewritten.
    let reader = std::fs::File::open(&dest)?;
    let old_inode = reader.metadata()?.ino();

    let args = ["/usr/local/bin/weft-agent", "install-cni-conf", "--dest", "/host/etc/cni/net.d/10-flannel.conflist"];
    let out = in_image(&rootfs, &args)?;
    ensure!(
        out == "installed /host/etc/cni/net.d/10-flannel.conflist from /etc/kube-flannel/cni-conf.json\n",
        "install-cni-conf printed:\n{out}"
    );
    ensure!(std::fs::read_to_string(&dest)? == conf, "the conflist differs from its source");
    ensure!(std::fs::metadata(&dest)?.ino() != old_inode, "the conflist was rewritten in place");
    ensure!(std::io::read_to_string(reader)? == "{\"an\": \"older conflist\"}");
    ensure!(std::fs::read_dir(&net_d)?.count() == 1, "a temporary file was left in {}", net_d.display());

    let again = in_image(&rootfs, &args)?;
    ensure!(again == "/host/etc/cni/net.d/10-flannel.conflist unchanged\n", "second run:\n{again}");
    Ok(())
}

fn fs_magic(path: &Path) -> Result<i64> {
    // Through i128: the field is i64 on glibc and u64 on musl.
    let magic = i128::from(nix::sys::statfs::statfs(path)?.filesystem_type().0);
    Ok(i64::try_from(magic)?)
}

#[test]
fn mount_bpffs_mounts_once() -> Result<()> {
    prereq::require();
    let mut scratch = Scratch::new("bpffs");
    let rootfs = unpack(&scratch)?;
    let bpf = rootfs.join("host/sys/fs/bpf");
    std::fs::create_dir_all(&bpf)?;
    ensure!(fs_magic(&bpf)? != BPF_FS_MAGIC, "the scratch directory is on a bpffs before the test");
    scratch.mounts.push(bpf.clone());

    let args = ["/usr/local/bin/weft-agent", "mount-bpffs", "--path", "/host/sys/fs/bpf"];
    let out = in_image(&rootfs, &args)?;
    ensure!(out == "mounted bpffs at /host/sys/fs/bpf\n", "mount-bpffs printed:\n{out}");
    ensure!(fs_magic(&bpf)? == BPF_FS_MAGIC, "no bpffs at {}", bpf.display());
    let mounts = || -> Result<usize> {
        let table = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(table.lines().filter(|l| l.split(' ').nth(4) == bpf.to_str()).count())
    };
    ensure!(mounts()? == 1);

    let again = in_image(&rootfs, &args)?;
    ensure!(again == "/host/sys/fs/bpf is on a bpffs already\n", "second run:\n{again}");
    ensure!(mounts()? == 1, "the second run mounted another bpffs");
    Ok(())
}
