//! `cargo xtask image`: the agent's OCI image archive, written without a container
//! engine or registry.
//!
//! The image is `FROM scratch`: a static (musl) agent and Debian's reference CNI
//! plugins, two layers, nothing to pull. Written here in Rust (tar + sha256 + JSON)
//! rather than with umoci/skopeo because one file must hold two views of the image,
//! which neither tool writes: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/`; what `ctr images import`, `kind load image-archive` and `podman load`
//! read) and docker's `manifest.json` pointing at the same blobs (what `docker load`
//! reads), as `docker save` has written since Docker 25. It needs no root (umoci
//! builds layers from an unpacked root filesystem) and is reproducible: fixed owners,
//! modes, order and time, so the same inputs give the same digests. The tests check
//! the result with Debian's skopeo and umoci, which did not write it.
//!
//! Layers are uncompressed tars: a layer's digest is then its diff ID, and every
//! loader accepts them; the whole archive may be gzipped for transport.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{run, workspace_root};

pub const NAME: &str = "weft-agent";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the agent is in the image, and flanneld's path in kube-flannel.yml (a
/// relative symlink to it), so swapping only the image there works.
pub const AGENT_PATH: &str = "usr/local/bin/weft-agent";
pub const FLANNELD_PATH: &str = "opt/bin/flanneld";
/// The plugins `weft-agent install-cni-plugins` copies to the host (its default --source).
pub const CNI_DIR: &str = "usr/lib/cni";
const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];
/// The plugins' licence, shipped beside them (and where Debian keeps it).
const CNI_COPYRIGHT: &str = "usr/share/doc/containernetworking-plugins/copyright";
/// Layers and config carry this time: the same inputs give the same digests.
const EPOCH: &str = "1970-01-01T00:00:00Z";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn oci(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn triple(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Environment for a static build: ring (through kube's rustls) compiles C.
    fn build_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Arch::Amd64 => vec![("CC_x86_64_unknown_linux_musl", "musl-gcc")],
            Arch::Arm64 => vec![
                ("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc"),
                ("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "aarch64-linux-gnu-gcc"),
            ],
        }
    }
}

/// The profile `cargo xtask image` ships; other profiles' archives go to a
/// subdirectory of their own, so a test build never stands in for the shipped one.
pub const SHIPPED_PROFILE: &str = "image";

/// The archive's path for `arch` built with `profile`.
pub fn archive_path(arch: Arch, profile: &str) -> PathBuf {
    let dir = if profile == SHIPPED_PROFILE { "target/oci".to_owned() } else { format!("target/oci/{profile}") };
    workspace_root().join(dir).join(format!("{NAME}-{VERSION}-{}.tar", arch.oci()))
}

/// Builds the static agent with cargo profile `profile` and writes its image archive.
pub fn build(arch: Arch, profile: &str) -> Result<PathBuf> {
    let plugins = plugins(arch)?;
    let mut cargo = Command::new("cargo");
    cargo.current_dir(workspace_root()).envs(arch.build_env()).args([
        "build",
        "--package",
        "weft-agent",
        "--bin",
        "weft-agent",
        "--profile",
        profile,
        "--target",
        arch.triple(),
    ]);
    run(&mut cargo).with_context(|| format!("building the static agent for {}", arch.triple()))?;
    let profile_dir = if profile == "dev" { "debug" } else { profile };
    let agent = workspace_root().join("target").join(arch.triple()).join(profile_dir).join("weft-agent");
    let out = archive_path(arch, profile);
    std::fs::create_dir_all(out.parent().expect("under target/"))?;
    let archive = write_archive(arch, &agent, &plugins)?;
    std::fs::write(&out, archive).with_context(|| format!("writing {}", out.display()))?;
    println!("image {NAME}:{VERSION} ({}): {}", arch.oci(), out.display());
    Ok(out)
}

/// Debian's containernetworking-plugins for one architecture, unpacked under `root`.
struct Plugins {
    root: PathBuf,
    version: String,
}

/// This machine's own package for its architecture (setup installs it). Another
/// architecture's `.deb` comes from the same apt sources through `apt-get download`
/// with a private state under target/oci/ (its package lists only), so the machine's
/// dpkg architectures and apt state stay as they are; apt checks the archive's
/// signatures as for any install.
fn plugins(arch: Arch) -> Result<Plugins> {
    const PACKAGE: &str = "containernetworking-plugins";
    let native = Command::new("dpkg").arg("--print-architecture").output().context("running dpkg")?;
    if String::from_utf8_lossy(&native.stdout).trim() == arch.oci() {
        let out = Command::new("dpkg-query").args(["-W", "-f=${Version}", PACKAGE]).output()?;
        if !out.status.success() {
            bail!("{PACKAGE} is not installed: run `cargo xtask setup`");
        }
        return Ok(Plugins { root: "/".into(), version: String::from_utf8_lossy(&out.stdout).into_owned() });
    }
    let state = workspace_root().join(format!("target/oci/apt-{}", arch.oci()));
    let debs = state.join("debs");
    for dir in [state.join("lists/partial"), state.join("cache/archives/partial"), debs.clone()] {
        std::fs::create_dir_all(&dir)?;
    }
    std::fs::write(state.join("status"), "")?;
    let apt = || {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(&debs).arg("-q");
        for (key, value) in [
            // Only this architecture's package lists.
            ("APT::Architecture", arch.oci().to_string()),
            ("APT::Architectures", arch.oci().to_string()),
            ("Dir::State::Lists", state.join("lists").display().to_string()),
            ("Dir::State::status", state.join("status").display().to_string()),
            ("Dir::Cache", state.join("cache").display().to_string()),
            // The downloads go to a directory apt's unprivileged user cannot write.
            ("APT::Sandbox::User", "root".into()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd
    };
    run(apt().arg("update")).context("apt-get update (private state)")?;
    for old in std::fs::read_dir(&debs)? {
        std::fs::remove_file(old?.path())?;
    }
    run(apt().args(["download", &format!("{PACKAGE}:{}", arch.oci())])).context("apt-get download")?;
    let deb = std::fs::read_dir(&debs)?.next().context("apt-get download left no .deb")??.path();
    let root = state.join("root");
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let version = Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version").output()?;
    Ok(Plugins { root, version: String::from_utf8_lossy(&version.stdout).trim().to_string() })
}

/// A content-addressed blob: its bytes and their digest.
struct Blob {
    bytes: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        Blob { bytes, digest }
    }

    fn json(value: &Value) -> Self {
        Blob::new(serde_json::to_vec(value).expect("JSON values serialize"))
    }

    fn path(&self) -> String {
        format!("blobs/{}", self.digest.replace(':', "/"))
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// One tar, entries in the order given, owned by root, at time 0.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0.append_data(&mut h, format!("{path}/"), std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, bytes.len() as u64);
        self.0.append_data(&mut h, path, bytes)?;
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target)?;
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.0.into_inner()?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Layer 1: the reference CNI plugins and their licence (changes with Debian, not weft).
fn cni_layer(plugins: &Plugins) -> Result<Vec<u8>> {
    let mut tar = Tar::new();
    for dir in ["usr", "usr/lib", CNI_DIR, "usr/share", "usr/share/doc", "usr/share/doc/containernetworking-plugins"] {
        tar.dir(dir)?;
    }
    for plugin in CNI_PLUGINS {
        let path = format!("{CNI_DIR}/{plugin}");
        tar.file(&path, 0o755, &read(&plugins.root.join(&path))?)?;
    }
    tar.file(CNI_COPYRIGHT, 0o644, &read(&plugins.root.join(CNI_COPYRIGHT))?)?;
    tar.finish()
}

/// Layer 2: the agent, and flanneld's path pointing at it.
fn agent_layer(agent: &Path) -> Result<Vec<u8>> {
    let mut tar = Tar::new();
    for dir in ["usr", "usr/local", "usr/local/bin", "opt", "opt/bin"] {
        tar.dir(dir)?;
    }
    tar.file(AGENT_PATH, 0o755, &read(agent)?)?;
    // Relative: resolves to the agent inside the image and in an unpacked copy alike.
    tar.symlink(FLANNELD_PATH, "../../usr/local/bin/weft-agent")?;
    tar.finish()
}

/// The archive: an OCI image layout and docker's manifest.json over the same blobs.
fn write_archive(arch: Arch, agent: &Path, plugins: &Plugins) -> Result<Vec<u8>> {
    let layers = [Blob::new(cni_layer(plugins)?), Blob::new(agent_layer(agent)?)];
    let mut platform = json!({ "architecture": arch.oci(), "os": "linux" });
    if arch == Arch::Arm64 {
        platform["variant"] = json!("v8");
    }
    let mut config = platform.clone();
    config["created"] = json!(EPOCH);
    config["config"] = json!({
        "Entrypoint": [format!("/{AGENT_PATH}")],
        "Env": ["PATH=/usr/local/bin:/opt/bin"],
        "Labels": {
            "org.opencontainers.image.title": NAME,
            "org.opencontainers.image.version": VERSION,
            "org.opencontainers.image.licenses": "Apache-2.0",
            "org.opencontainers.image.description": "weft: an eBPF VXLAN overlay, a drop-in for Flannel's vxlan backend",
        },
    });
    // Uncompressed layers: the diff IDs are the layers' own digests.
    config["rootfs"] = json!({ "type": "layers", "diff_ids": [layers[0].digest, layers[1].digest] });
    config["history"] = json!([
        { "created": EPOCH, "created_by": format!("cargo xtask image: Debian's containernetworking-plugins {} in /{CNI_DIR}", plugins.version) },
        { "created": EPOCH, "created_by": format!("cargo xtask image: weft-agent {VERSION} ({}) in /{AGENT_PATH}", arch.triple()) },
    ]);
    let config = Blob::json(&config);
    let layer_type = "application/vnd.oci.image.layer.v1.tar";
    let manifest = Blob::json(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor("application/vnd.oci.image.config.v1+json"),
        "layers": [layers[0].descriptor(layer_type), layers[1].descriptor(layer_type)],
    }));
    let mut descriptor = manifest.descriptor("application/vnd.oci.image.manifest.v1+json");
    descriptor["platform"] = platform;
    // containerd's and podman's name for it, and the layout's tag (what umoci's
    // `--image DIR:TAG` and skopeo's `oci-archive:FILE:TAG` select), as containerd writes them.
    descriptor["annotations"] = json!({
        "io.containerd.image.name": format!("docker.io/library/{NAME}:{VERSION}"),
        "org.opencontainers.image.ref.name": VERSION,
    });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor],
    });
    let docker_manifest = json!([{
        "Config": config.path(),
        "RepoTags": [format!("{NAME}:{VERSION}")],
        "Layers": [layers[0].path(), layers[1].path()],
    }]);

    let mut tar = Tar::new();
    tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.file("index.json", 0o644, &serde_json::to_vec(&index)?)?;
    tar.file("manifest.json", 0o644, &serde_json::to_vec(&docker_manifest)?)?;
    tar.dir("blobs")?;
    tar.dir("blobs/sha256")?;
    for blob in layers.iter().chain([&config, &manifest]) {
        tar.file(&blob.path(), 0o644, &blob.bytes)?;
    }
    tar.finish()
}
