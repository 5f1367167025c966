//! Differential fuzzing of the programs (issue 16): random and mutated frames
//! ([`frames`]) run through each loaded program with `BPF_PROG_TEST_RUN`, each result —
//! return code, the (hook, verdict) counted, the output frame, the NAT and flow state
//! left behind — compared with a reference model of the decision written in plain
//! Rust ([`model`]). Used by `tests/fuzz.rs` (10,000 frames per program) and by
//! `cargo xtask bench -- --fuzz-packets N` (the large run).
//!
//! Programs run in turn on one set of maps, so state one builds (a masqueraded flow,
//! a flow the stack carried) is what the others meet: replies and ICMP errors to the
//! flows masquerade translated, pod replies to flows the stack delivered.

pub mod check;
pub mod frames;
pub mod model;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use weft_common::{
    counters::{Counter, Hook, Verdict},
    fastpath::LocalEndpoint,
    tunnel::{PeerNode, TunnelEndpoint},
};

use self::{
    check::hex,
    frames::{C_IP, C_MAC, GW_A_MAC, POD_A_MAC, POD_A6_MAC, Rng},
    model::{Effect, Expected, NatOut, Prog, World},
};
use crate::testrun::{B_IP, B_MAC, Dataplane, dataplane};

/// The outcome of a run.
pub struct Report {
    pub seed: u64,
    pub packets: u64,
    pub elapsed: Duration,
    /// Per program, per expected verdict ("refused": test_run refused the input).
    pub verdicts: BTreeMap<Prog, BTreeMap<&'static str, u64>>,
    pub mismatches: u64,
    /// The first mismatches, described.
    pub first: Vec<String>,
}

impl Report {
    /// Counts per program and verdict, one line per program.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for (p, v) in &self.verdicts {
            let counts: Vec<String> = v.iter().map(|(k, n)| format!("{k} {n}")).collect();
            s += &format!("  {:<20} {}\n", p.name(), counts.join(", "));
        }
        s
    }
}

