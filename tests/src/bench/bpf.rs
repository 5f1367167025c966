//! What each of weft's BPF programs costs per packet: the kernel's run-time statistics
//! of the programs a cluster's agents attached (`run_time_ns`, `run_cnt`), read before
//! and after a measured run.
//!
//! The statistics are switched on through `BPF_ENABLE_STATS` for the measured run only:
//! they add two clock reads to every program run, which the other figures should not
//! carry, and the kernel switches them off when the fd closes however the bench ends
//! (error, panic, SIGKILL). `kernel.bpf_stats_enabled`, the sysctl a user may have set,
//! is left alone: the kernel counts both switches.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::OwnedFd,
};

use anyhow::{Context, Result, ensure};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        loaded_programs,
    },
    sys::{Stats, enable_stats},
};

use crate::cluster::Cluster;

/// Prefix of weft's program names.
const PROGRAM_PREFIX: &str = "weft_";
/// Prefix of the agents' pin names (`weft_common::maps::links`): every attachment an
/// agent makes, TC or XDP, is a link pinned under its node's bpffs directory.
const LINK_PREFIX: &str = "link_";

/// A program's cumulative counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Counters per program id, with the program's (kernel) name.
pub type Snapshot = BTreeMap<u32, (String, RunStats)>;

/// A measurement in progress: statistics on, the first snapshot taken.
pub struct Probe {
    _stats: OwnedFd,
    ids: BTreeSet<u32>,
    before: Snapshot,
}

impl Probe {
    pub fn start(cluster: &Cluster) -> Result<Probe> {
        let stats = enable_stats(Stats::RunTime).context("enabling BPF run-time statistics (BPF_ENABLE_STATS)")?;
        let ids = attached_programs(cluster)?;
        let before = snapshot(&ids)?;
        Ok(Probe { _stats: stats, ids, before })
    }

    /// Nanoseconds per run of each program that ran, by full name, both nodes' instances
    /// together; the statistics go off again.
    pub fn finish(self) -> Result<Vec<(String, f64)>> {
        let after = snapshot(&self.ids)?;
        let costs = ns_per_run(&self.before, &after);
        ensure!(!costs.is_empty(), "none of the agents' programs ran (ids {:?})", self.ids);
        Ok(costs.into_iter().map(|(name, ns)| (full_name(&name), ns)).collect())
    }
}

/// Ids of the programs behind the links pinned by `cluster`'s agents. Every mode's
/// cluster lives in this kernel (and tests may run beside the bench), so programs are
/// told apart by where their links are pinned, not by name.
fn attached_programs(cluster: &Cluster) -> Result<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    for node in cluster.nodes.iter().filter(|n| n.agent.is_some()) {
        let dir = &node.bpffs_dir;
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
            if !path.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(LINK_PREFIX)) {
                continue;
            }
            let link: FdLink = PinnedLink::from_pin(&path).with_context(|| format!("opening {}", path.display()))?.into();
            ids.insert(link.info().with_context(|| format!("link info of {}", path.display()))?.program_id());
        }
    }
    ensure!(!ids.is_empty(), "no links pinned by the agents of the {} cluster", cluster.id);
    Ok(ids)
}

/// The counters of the weft programs among `ids`.
fn snapshot(ids: &BTreeSet<u32>) -> Result<Snapshot> {
    let mut out = Snapshot::new();
    // A program unloaded while the list is walked (a test's, say) fails to open: skipped;
    // one of ours missing is caught below.
    for info in loaded_programs().filter_map(Result::ok).filter(|p| ids.contains(&p.id())) {
        let name = info.name_as_str().unwrap_or_default();
        if name.starts_with(PROGRAM_PREFIX) {
            let stats = RunStats { run_time_ns: info.run_time().as_nanos() as u64, run_cnt: info.run_count() };
            out.insert(info.id(), (name.to_owned(), stats));
        }
    }
    let missing: Vec<&u32> = ids.iter().filter(|id| !out.contains_key(id)).collect();
    ensure!(missing.is_empty(), "programs {missing:?} not found among the loaded weft programs");
    Ok(out)
}

/// Δrun_time_ns / Δrun_cnt per program name, the deltas summed over the name's
/// instances (one per node); names that did not run are left out.
pub fn ns_per_run(before: &Snapshot, after: &Snapshot) -> Vec<(String, f64)> {
    let mut sums: BTreeMap<&str, RunStats> = BTreeMap::new();
    for (id, (name, a)) in after {
        let Some((_, b)) = before.get(id) else { continue };
        let sum = sums.entry(name).or_default();
        sum.run_time_ns += a.run_time_ns.saturating_sub(b.run_time_ns);
        sum.run_cnt += a.run_cnt.saturating_sub(b.run_cnt);
    }
    sums.into_iter()
        .filter(|(_, s)| s.run_cnt > 0)
        .map(|(name, s)| (name.to_owned(), s.run_time_ns as f64 / s.run_cnt as f64))
        .collect()
}

/// The program's whole name (the kernel keeps 15 bytes of it).
pub fn full_name(name: &str) -> String {
    weft_common::maps::programs::from_kernel_name(name).unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(run_time_ns: u64, run_cnt: u64) -> RunStats {
        RunStats { run_time_ns, run_cnt }
    }

    #[test]
    fn costs_sum_both_nodes_instances() {
        let before: Snapshot = [
            (10, ("weft_encap".to_owned(), stats(1_000, 10))),
            (20, ("weft_encap".to_owned(), stats(0, 0))),
            (11, ("weft_decap".to_owned(), stats(500, 5))),
            (12, ("weft_weft0_ingr".to_owned(), stats(7, 1))),
        ]
        .into();
        let mut after = before.clone();
        after.insert(10, ("weft_encap".to_owned(), stats(4_000, 40)));
        after.insert(20, ("weft_encap".to_owned(), stats(1_000, 20)));
        after.insert(11, ("weft_decap".to_owned(), stats(2_500, 15)));
        // Loaded after the first snapshot: no baseline, left out.
        after.insert(30, ("weft_decap".to_owned(), stats(9_999, 1)));
        assert_eq!(
            ns_per_run(&before, &after),
            vec![("weft_decap".to_owned(), 200.0), ("weft_encap".to_owned(), 4_000.0 / 50.0)]
        );
    }

    #[test]
    fn truncated_names_are_completed() {
        assert_eq!(full_name("weft_weft0_ingr"), "weft_weft0_ingress");
        assert_eq!(full_name("weft_bridge_egr"), "weft_bridge_egress");
        assert_eq!(full_name("weft_decap"), "weft_decap");
        // Not ours (or a prefix of ours that the kernel would not show): as it is.
        assert_eq!(full_name("weft_dec"), "weft_dec");
        assert_eq!(full_name("other"), "other");
    }
}
