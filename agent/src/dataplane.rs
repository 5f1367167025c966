//! Loading weft's programs and attaching them through pinned TCX links, or clsact
//! filters on kernels without TCX.
//!
//! Maps are pinned under the bpffs directory and reused by the next agent (after a
//! layout check, see [`crate::maps::prepare_pins`]). Each attachment is pinned in the
//! same directory and outlives the agent, and so does forwarding; the next agent swaps
//! its own program in atomically, so no packet ever meets an interface without one:
//! - TCX (Linux 6.6+): the pin is the link; the swap is `bpf_link_update`.
//! - netlink (clsact, older kernels): the filter sits in weft's slot
//!   ([`crate::tc_netlink`]) and the pin is its program; the swap is a filter change in
//!   that slot, which cls_bpf makes under RCU.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, ProgramError, ProgramInfo, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError},
        xdp::XdpLink,
    },
};
use aya_log::EbpfLogger;
use thiserror::Error;
use weft_common::maps::{self as spec};

use crate::{
    maps::{Maps, MapsError, PinState, Sizes},
    tc_netlink,
};

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("program {name}: {op}")]
    Program {
        name: &'static str,
        op: String,
        #[source]
        source: ProgramError,
    },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("pinned link {path}: {op}")]
    Link {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: LinkErrorKind,
    },
    #[error("starting the eBPF log reader")]
    Logger(#[source] aya_log::Error),
    #[error("clsact filters of {iface}: {op}")]
    Filters {
        iface: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Error)]
pub enum LinkErrorKind {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Pin(#[from] aya::pin::PinError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

type Result<T> = std::result::Result<T, DataplaneError>;

/// How TC programs reach their hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcPath {
    /// TCX links (Linux 6.6+).
    Tcx,
    /// cls_bpf filters on a clsact qdisc, made over netlink.
    Netlink,
}

impl TcPath {
    /// TCX where the kernel has it: before 6.6, asking for `lo`'s TCX programs fails.
    pub fn detect() -> TcPath {
        match SchedClassifier::query_tcx("lo", TcAttachType::Ingress) {
            Ok(_) => TcPath::Tcx,
            Err(_) => TcPath::Netlink,
        }
    }
}

/// How an attach went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, pinned by this agent.
    Created,
    /// The link pinned by an earlier agent now runs this agent's program.
    Replaced,
}

pub struct Dataplane {
    ebpf: Ebpf,
    pub maps: Maps,
    dir: PathBuf,
    pub tc: TcPath,
    /// Reader of the programs' aya-log ring buffer; `None` when `--bpf-log off`.
    pub logger: Option<EbpfLogger<&'static dyn log::Log>>,
}

