//! The ethtool settings weft needs: GRO on the uplink, which XDP decap relies on to
//! aggregate the inner flows (NICs default to it; a veth does not), and GRO, TSO and
//! queue counts on `weft0`'s veth pair, through whose NAPI TC decap's frames pass.
//! rtnetlink cannot set device features or channels, so this is the classic
//! SIOCETHTOOL ioctl (`ethtool -K DEV gro on`, `ethtool -L DEV rx N tx N`).

use std::{ffi::c_void, io};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_SCHANNELS: u32 = 0x3d;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut c_void,
    _pad: [u8; 16],
}

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

fn ethtool<T>(iface: &str, value: &mut T) -> io::Result<()> {
    let bytes = iface.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {iface:?} too long")));
    }
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: (value as *mut T).cast(), _pad: [0; 16] };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: a datagram socket only to carry the ioctl; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `req` and the value it points to outlive the call; callers pass the
    // struct SIOCETHTOOL expects for the command in its first field.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq) };
    let err = io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc < 0 { Err(err) } else { Ok(()) }
}

/// A feature's get and set commands.
#[derive(Clone, Copy)]
pub enum Feature {
    Gro,
    /// Every TSO flavour (`NETIF_F_ALL_TSO`).
    Tso,
}

impl Feature {
    fn commands(self) -> (u32, u32) {
        match self {
            Feature::Gro => (ETHTOOL_GGRO, ETHTOOL_SGRO),
            Feature::Tso => (ETHTOOL_GTSO, ETHTOOL_STSO),
        }
    }
}

/// Whether `feature` is on for `iface`.
pub fn get(iface: &str, feature: Feature) -> io::Result<bool> {
    let mut v = EthtoolValue { cmd: feature.commands().0, data: 0 };
    ethtool(iface, &mut v)?;
    Ok(v.data != 0)
}

/// Turns `feature` on or off; returns whether anything changed.
pub fn set(iface: &str, feature: Feature, on: bool) -> io::Result<bool> {
    if get(iface, feature)? == on {
        return Ok(false);
    }
    let mut v = EthtoolValue { cmd: feature.commands().1, data: u32::from(on) };
    ethtool(iface, &mut v)?;
    Ok(true)
}

/// Turns GRO on or off; returns whether anything changed.
pub fn set_gro(iface: &str, on: bool) -> io::Result<bool> {
    set(iface, Feature::Gro, on)
}

/// Sets `iface`'s rx and tx queue counts to `want`, within what the device allows;
/// returns the count now in use if it changed, `None` if nothing changed.
pub fn set_queues(iface: &str, want: u32) -> io::Result<Option<u32>> {
    let mut ch = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..Default::default() };
    ethtool(iface, &mut ch)?;
    let n = want.min(ch.max_rx).min(ch.max_tx).max(1);
    if ch.rx_count == n && ch.tx_count == n {
        return Ok(None);
    }
    ch.cmd = ETHTOOL_SCHANNELS;
    ch.rx_count = n;
    ch.tx_count = n;
    ethtool(iface, &mut ch)?;
    Ok(Some(n))
}
