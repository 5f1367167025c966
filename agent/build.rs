//! Embeds the eBPF object built by `cargo xtask build-ebpf` (the one pipeline that
//! builds it). Building the agent without it fails here, saying what to run.

use std::path::PathBuf;

fn main() {
    let object = match std::env::var_os("WEFT_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../target/ebpf/bpfel-unknown-none/release/weft-dataplane"),
    };
    println!("cargo:rerun-if-env-changed=WEFT_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.exists() {
        panic!(
            "the eBPF object {} is missing: run `cargo xtask build-ebpf` first \
             (or `cargo xtask build`, which builds both)",
            object.display()
        );
    }
    let object = object.canonicalize().expect("canonical path of the eBPF object");
    println!("cargo:rustc-env=WEFT_EBPF_OBJECT_PATH={}", object.display());
}