impl Dataplane {
    /// Loads the programs into the kernel with maps pinned under `dir`; returns how each
    /// map was found. `log_level` is aya-log's level for the programs (0 = off).
    pub fn load(dir: &Path, log_level: u8, sizes: &Sizes, tc: TcPath) -> Result<(Self, Vec<(&'static str, PinState)>)> {
        let pins = crate::maps::prepare_pins(dir, sizes)?;
        let mut loader = EbpfLoader::new();
        for s in spec::ALL {
            loader.map_pin_path(s.name, dir.join(s.pin));
            let sized = sizes.apply(s);
            if sized.max_entries != s.max_entries {
                loader.map_max_entries(s.name, sized.max_entries);
            }
        }
        loader.override_global(aya_log::LEVEL, &log_level, true);
        let mut ebpf = loader.load(crate::DATAPLANE_OBJECT).map_err(DataplaneError::Load)?;
        let logger = if log_level > 0 { Some(EbpfLogger::init(&mut ebpf).map_err(DataplaneError::Logger)?) } else { None };
        for name in [
            spec::programs::ENCAP,
            spec::programs::DECAP,
            spec::programs::POD_EGRESS,
            spec::programs::POD_INGRESS,
            spec::programs::WEFT0_INGRESS,
            spec::programs::BRIDGE_EGRESS,
            spec::programs::MASQ,
            spec::programs::PROBE_DECAP_L4_UDP,
        ] {
            let prog = classifier(&mut ebpf, name)?;
            prog.load().map_err(|source| DataplaneError::Program { name, op: "loading (verifier)".into(), source })?;
        }
        let maps = Maps::take(&mut ebpf)?;
        Ok((Dataplane { ebpf, maps, dir: dir.to_path_buf(), tc, logger }, pins))
    }

    /// Runs TC program `name` once on `frame` (`BPF_PROG_TEST_RUN`: nothing is sent);
    /// returns its return code.
    pub fn test_run(&mut self, name: &'static str, frame: &[u8]) -> Result<i32> {
        let prog = classifier(&mut self.ebpf, name)?;
        // Room for a frame the program grows.
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
        let run = prog.test_run(opts).map_err(|source| DataplaneError::Program { name, op: "test run".into(), source })?;
        Ok(run.return_value as i32)
    }

    pub fn link_pin(&self, pin: &str) -> PathBuf {
        self.dir.join(pin)
    }

    /// The kernel's id of one of our loaded programs.
    pub fn program_id(&mut self, name: &'static str) -> Result<u32> {
        let prog = classifier(&mut self.ebpf, name)?;
        let info = prog.info().map_err(|source| DataplaneError::Program { name, op: "reading info".into(), source })?;
        Ok(info.id())
    }

    /// Whether program `name` (this agent's instance) runs on `iface`'s hook.
    pub fn is_attached(&mut self, name: &'static str, iface: &str, hook: TcAttachType) -> Result<bool> {
        let id = self.program_id(name)?;
        Ok(self.attached_ids(name, iface, hook)?.contains(&id))
    }

    /// The ids of the programs on `iface`'s `hook` (for the netlink path: in weft's slot).
    fn attached_ids(&self, name: &'static str, iface: &str, hook: TcAttachType) -> Result<Vec<u32>> {
        match self.tc {
            TcPath::Tcx => {
                let (_, progs) = SchedClassifier::query_tcx(iface, hook).map_err(|source| DataplaneError::Program {
                    name,
                    op: format!("querying TCX programs of {iface}"),
                    source,
                })?;
                Ok(progs.iter().map(|p| p.id()).collect())
            }
            TcPath::Netlink => {
                let filters_err = |op| {
                    let iface = iface.to_owned();
                    move |source| DataplaneError::Filters { iface, op, source }
                };
                let index = nix::net::if_::if_nametoindex(iface).map_err(|e| filters_err("finding the interface")(e.into()))?;
                let filters = tc_netlink::filters(index, hook).map_err(filters_err("listing"))?;
                Ok(filters.iter().filter(|f| f.is_weft_slot()).map(|f| f.prog_id).collect())
            }
        }
    }

    /// Attaches program `name` to `iface`'s `hook` through the link pinned as `pin`.
    ///
    /// A link pinned there by an earlier agent that still serves this interface and
    /// hook gets this program atomically. One that does not (its interface is gone, so
    /// the link is defunct, or `--iface` changed) is unpinned, and a new link is made.
    pub fn attach(&mut self, name: &'static str, iface: &str, hook: TcAttachType, pin: &str) -> Result<Attached> {
        match self.tc {
            TcPath::Tcx => self.attach_tcx(name, iface, hook, pin),
            TcPath::Netlink => self.attach_netlink(name, iface, hook, pin),
        }
    }

    fn attach_tcx(&mut self, name: &'static str, iface: &str, hook: TcAttachType, pin: &str) -> Result<Attached> {
        let path = self.dir.join(pin);
        let link_err = |op: &'static str| {
            let path = path.clone();
            move |e: LinkErrorKind| DataplaneError::Link { path, op, source: e }
        };

        let netlink_pin = path.exists() && pinned_program(&path).is_some();
        if path.exists() && !netlink_pin {
            let old = PinnedLink::from_pin(&path).map_err(|e| link_err("opening")(e.into()))?;
            let old: FdLink = old.into();
            let old_prog = old.info().map_err(|e| link_err("reading info")(e.into()))?.program_id();
            let (_, progs) = SchedClassifier::query_tcx(iface, hook).map_err(|source| DataplaneError::Program {
                name,
                op: format!("querying TCX programs of {iface}"),
                source,
            })?;
            if progs.iter().any(|p| p.id() == old_prog) {
                let prog = classifier(&mut self.ebpf, name)?;
                let link = old.try_into().map_err(|e: LinkError| link_err("converting")(e.into()))?;
                let id = prog.attach_to_link(link).map_err(|e| link_err("replacing the program (bpf_link_update)")(e.into()))?;
                // The pin holds the link; aya would keep an fd for each re-attach.
                drop(prog.take_link(id).map_err(|e| link_err("releasing the link")(e.into()))?);
                return Ok(Attached::Replaced);
            }
            tracing::warn!(path = %path.display(), iface, "pinned link no longer serves {iface}: replacing it");
            std::fs::remove_file(&path).map_err(|e| link_err("unpinning a defunct link")(e.into()))?;
        }

        let prog = classifier(&mut self.ebpf, name)?;
        // First in the chain: VXLAN for us must be decapsulated before other programs
        // judge the outer packet; we hand on everything else with TCX_NEXT.
        let id = prog
            .attach_with_options(iface, hook, TcAttachOptions::TcxOrder(LinkOrder::first()))
            .map_err(|source| DataplaneError::Program { name, op: format!("attaching to {iface} ({hook:?})"), source })?;
        let link = prog.take_link(id).map_err(|e| link_err("taking the new link")(e.into()))?;
        let link: FdLink = link.try_into().map_err(|e: LinkError| link_err("converting")(e.into()))?;
        if netlink_pin {
            // An agent on the netlink path left its filter: it goes once the link runs.
            unpin(&path).map_err(|e| link_err("removing the netlink path's filter")(e.into()))?;
        }
        link.pin(&path).map_err(|e| link_err("pinning")(e.into()))?;
        Ok(Attached::Created)
    }