/// The seed: `$WEFT_FUZZ_SEED` to replay a run, else the clock.
pub fn seed() -> u64 {
    match std::env::var("WEFT_FUZZ_SEED") {
        Ok(s) => s.parse().expect("WEFT_FUZZ_SEED is a u64"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}

/// The tables the fuzzing installs: node a (test_run's config), nodes b and c, pod
/// 10.244.1.5 on the veth test_run runs on (ifindex 1) and 10.244.1.6 on another.
fn install(dp: &mut Dataplane) -> Result<World> {
    let b = TunnelEndpoint { underlay_ip: B_IP.octets(), vni: 1, vtep_mac: B_MAC, _pad: [0; 2] };
    let c = TunnelEndpoint { underlay_ip: C_IP.octets(), vni: 1, vtep_mac: C_MAC, _pad: [0; 2] };
    let tunnels = vec![(Ipv4Addr::new(10, 244, 2, 0), 24, b), (Ipv4Addr::new(10, 244, 3, 0), 24, c)];
    for (net, prefix, t) in &tunnels {
        dp.maps.set_tunnel(ipnetwork::Ipv4Network::new(*net, *prefix)?, *t)?;
    }
    let peers = BTreeSet::from([B_IP, C_IP]);
    for (ip, mac) in [(B_IP, B_MAC), (C_IP, C_MAC)] {
        dp.maps.set_peer(ip, PeerNode { vtep_mac: mac, ..Default::default() })?;
    }
    let endpoints = BTreeMap::from([
        (Ipv4Addr::new(10, 244, 1, 5), LocalEndpoint { ifindex: 1, mac: POD_A_MAC, gw_mac: GW_A_MAC }),
        (Ipv4Addr::new(10, 244, 1, 6), LocalEndpoint { ifindex: 2, mac: POD_A6_MAC, gw_mac: GW_A_MAC }),
    ]);
    for (ip, e) in &endpoints {
        dp.maps.set_endpoint(*ip, *e)?;
    }
    let no_masq = vec![(Ipv4Addr::new(10, 244, 0, 0), 16), (Ipv4Addr::new(203, 0, 113, 0), 24)];
    let nets: Vec<_> = no_masq.iter().map(|(n, p)| ipnetwork::Ipv4Network::new(*n, *p)).collect::<Result<_, _>>()?;
    dp.maps.set_no_masq(&nets)?;
    let cfg = frames::base_config();
    dp.maps.set_config(cfg)?;
    Ok(World {
        cfg,
        tunnels,
        peers,
        endpoints,
        no_masq,
        stack_flows: BTreeSet::new(),
        nat_out: BTreeMap::new(),
        nat_in: BTreeMap::new(),
    })
}

/// The counters as the kernel has them, per (hook, verdict).
fn all_counters(dp: &Dataplane) -> Result<BTreeMap<(Hook, u32), Counter>> {
    Ok(dp.maps.counters_by_hook()?.into_iter().map(|(h, v, c)| ((h, v.index()), c)).collect())
}

/// Runs `per_program` frames through each program, seeded with `seed`; keeps the
/// first `keep` mismatches described.
pub fn run(per_program: u64, seed: u64, keep: usize) -> Result<Report> {
    let mut dp = dataplane(false);
    let mut world = install(&mut dp)?;
    let mut rng = Rng::new(seed);
    let mut report =
        Report { seed, packets: 0, elapsed: Duration::ZERO, verdicts: BTreeMap::new(), mismatches: 0, first: vec![] };
    // The counters as last known to agree with the kernel.
    let mut known = all_counters(&dp)?;
    let started = Instant::now();
    for i in 0..per_program * Prog::ALL.len() as u64 {
        let prog = Prog::ALL[(i % Prog::ALL.len() as u64) as usize];
        let case = frames::case(&mut rng, &world, prog);
        if case.cfg != world.cfg {
            dp.maps.set_config(case.cfg)?;
            world.cfg = case.cfg;
        }
        let expected = model::expect(&world, prog, &case.frame, case.mark);
        let got =
            if prog == Prog::DecapXdp { dp.try_run_xdp(&case.frame) } else { dp.try_run(prog.name(), &case.frame, case.mark) };
        report.packets += 1;
        let (problem, name) = match (&expected, got) {
            (Expected::Refused, Err(_)) => (None, "refused"),
            (Expected::Refused, Ok((code, _))) => (Some(format!("ran (code {code}), expected test_run to refuse it")), "refused"),
            (Expected::Ran { verdict, .. }, Err(e)) => (Some(format!("test_run failed: {e}")), verdict.name()),
            (Expected::Ran { code, verdict, out, effects }, Ok((got_code, got_out))) => {
                let key = (prog.hook(), verdict.index());
                let now = dp.maps.counter_at(prog.hook(), *verdict).context("reading a counter")?;
                let before = known.get(&key).copied().unwrap_or_default();
                let mut problem = None;
                if now.packets != before.packets + 1 || now.bytes != before.bytes + case.frame.len() as u64 {
                    let after = all_counters(&dp)?;
                    let moved: Vec<String> = after
                        .iter()
                        .filter(|(k, c)| known.get(k).is_none_or(|b| b != *c))
                        .map(|((h, v), _)| format!("({}, {})", h.name(), Verdict::from_index(*v).map_or("?", |v| v.name())))
                        .collect();
                    problem = Some(format!("counted {}, expected ({}, {})", moved.join(" "), prog.hook().name(), verdict.name()));
                    known = after;
                } else {
                    known.insert(key, now);
                }
                if got_code != *code {
                    problem.get_or_insert(format!("return code {}, expected {}", got_code as i32, *code as i32));
                }
                if problem.is_none()
                    && let Some(why) = out.mismatch(&case.frame, &got_out)
                {
                    problem = Some(format!("{why}; output {}", hex(&got_out)));
                }
                // The state the run left, once it is known to be the model's.
                if problem.is_none()
                    && let Err(why) = effects.iter().try_for_each(|e| apply(&mut world, e, &got_out))
                {
                    problem = Some(format!("{why}; output {}", hex(&got_out)));
                }
                (problem, verdict.name())
            }
        };
        *report.verdicts.entry(prog).or_default().entry(name).or_default() += 1;
        if let Some(why) = problem {
            report.mismatches += 1;
            if report.first.len() < keep {
                report.first.push(format!(
                    "{} (flags {:#x}, mark {:#x}{}): {why}\n    expected {}\n    frame {}",
                    prog.name(),
                    world.cfg.flags,
                    case.mark,
                    if world.cfg.abi_version == 0 { ", unconfigured" } else { "" },
                    match &expected {
                        Expected::Refused => "refused by test_run".to_owned(),
                        Expected::Ran { code, verdict, .. } => format!("{} (code {})", verdict.name(), *code as i32),
                    },
                    hex(&case.frame)
                ));
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Applies an effect the model predicted, reading the port the program chose from its
/// output and checking it: in the NAT ranges, its reply tuple not already another
/// flow's.
fn apply(w: &mut World, e: &Effect, out: &[u8]) -> Result<(), String> {
    match e {
        Effect::RememberFlow(f) => {
            w.stack_flows.insert(*f);
        }
        Effect::NatInbound(t) => {
            w.nat_out.entry(*t).or_insert(NatOut::Inbound);
        }
        Effect::NatNew { orig, to, port_at } => {
            let port = match port_at {
                Some(at) => u16::from_be_bytes([out[*at], out[*at + 1]]),
                None => 0,
            };
            let c = &w.cfg;
            let in_range = (c.nat_port_min..=c.nat_port_max).contains(&port)
                || (c.nat_port_max2 != 0 && (c.nat_port_min2..=c.nat_port_max2).contains(&port));
            if port_at.is_some() && !in_range {
                return Err(format!("NAT port {port} outside the configured ranges"));
            }
            // Decap would take the reply for a VXLAN frame.
            if orig.4 == model::UDP && *to == Ipv4Addr::from(c.underlay_ip) && port == c.udp_port {
                return Err(format!("UDP NAT port {port} to the underlay address is the VXLAN port"));
            }
            let reply = model::reply_tuple(orig, *to, port);
            if w.nat_in.contains_key(&reply) {
                return Err(format!("NAT port {port} gives a reply tuple another flow holds"));
            }
            w.nat_out.insert(*orig, NatOut::To(*to, port));
            w.nat_in.insert(reply, (orig.0, orig.2));
        }
    }
    Ok(())
}
