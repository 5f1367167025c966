//! The map ABI shared by weft's eBPF programs and its agent.
//!
//! Everything the kernel and user space must agree on lives here and only here:
//! map names, pin names, key and value layouts, verdict numbers and wire constants.
//! Values are `#[repr(C)]` with explicit padding and no `bool`, `Option` or enum, so
//! that the layout is the same on both sides and `bpftool map dump` shows every byte
//! as a named field. Sizes are checked with `const` asserts; a change of layout is a
//! change of [`ABI_VERSION`], and the agent replaces pinned maps whose layout differs.
#![no_std]

pub mod config;
pub mod counters;
pub mod fastpath;
pub mod maps;
pub mod nat;
pub mod tunnel;
pub mod wire;

/// Version of the layouts and numbering in this crate, written into
/// [`config::DataplaneConfig::abi_version`] (the config's first field in every
/// version). An agent that finds pinned maps of another version replaces them all.
/// 2: counters per (hook, verdict). 3: the node's name in the config; masquerade.
pub const ABI_VERSION: u32 = 3;

/// A MAC address as it appears on the wire.
pub type MacAddr = [u8; 6];

/// An IPv4 address in network byte order (`Ipv4Addr::octets()`).
pub type Ipv4Octets = [u8; 4];