    /// As [`Dataplane::attach`], through a clsact filter in weft's slot: an earlier
    /// agent's filter there gets this program (a change, not a new filter); otherwise
    /// a new filter is made. The program is pinned as `pin`, for the next agent,
    /// rollback and uninstall.
    fn attach_netlink(&mut self, name: &'static str, iface: &str, hook: TcAttachType, pin: &str) -> Result<Attached> {
        let path = self.dir.join(pin);
        let link_err = |op: &'static str| {
            let path = path.clone();
            move |e: LinkErrorKind| DataplaneError::Link { path, op, source: e }
        };
        let prog_err = |op: String| move |source| DataplaneError::Program { name, op, source };
        match tc::qdisc_add_clsact(iface) {
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other.map_err(|e| prog_err(format!("adding clsact to {iface}"))(e.into()))?,
        }
        let prog = classifier(&mut self.ebpf, name)?;
        let slot = SchedClassifierLink::attached(iface, hook, tc_netlink::PRIORITY, tc_netlink::HANDLE, None)
            .map_err(|e| link_err("finding the interface")(e.into()))?;
        let (id, how) = match prog.attach_to_link(slot) {
            Ok(id) => (id, Attached::Replaced),
            Err(ProgramError::TcError(TcError::NetlinkError(e))) if e.raw_os_error() == Some(libc::ENOENT) => {
                let opts = NlOptions { priority: tc_netlink::PRIORITY, handle: tc_netlink::HANDLE, classid: None };
                let id = prog
                    .attach_with_options(iface, hook, TcAttachOptions::Netlink(opts))
                    .map_err(prog_err(format!("attaching to {iface} ({hook:?}, clsact)")))?;
                (id, Attached::Created)
            }
            Err(e) => return Err(prog_err(format!("replacing the program on {iface} ({hook:?}, clsact)"))(e)),
        };
        // The filter outlives the agent, as a pinned link does: aya would remove it
        // when the link or the program is dropped.
        std::mem::forget(prog.take_link(id).map_err(|e| link_err("taking the filter")(e.into()))?);
        if path.exists() {
            // The earlier agent's program (its filter now runs ours), or a TCX link
            // (unpinning it detaches it: the filter now serves the hook).
            std::fs::remove_file(&path).map_err(|e| link_err("replacing the pin")(e.into()))?;
        }
        prog.pin(&path).map_err(|e| link_err("pinning the program")(e.into()))?;
        Ok(how)
    }
}

/// The program pinned at `path`, if it is one (the netlink path pins programs where
/// TCX pins links). The kernel's info call answers for links too, so the object's
/// kind comes from its fdinfo, which names a `prog_type` only for programs.
fn pinned_program(path: &Path) -> Option<ProgramInfo> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    const BPF_OBJ_GET: libc::c_long = 7;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags, path_fd.
    let mut attr = [0u64; 3];
    attr[0] = cpath.as_ptr() as u64;
    // SAFETY: BPF_OBJ_GET reads `attr` and the path it points to, and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), std::mem::size_of_val(&attr)) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the fd was just returned to us and nothing else owns it.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    if !fdinfo.lines().any(|l| l.starts_with("prog_type:")) {
        return None;
    }
    ProgramInfo::from_pin(path).ok()
}

