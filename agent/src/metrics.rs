//! `GET /metrics`: Prometheus text (format 0.0.4), collected at scrape time from the
//! pinned maps (what the programs count, what the maps hold) and the agent's state.
//!
//! The maps are opened from their pins on every scrape rather than shared with the
//! event loop: a scrape never waits on the agent, and reports the dataplane even when
//! the loop is stuck. Names follow Prometheus' conventions: `weft_` prefix, `_total`
//! on counters, base units (bytes, seconds).

use std::{path::Path, time::Instant};

use prometheus::{
    Encoder, TextEncoder,
    proto::{Counter as PCounter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};
use weft_common::{
    ABI_VERSION,
    counters::{Action, Counter, Hook, Verdict},
    maps as spec,
};

use crate::{healthz::Health, maps::Maps};

/// Which number of a [`Counter`] a family reports.
type CounterValue = fn(&Counter) -> u64;

/// One family's samples: (labels, value).
type Samples<'a> = Vec<(Vec<(&'static str, &'a str)>, f64)>;

fn family(name: &str, help: &str, kind: MetricType, samples: Samples) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    let metrics = samples
        .into_iter()
        .map(|(labels, value)| {
            let mut m = Metric::default();
            m.set_label(
                labels
                    .into_iter()
                    .map(|(k, v)| {
                        let mut l = LabelPair::default();
                        l.set_name(k.to_owned());
                        l.set_value(v.to_owned());
                        l
                    })
                    .collect(),
            );
            match kind {
                MetricType::COUNTER => {
                    let mut c = PCounter::default();
                    c.set_value(value);
                    m.set_counter(c);
                }
                _ => {
                    let mut g = Gauge::default();
                    g.set_value(value);
                    m.set_gauge(g);
                }
            }
            m
        })
        .collect();
    f.set_metric(metrics);
    f
}

/// The body of `/metrics`.
pub fn render(bpffs_dir: &Path, health: &Health) -> String {
    let mut families = own_state(health);
    // The dataplane: left out while no agent has pinned the maps yet.
    if let Ok(maps) = Maps::open_pinned(bpffs_dir) {
        families.extend(dataplane(&maps, bpffs_dir));
    }
    // The encoder refuses a family without samples (a map that could not be read).
    families.retain(|f| !f.get_metric().is_empty());
    let mut out = Vec::new();
    match TextEncoder::new().encode(&families, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("# encoding failed: {e}\n"),
    }
}

/// What the agent knows of itself: build, health, resyncs, skipped nodes, API errors.
fn own_state(health: &Health) -> Vec<MetricFamily> {
    let own = health.snapshot(Instant::now());
    let abi = ABI_VERSION.to_string();
    // Every reason, zero or not: a series that appears only on the first skip hides
    // the change from rate() and alerts.
    let mut skipped: Samples = crate::annotations::Skip::LABELS
        .iter()
        .map(|reason| (vec![("reason", *reason)], own.skipped.get(reason).copied().unwrap_or(0) as f64))
        .collect();
    // Usable peers the maps had no room for (`--max-nodes`).
    skipped.push((vec![("reason", "over_limit")], own.over_limit as f64));
    vec![
        family(
            "weft_build_info",
            "The agent's version and map ABI version; always 1.",
            MetricType::GAUGE,
            vec![(vec![("version", env!("CARGO_PKG_VERSION")), ("abi_version", &abi)], 1.0)],
        ),
        family(
            "weft_healthy",
            "1 while resyncs succeed (what /healthz reports), else 0.",
            MetricType::GAUGE,
            vec![(vec![], f64::from(u8::from(own.healthy)))],
        ),
        family(
            "weft_resync_age_seconds",
            "Seconds since the last successful resync of links, maps and routes.",
            MetricType::GAUGE,
            vec![(vec![], own.resync_age.as_secs_f64())],
        ),
        family(
            "weft_api_errors_total",
            "Errors watching the API server (each retried).",
            MetricType::COUNTER,
            vec![(vec![], own.api_errors as f64)],
        ),
        family(
            "weft_peers_skipped",
            "Nodes left out of the tunnel table, per reason (over_limit: past --max-nodes).",
            MetricType::GAUGE,
            skipped,
        ),
        family(
            "weft_reassembled_delivered_total",
            "VXLAN datagrams the underlay fragmented, reassembled by the stack and delivered into weft0 by the agent (the slow path; the programs count first fragments as verdict tunnel_fragment).",
            MetricType::COUNTER,
            vec![(vec![], health.reassembly().delivered() as f64)],
        ),
        family(
            "weft_reassembled_dropped_total",
            "Reassembled VXLAN datagrams the agent dropped, per reason (decap's rules).",
            MetricType::COUNTER,
            crate::reassembly::Reject::ALL
                .iter()
                .map(|r| (vec![("reason", r.name())], health.reassembly().rejected(*r) as f64))
                .collect(),
        ),
        family(
            "weft_tunnel_socket_bound",
            "1 while the agent's UDP socket holds the tunnel port (for reassembled outer fragments), else 0.",
            MetricType::GAUGE,
            vec![(vec![], f64::from(u8::from(health.reassembly().bound())))],
        ),
        family(
            "weft_nat_reclaimed_total",
            "NAT entries the collector removed: flows past their timeout (expired), reply entries whose flow is gone (orphan).",
            MetricType::COUNTER,
            vec![
                (vec![("reason", "expired")], own.nat_reclaimed.0 as f64),
                (vec![("reason", "orphan")], own.nat_reclaimed.1 as f64),
            ],
        ),
    ]
}

