//! The sandbox: a local Kubernetes-driven cluster in network namespaces with weft's
//! dataplane between the nodes. The project's API server runs in its own namespace on
//! the underlay; nodes a and b run `weft-agent`, which learn every node from it and
//! advertise themselves in Flannel's format; nodes c and d are configured exactly as
//! Flannel's vxlan backend configures a node, programmed from the annotations the
//! others published. A pod on each node gets its address from the reference CNI
//! plugins (on weft nodes, through the conflist the agent wrote). Prints the nodes as
//! `kubectl get nodes -o wide` shows them, a reachability matrix, pod-to-pod
//! throughput per kind of pair, the tunnel table and the counters.
//!
//! `--once` checks and tears down (exit status 1 if a pair cannot talk); without it,
//! traffic keeps flowing and the counters are printed until Ctrl-C.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use weft_e2e::cluster::{Cluster, Kind};

#[derive(Parser)]
#[command(about = "weft's local sandbox: nodes, pods and a Flannel peer in network namespaces")]
struct Cli {
    /// Check once and tear down.
    #[arg(long)]
    once: bool,
    /// Seconds of iperf3 per pair.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let handler = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &handler) }?;
    }

    println!("weft sandbox: API server + 4 nodes (a, b: weft; c, d: Flannel's kernel vxlan) ...");
    let mut c = Cluster::new_kube(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel), ("d", Kind::Flannel)])?;
    for n in ["a", "b", "c", "d"] {
        c.add_pod(n)?;
    }
    println!("\n$ kubectl get nodes -o wide\n{}", c.control().kubectl(&["get", "nodes", "-o", "wide"])?);
    print_topology(&c);
    let ok = print_matrix(&c)?;
    print_throughput(&c, cli.seconds)?;
    print_tables(&c)?;

    if cli.once {
        println!("\nsandbox check: {}", if ok { "every pod reaches every pod" } else { "FAILED: some pairs cannot talk" });
        drop(c);
        return if ok { Ok(()) } else { Err(anyhow!("reachability check failed")) };
    }
    println!("\ntraffic keeps flowing (a ping between every pair of pods every 2 s); Ctrl-C tears down.");
    // Nodes whose lease flanneld rejects (a `kubectl annotate` away): skipped, said once.
    let mut rejected = BTreeMap::new();
    while !STOP.load(Ordering::SeqCst) {
        let now = c.sync_flannel()?;
        for (name, r) in now.iter().filter(|(n, r)| rejected.get(*n) != Some(*r)) {
            println!("flanneld (c, d): skipping node {name}: {}", r.why);
        }
        rejected = now;
        for (from, to) in pairs(&c) {
            let _ = weft_e2e::traffic::ping(&c.pod_on(from).ns, c.pod_on(to).ip, 1, "");
        }
        print_counters(&c)?;
        for _ in 0..20 {
            if STOP.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("tearing down");
    Ok(())
}

fn pairs(c: &Cluster) -> Vec<(&str, &str)> {
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    names.iter().flat_map(|&x| names.iter().filter(move |&&y| y != x).map(move |&y| (x, y))).collect()
}

fn print_topology(c: &Cluster) {
    println!("{:<5} {:<8} {:<13} {:<15} {:<18} {:<10} pod", "node", "kind", "public-ip", "podCIDR", "VtepMAC", "tunnel");
    let leases = weft_e2e::kube::leases(&c.control().api).valid;
    for n in &c.nodes {
        let kind = n.kind.name();
        let (ip, mac) = leases
            .get(&n.name)
            .map(|l| (l.public_ip.to_string(), l.vtep_mac.clone()))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        println!(
            "{:<5} {:<8} {:<13} {:<15} {:<18} {:<10} {}",
            n.name,
            kind,
            ip,
            n.pod_cidr.to_string(),
            mac,
            n.tunnel_dev(),
            c.pod_on(&n.name).ip
        );
    }
}

fn print_matrix(c: &Cluster) -> Result<bool> {
    println!("\nreachability, pod (row) -> pod (column), 3 pings each:");
    print!("      ");
    for n in &c.nodes {
        print!("{:>6}", n.name);
    }
    println!();
    let mut all = true;
    for from in &c.nodes {
        print!("{:<6}", from.name);
        for to in &c.nodes {
            if from.name == to.name {
                print!("{:>6}", "-");
                continue;
            }
            let p = weft_e2e::traffic::ping(&c.pod_on(&from.name).ns, c.pod_on(&to.name).ip, 3, "")?;
            all &= p.received == 3;
            print!("{:>6}", format!("{}/3", p.received));
        }
        println!();
    }
    Ok(all)
}

/// iperf3 from one pod to another: received Gbit/s.
pub fn iperf3(c: &Cluster, from: &str, to: &str, seconds: u32) -> Result<f64> {
    let server_pod = c.pod_on(to);
    let mut server = server_pod
        .ns
        .exec("iperf3 -s -1 -p 5201")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = weft_e2e::run(&mut c.pod_on(from).ns.exec(&format!("iperf3 -c {} -p 5201 -t {seconds} -J", server_pod.ip)));
    let _ = server.kill();
    let _ = server.wait();
    let json: serde_json::Value = serde_json::from_slice(&out?.stdout)?;
    let bps = json["end"]["sum_received"]["bits_per_second"].as_f64().ok_or_else(|| anyhow!("no throughput in iperf3 output"))?;
    Ok(bps / 1e9)
}

fn print_throughput(c: &Cluster, seconds: u32) -> Result<()> {
    println!("\npod -> pod TCP throughput (iperf3, {seconds} s, one stream):");
    for (from, to, what) in [
        ("a", "b", "weft -> weft"),
        ("a", "c", "weft -> Flannel"),
        ("c", "a", "Flannel -> weft"),
        ("c", "d", "Flannel -> Flannel (kernel vxlan both ends)"),
    ] {
        let gbps = iperf3(c, from, to, seconds)?;
        println!("  {from} -> {to}  {gbps:>6.2} Gbit/s   {what}");
    }
    Ok(())
}

fn print_tables(c: &Cluster) -> Result<()> {
    let a = c.node("a");
    println!("\nnode a tunnel table ({}):", a.bpffs_dir.join("tunnels").display());
    for (cidr, ep) in a.maps()?.tunnels()? {
        let mac: Vec<String> = ep.vtep_mac.iter().map(|b| format!("{b:02x}")).collect();
        println!(
            "  {:<15} -> {:<13} VNI {} VtepMAC {}",
            cidr.to_string(),
            std::net::Ipv4Addr::from(ep.underlay_ip).to_string(),
            ep.vni,
            mac.join(":")
        );
    }
    let routes = Command::new("ip").args(["-n", &a.ns.name, "route", "show", "dev", "weft0"]).output()?;
    println!("node a routes via weft0:\n{}", indent(&String::from_utf8_lossy(&routes.stdout)));
    print_counters(c)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

fn print_counters(c: &Cluster) -> Result<()> {
    println!("\ncounters (packets):");
    for n in c.nodes.iter().filter(|n| n.kind == Kind::Weft) {
        let counts = n.maps()?.counters()?;
        let shown: Vec<String> = counts
            .iter()
            .filter(|(v, c)| c.packets > 0 || !v.is_drop())
            .map(|(v, c)| format!("{}={}", v.name(), c.packets))
            .collect();
        println!("  node {}: {}", n.name, shown.join("  "));
    }
    Ok(())
}