/// Removes an attachment's pin: a link pin detaches its program as the last reference
/// goes; a program pin (netlink path) first loses the filters that run it. Rollback,
/// uninstall and the agent's own detaches all come through here.
pub fn unpin(path: &Path) -> io::Result<()> {
    if let Some(info) = pinned_program(path) {
        for f in tc_netlink::all_filters()?.iter().filter(|f| f.prog_id == info.id()) {
            tc_netlink::delete(f)?;
        }
    }
    std::fs::remove_file(path)
}

impl Dataplane {
    /// The XDP program, through the verifier on first use only: `--decap tc` never
    /// loads it, so a kernel that rejects it still gets the TC dataplane.
    fn loaded_xdp(&mut self) -> Result<&mut Xdp> {
        let name = spec::programs::DECAP_XDP;
        let prog = xdp(&mut self.ebpf)?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| DataplaneError::Program { name, op: "loading (verifier)".into(), source })?;
        }
        Ok(prog)
    }

    /// The kernel's id of our XDP program.
    pub fn xdp_program_id(&mut self) -> Result<u32> {
        let name = spec::programs::DECAP_XDP;
        let info =
            xdp(&mut self.ebpf)?.info().map_err(|source| DataplaneError::Program { name, op: "reading info".into(), source })?;
        Ok(info.id())
    }

    /// Attaches the XDP decap program to `iface` in native (driver) mode through the
    /// link pinned as `pin`, as [`Dataplane::attach`] does for TC: a pinned link that
    /// still serves `iface` (its program is the one at the driver hook, per
    /// `attached_prog`) gets our program atomically; otherwise a new link is made.
    /// Fails if the driver has no native XDP: generic XDP would run after GRO and
    /// linearise every aggregate, slower than TC.
    pub fn attach_xdp(&mut self, iface: &str, attached_prog: Option<u32>, pin: &str) -> Result<Attached> {
        let name = spec::programs::DECAP_XDP;
        let path = self.dir.join(pin);
        let link_err = |op: &'static str| {
            let path = path.clone();
            move |e: LinkErrorKind| DataplaneError::Link { path, op, source: e }
        };
        if path.exists() {
            let old: FdLink = PinnedLink::from_pin(&path).map_err(|e| link_err("opening")(e.into()))?.into();
            let old_prog = old.info().map_err(|e| link_err("reading info")(e.into()))?.program_id();
            if attached_prog == Some(old_prog) {
                let link: XdpLink = old.try_into().map_err(|e: LinkError| link_err("converting")(e.into()))?;
                let prog = self.loaded_xdp()?;
                let id = prog.attach_to_link(link).map_err(|e| link_err("replacing the program (bpf_link_update)")(e.into()))?;
                drop(prog.take_link(id).map_err(|e| link_err("releasing the link")(e.into()))?);
                return Ok(Attached::Replaced);
            }
            tracing::warn!(path = %path.display(), iface, "pinned XDP link no longer serves {iface}: replacing it");
            std::fs::remove_file(&path).map_err(|e| link_err("unpinning a defunct link")(e.into()))?;
        }
        let prog = self.loaded_xdp()?;
        let id = prog.attach(iface, XdpMode::Driver).map_err(|source| DataplaneError::Program {
            name,
            op: format!("attaching to {iface} (native XDP)"),
            source,
        })?;
        let link = prog.take_link(id).map_err(|e| link_err("taking the new link")(e.into()))?;
        let link: FdLink = link.try_into().map_err(|e: LinkError| link_err("converting")(e.into()))?;
        link.pin(&path).map_err(|e| link_err("pinning")(e.into()))?;
        Ok(Attached::Created)
    }

    /// Removes a pinned link, if any: the last reference goes, so its program leaves
    /// the interface (for XDP decap: TC decap, always attached, takes over).
    pub fn detach_pinned(&self, pin: &str) -> Result<bool> {
        let path = self.dir.join(pin);
        if !path.exists() {
            return Ok(false);
        }
        unpin(&path).map_err(|e| DataplaneError::Link { path: path.clone(), op: "unpinning", source: e.into() })?;
        Ok(true)
    }
}

fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let name = spec::programs::DECAP_XDP;
    let prog = ebpf.program_mut(name).ok_or(DataplaneError::MissingProgram(name))?;
    prog.try_into().map_err(|source| DataplaneError::Program { name, op: "typing as XDP".into(), source })
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    let prog = ebpf.program_mut(name).ok_or(DataplaneError::MissingProgram(name))?;
    prog.try_into().map_err(|source| DataplaneError::Program { name, op: "typing as classifier".into(), source })
}
