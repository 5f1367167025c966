//! The allocator's own state, for its health port: `/metrics` in Prometheus'
//! conventions (`weft_allocator_` prefix, `_total` on counters), and what
//! `/readyz` says.

use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, TextEncoder,
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

#[derive(Default, Debug)]
struct State {
    leader: bool,
    terms: u64,
    assigned: u64,
    conflicts: u64,
    api_errors: u64,
    /// Of the current term's view.
    nodes_assigned: u64,
    nodes_waiting: u64,
    nodes_exhausted: u64,
    used: u64,
    capacity: u64,
    standing_aside: Option<String>,
}

/// Shared between the election loop, the controller and the health port.
#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<State>>);

impl Stats {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_leader(&self, leader: bool) {
        let mut s = self.state();
        if leader && !s.leader {
            s.terms += 1;
        }
        s.leader = leader;
        if !leader {
            (s.nodes_assigned, s.nodes_waiting, s.nodes_exhausted, s.used) = (0, 0, 0, 0);
        }
    }

    pub fn assigned(&self) {
        self.state().assigned += 1;
    }

    pub fn conflict(&self) {
        self.state().conflicts += 1;
    }

    pub fn api_error(&self) {
        self.state().api_errors += 1;
    }

    pub fn set_capacity(&self, capacity: u64) {
        self.state().capacity = capacity;
    }

    pub fn set_view(&self, assigned: u64, waiting: u64, exhausted: u64, used: u64, capacity: u64) {
        let mut s = self.state();
        (s.nodes_assigned, s.nodes_waiting, s.nodes_exhausted, s.used, s.capacity) =
            (assigned, waiting, exhausted, used, capacity);
    }

    /// Records why the allocator stands aside; true the first time.
    pub fn set_standing_aside(&self, why: &str) -> bool {
        let mut s = self.state();
        let first = s.standing_aside.is_none();
        s.standing_aside.get_or_insert_with(|| why.to_string());
        first
    }

    pub fn standing_aside(&self) -> bool {
        self.state().standing_aside.is_some()
    }

    /// `/readyz`: `None` when ready (leading or standing by), else why not.
    pub fn not_ready(&self) -> Option<String> {
        self.state().standing_aside.as_ref().map(|why| format!("standing aside: {why}\n"))
    }

    pub fn render(&self) -> String {
        let s = self.state();
        let gauge = |v: u64| (MetricType::GAUGE, v);
        let counter = |v: u64| (MetricType::COUNTER, v);
        let families = [
            family(
                "weft_allocator_leader",
                "Whether this replica holds the Lease and allocates (1) or stands by (0).",
                &[(&[], gauge(u64::from(s.leader)))],
            ),
            family("weft_allocator_leader_terms_total", "Terms of leadership this replica has won.", &[(&[], counter(s.terms))]),
            family("weft_allocator_assignments_total", "podCIDRs this replica wrote to Nodes.", &[(&[], counter(s.assigned))]),
            family(
                "weft_allocator_write_conflicts_total",
                "podCIDR writes the API server refused because the Node had changed (409) or had a podCIDR (422).",
                &[(&[], counter(s.conflicts))],
            ),
            family("weft_allocator_api_errors_total", "API server errors (each retried).", &[(&[], counter(s.api_errors))]),
            family(
                "weft_allocator_nodes",
                "Nodes in the leader's view: with a podCIDR, without one, and without one for want of a free block.",
                &[
                    (&[("state", "assigned")], gauge(s.nodes_assigned)),
                    (&[("state", "waiting")], gauge(s.nodes_waiting)),
                    (&[("state", "exhausted")], gauge(s.nodes_exhausted)),
                ],
            ),
            family(
                "weft_allocator_subnets",
                "Blocks between SubnetMin and SubnetMax: in use (by any Node's podCIDR) and free, in the leader's view.",
                &[(&[("state", "used")], gauge(s.used)), (&[("state", "free")], gauge(s.capacity.saturating_sub(s.used)))],
            ),
            family(
                "weft_allocator_standing_aside",
                "1 once another allocator was seen assigning podCIDRs: this one writes no more.",
                &[(&[], gauge(u64::from(s.standing_aside.is_some())))],
            ),
        ];
        let mut out = Vec::new();
        match TextEncoder::new().encode(&families, &mut out) {
            Ok(()) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => format!("# encoding failed: {e}\n"),
        }
    }
}

type Sample<'a> = (&'a [(&'a str, &'a str)], (MetricType, u64));

fn family(name: &str, help: &str, samples: &[Sample]) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(samples[0].1.0);
    f.set_metric(
        samples
            .iter()
            .map(|(labels, (kind, value))| {
                let mut m = Metric::default();
                m.set_label(
                    labels
                        .iter()
                        .map(|(k, v)| {
                            let mut l = LabelPair::default();
                            l.set_name((*k).into());
                            l.set_value((*v).into());
                            l
                        })
                        .collect(),
                );
                if *kind == MetricType::COUNTER {
                    let mut c = Counter::default();
                    c.set_value(*value as f64);
                    m.set_counter(c);
                } else {
                    let mut g = Gauge::default();
                    g.set_value(*value as f64);
                    m.set_gauge(g);
                }
                m
            })
            .collect(),
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let s = Stats::default();
        s.set_leader(true);
        s.assigned();
        s.set_view(3, 1, 1, 3, 3);
        let text = s.render();
        for line in [
            "weft_allocator_leader 1",
            "weft_allocator_leader_terms_total 1",
            "weft_allocator_assignments_total 1",
            "weft_allocator_nodes{state=\"exhausted\"} 1",
            "weft_allocator_subnets{state=\"free\"} 0",
            "weft_allocator_standing_aside 0",
            "# TYPE weft_allocator_assignments_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(s.not_ready(), None);
        assert!(s.set_standing_aside("x") && !s.set_standing_aside("y"));
        assert_eq!(s.not_ready().as_deref(), Some("standing aside: x\n"));
    }
}
