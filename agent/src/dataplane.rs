//! Loading weft's programs and attaching them through pinned TCX links.
//!
//! Maps are pinned under the bpffs directory and reused by the next agent (after a
//! layout check, see [`crate::maps::prepare_pins`]). Each program attaches through a
//! TCX link pinned in the same directory: the link, and so forwarding, outlives the
//! agent, and the next agent swaps its own program into that link atomically
//! (`bpf_link_update`), so no packet ever meets an interface without one.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::TcAttachOptions,
        xdp::XdpLink,
    },
};
use aya_log::EbpfLogger;
use thiserror::Error;
use weft_common::maps::{self as spec};

use crate::maps::{Maps, MapsError, PinState, Sizes};

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
    /// Reader of the programs' aya-log ring buffer; `None` when `--bpf-log off`.
    pub logger: Option<EbpfLogger<&'static dyn log::Log>>,
}

impl Dataplane {
    /// Loads the programs into the kernel with maps pinned under `dir`; returns how each
    /// map was found. `log_level` is aya-log's level for the programs (0 = off).
    pub fn load(dir: &Path, log_level: u8, sizes: &Sizes) -> Result<(Self, Vec<(&'static str, PinState)>)> {
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
        Ok((Dataplane { ebpf, maps, dir: dir.to_path_buf(), logger }, pins))
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
        let (_, progs) = SchedClassifier::query_tcx(iface, hook).map_err(|source| DataplaneError::Program {
            name,
            op: format!("querying TCX programs of {iface}"),
            source,
        })?;
        Ok(progs.iter().any(|p| p.id() == id))
    }

    /// Attaches program `name` to `iface`'s `hook` through the link pinned as `pin`.
    ///
    /// A link pinned there by an earlier agent that still serves this interface and
    /// hook gets this program atomically. One that does not (its interface is gone, so
    /// the link is defunct, or `--iface` changed) is unpinned, and a new link is made.
    pub fn attach(&mut self, name: &'static str, iface: &str, hook: TcAttachType, pin: &str) -> Result<Attached> {
        let path = self.dir.join(pin);
        let link_err = |op: &'static str| {
            let path = path.clone();
            move |e: LinkErrorKind| DataplaneError::Link { path, op, source: e }
        };

        if path.exists() {
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
        link.pin(&path).map_err(|e| link_err("pinning")(e.into()))?;
        Ok(Attached::Created)
    }
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
        std::fs::remove_file(&path).map_err(|e| DataplaneError::Link {
            path: path.clone(),
            op: "unpinning",
            source: e.into(),
        })?;
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