/// What the pinned maps say: packets and bytes per hook, entries against capacity.
fn dataplane(maps: &Maps, bpffs_dir: &Path) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    if let Ok(counts) = maps.counters_by_hook() {
        out.extend(counters(&counts));
    }
    let entries = [
        (spec::TUNNELS, maps.tunnels().map(|m| m.len())),
        (spec::PEERS, maps.peers().map(|m| m.len())),
        (spec::ENDPOINTS, maps.endpoints().map(|m| m.len())),
        (spec::STACK_FLOWS, maps.stack_flows().map(|m| m.len())),
        // Masquerade's: the flows, their reply entries (LRU: full means the least
        // recently used flows are being evicted), the non-masquerade list.
        (spec::NAT_OUT, maps.nat_out().map(|m| m.len())),
        (spec::NAT_IN, maps.nat_in().map(|m| m.len())),
        (spec::NO_MASQ, maps.no_masq().map(|m| m.len())),
    ];
    // Capacity as pinned (`--nat-max-entries` sizes the NAT maps).
    let capacity =
        |s: &spec::MapSpec| aya::maps::MapInfo::from_pin(bpffs_dir.join(s.pin)).map(|i| i.max_entries()).unwrap_or(s.max_entries);
    let known: Vec<(&str, usize, u32)> =
        entries.iter().filter_map(|(s, n)| n.as_ref().ok().map(|n| (s.pin, *n, capacity(s)))).collect();
    let used = known.iter().map(|(map, n, _)| (vec![("map", *map)], *n as f64)).collect();
    // `peers`' entries are the nodes this node tunnels to (and accepts VXLAN from).
    out.push(family("weft_map_entries", "Entries in each pinned map.", MetricType::GAUGE, used));
    let cap = known.iter().map(|(map, _, max)| (vec![("map", *map)], f64::from(*max))).collect();
    out.push(family("weft_map_capacity_entries", "Capacity of each pinned map, in entries.", MetricType::GAUGE, cap));
    out
}

/// Forwarded (passed on or redirected) per hook and verdict; dropped per hook and
/// reason; each in packets and in bytes (as each program saw the packet).
fn counters(counts: &[(Hook, Verdict, Counter)]) -> Vec<MetricFamily> {
    let units: [(&str, &str, CounterValue); 2] = [("packets", "Packets", |c| c.packets), ("bytes", "Bytes", |c| c.bytes)];
    let mut out = Vec::new();
    for (unit, what, value) in units {
        let forwarded = counts
            .iter()
            .filter(|(_, v, _)| v.action() != Action::Drop)
            .map(|(h, v, c)| (vec![("hook", h.name()), ("action", v.action().name()), ("verdict", v.name())], value(c) as f64))
            .collect();
        out.push(family(
            &format!("weft_forwarded_{unit}_total"),
            &format!("{what} the programs passed on or redirected, per hook and verdict."),
            MetricType::COUNTER,
            forwarded,
        ));
        let dropped = counts
            .iter()
            .filter_map(|(h, v, c)| v.drop_reason().map(|r| (vec![("hook", h.name()), ("reason", r.name())], value(c) as f64)))
            .collect();
        out.push(family(
            &format!("weft_dropped_{unit}_total"),
            &format!("{what} the programs dropped, per hook and reason."),
            MetricType::COUNTER,
            dropped,
        ));
    }
    out
}
