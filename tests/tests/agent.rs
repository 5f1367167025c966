//! The agent's life: restarts that keep forwarding, node-table edits while running,
//! and start-up failures that say what is wrong and leave nothing half-configured.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use aya::programs::TcAttachType;
use nix::sys::signal::Signal;
use weft_common::{ABI_VERSION, config::DataplaneConfig, counters::Verdict, maps as spec};
use weft_e2e::{
    agent::run_to_exit,
    cluster::{Cluster, Kind},
    netns::Netns,
    traffic::{ping, ping_ok},
    wait_for,
};

fn cluster() -> Cluster {
    let mut c = Cluster::new(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel)]).expect("cluster");
    for n in ["a", "b", "c"] {
        c.add_pod(n).expect("CNI ADD");
    }
    c
}

/// Ids of the programs attached to `iface`'s TCX hook inside `ns`.
fn tcx_programs(ns: &Netns, iface: &'static str, hook: TcAttachType) -> Result<Vec<u32>> {
    Ok(ns.tc_programs(iface, hook)?.into_iter().map(|(id, _)| id).collect())
}

/// Pod on each `from` node reaches the pod on its `to` node; the agents' state on failure.
fn pods_reach(c: &Cluster, pairs: &[(&str, &str)]) -> Result<()> {
    for (from, to) in pairs {
        ping_ok(&c.pod_on(from).ns, c.pod_on(to).ip, 3).map_err(|e| anyhow!("{from} -> {to}: {e}\n{}", c.logs()))?;
    }
    Ok(())
}

fn link_exists(ns: &Netns, name: &str) -> bool {
    ns.ip(&format!("link show {name}")).is_ok()
}

/// Stopping the agent leaves forwarding in place; the next agent adopts the pinned
/// maps and swaps its programs into the pinned links (one program per hook, never two).
#[test]
fn restart_keeps_forwarding_and_adopts_pinned_state() -> Result<()> {
    let mut c = cluster();
    let a = c.node_index("a");
    // `auto` leaves a veth uplink to TC decap...
    assert!(!c.nodes[a].ns.ip("-d link show ul0")?.contains("prog/xdp"), "XDP decap on a veth uplink under --decap auto");
    assert!(c.agent_log("a").contains("decapsulating in TC (--decap auto on a veth uplink)"), "{}", c.agent_log("a"));
    // ...so ask for XDP decap, to have its pinned link adopted as well.
    c.restart_agent(a, &["--decap", "xdp"])?;
    let before = tcx_programs(&c.nodes[a].ns, "weft0", TcAttachType::Egress)?;
    assert_eq!(before.len(), 1, "one encap program on weft0");

    let status = c.nodes[a].agent.as_mut().unwrap().stop()?;
    assert!(status.is_some_and(|s| s.success()), "agent exits cleanly on SIGTERM");
    for to in ["b", "c"] {
        ping_ok(&c.pod_on("a").ns, c.pod_on(to).ip, 3)?;
    }
    assert_eq!(tcx_programs(&c.nodes[a].ns, "weft0", TcAttachType::Egress)?, before, "still attached");

    c.start_agent(a, &["--decap", "xdp"])?;
    let log = c.agent_log("a");
    assert_eq!(log.matches("state=Adopted").count(), spec::ALL.len(), "every map adopted:\n{log}");
    // TCX encap and decap, the pod bridge's egress, the XDP decap link, and the source
    // check's program on the veth of node a's pod.
    assert_eq!(log.matches("how=Replaced").count(), 5, "all five links reused:\n{log}");
    assert!(log.contains("program=\"weft_bridge_egress\" iface=cni0 how=Replaced"), "{log}");
    let after = tcx_programs(&c.nodes[a].ns, "weft0", TcAttachType::Egress)?;
    assert_eq!(after.len(), 1, "still exactly one program on weft0");
    assert_ne!(after, before, "the new agent's program replaced the old one");
    assert_eq!(tcx_programs(&c.nodes[a].ns, "ul0", TcAttachType::Ingress)?.len(), 1);
    assert!(c.nodes[a].ns.ip("-d link show ul0")?.contains("prog/xdp"), "XDP decap still on ul0");
    for to in ["b", "c"] {
        ping_ok(&c.pod_on("a").ns, c.pod_on(to).ip, 3)?;
    }
    Ok(())
}

/// weft's clsact filter in `tc filter show`'s words (real tc, nobody here wrote it):
/// first on the hook, weft's handle, direct action.
fn weft_filter(ns: &Netns, iface: &str, hook: &str, program: &str) -> Result<bool> {
    let out = ns.sh(&format!("tc filter show dev {iface} {hook}"))?;
    Ok(out
        .lines()
        .any(|l| l.contains(program) && l.contains("pref 1 ") && l.contains("handle 0x5746") && l.contains("direct-action")))
}

/// A 5 ms ping stream from pod a to pod b and from pod c to pod a (a's encap and
/// decap both on the path) while `during` runs; the packets lost on each.
fn lost_during(c: &mut Cluster, during: impl FnOnce(&mut Cluster) -> Result<()>) -> Result<[u32; 2]> {
    const COUNT: u32 = 1600;
    let stream = |from: &Netns, to: std::net::Ipv4Addr| -> Result<std::thread::JoinHandle<Result<weft_e2e::traffic::Ping>>> {
        let cmd = format!("ping -n -q -c {COUNT} -i 0.005 -W 2 -w 30 {to}");
        let mut child = from.exec(&cmd);
        Ok(std::thread::spawn(move || {
            weft_e2e::traffic::ping_stats(String::from_utf8_lossy(&child.output()?.stdout).into_owned())
        }))
    };
    let ab = stream(&c.pod_on("a").ns, c.pod_on("b").ip)?;
    let ca = stream(&c.pod_on("c").ns, c.pod_on("a").ip)?;
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    during(c)?;
    // The streams (8 s) must cover everything `during` did.
    assert!(started.elapsed() < Duration::from_secs(7), "took {:?}: longer than the ping streams", started.elapsed());
    let mut lost = [0; 2];
    for (i, (name, h)) in [("a -> b", ab), ("c -> a", ca)].into_iter().enumerate() {
        let p = h.join().map_err(|_| anyhow!("ping thread panicked"))??;
        // ping sends until COUNT replies or the deadline: a loss shows as one more sent.
        assert!(p.transmitted >= COUNT, "{name}: the stream ran to its end\n{}", p.output);
        lost[i] = p.transmitted - p.received;
        println!("{name}: {}/{} answered", p.received, p.transmitted);
    }
    Ok(lost)
}

/// A second agent on a node's pin directory fails at once, naming the first (its pid)
/// and touching nothing: the first keeps forwarding, with its programs in place.
/// `uninstall` refuses while the agent runs; once it stops, a new agent starts.
#[test]
fn a_second_agent_on_the_same_pins_is_refused_naming_the_first() -> Result<()> {
    let mut c = cluster();
    let a = c.node_index("a");
    let first = c.nodes[a].agent.as_ref().unwrap().pid().expect("pid").as_raw();
    let encap = tcx_programs(&c.nodes[a].ns, "weft0", TcAttachType::Egress)?;
    let started = Instant::now();
    let (status, out) = run_to_exit(c.agent_command(a, &[]), Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused at once, not after {:?}", started.elapsed());
    let dir = c.nodes[a].bpffs_dir.display().to_string();
    assert!(
        out.contains(&format!("another weft-agent holds {dir} (pid {first} (weft-agent))"))
            && out.contains("stop that agent first"),
        "{out}"
    );
    assert!(!out.contains("starting"), "the second agent got no further than the lock:\n{out}");
    assert!(c.nodes[a].agent.as_mut().unwrap().is_running(), "the first agent still runs");
    assert_eq!(tcx_programs(&c.nodes[a].ns, "weft0", TcAttachType::Egress)?, encap, "the first agent's encap untouched");
    pods_reach(&c, &[("a", "b"), ("a", "c"), ("c", "a")])?;

    let out = Command::new("nsenter")
        .arg(format!("--net={}", c.nodes[a].ns.path()))
        .arg(weft_e2e::agent_binary())
        .args(["uninstall", "--bpffs-dir"])
        .arg(&c.nodes[a].bpffs_dir)
        .arg("--cni-conf-dir")
        .arg(c.nodes[a].cni_dir())
        .arg("--subnet-file")
        .arg(c.nodes[a].subnet_file())
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "uninstall ran beside a live agent");
    assert!(said.contains(&format!("a weft-agent is running on {dir} (pid {first}")) && said.contains("stop it first"), "{said}");
    assert!(link_exists(&c.nodes[a].ns, "weft0") && c.nodes[a].bpffs_dir.join("tunnels").exists(), "uninstall removed nothing");
    pods_reach(&c, &[("a", "b")])?;

    c.restart_agent(a, &[])?;
    assert!(c.agent_log("a").contains("dataplane up"), "{}", c.agent_log("a"));
    pods_reach(&c, &[("a", "b"), ("c", "a")])?;
    Ok(())
}

/// Both TC attach paths here: clsact filters over netlink (what kernels before 6.6
/// have) and TCX links. On each, three agent restarts under a ping stream lose
/// nothing (the new program is swapped into the pinned link, or into weft's filter
/// slot); switching paths on a live node loses nothing either and leaves only the new
/// path's attachment; `uninstall` takes the filters away.
#[test]
fn restarts_and_path_switches_lose_no_packet_on_either_attach_path() -> Result<()> {
    use TcAttachType::{Egress, Ingress};
    for (path, other) in [("netlink", "tcx"), ("tcx", "netlink")] {
        let mut c = Cluster::new_with_agent_args(
            &[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel)],
            &["--tc-attach", path, "--fast-path"],
        )?;
        for n in ["a", "b", "c"] {
            c.add_pod(n)?;
        }
        let a = c.node_index("a");
        pods_reach(&c, &[("a", "b"), ("c", "a")])?;
        let check = |c: &Cluster, path: &str| -> Result<()> {
            let ns = &c.nodes[a].ns;
            // `N: NAME@PEER: <...>` for the pod's host-side veth.
            let ports = ns.ip("-o link show master cni0")?;
            let veth = ports.split(':').nth(1).and_then(|n| n.split('@').next()).map(str::trim).unwrap_or_default().to_owned();
            for (iface, hook, tc_hook, program) in [
                ("ul0", Ingress, "ingress", "weft_decap"),
                ("weft0", Egress, "egress", "weft_encap"),
                ("weft0", Ingress, "ingress", "weft_weft0_ingress"),
                ("cni0", Egress, "egress", "weft_bridge_egress"),
                (veth.as_str(), Ingress, "ingress", "weft_pod_egress"),
                (veth.as_str(), Egress, "egress", "weft_pod_ingress"),
            ] {
                // A new pod's veth gets its programs once the agent has read the pod's
                // CNI result (written just after ADD; rescanned every 250 ms until then).
                let progs = wait_for(Duration::from_secs(5), || ns.tc_programs(iface, hook).ok().filter(|p| p.len() == 1));
                let progs = progs.unwrap_or_else(|| ns.tc_programs(iface, hook).unwrap_or_default());
                assert_eq!(progs.len(), 1, "{path}: one program on {iface} {tc_hook}: {progs:?}\n{}", c.agent_log("a"));
                assert!(progs[0].1.starts_with(&program[..program.len().min(15)]), "{path}: {iface} {tc_hook} runs {progs:?}");
                assert_eq!(
                    weft_filter(ns, iface, tc_hook, program)?,
                    path == "netlink",
                    "{path}: clsact filter on {iface} {tc_hook}"
                );
            }
            Ok(())
        };
        check(&c, path)?;
        let lost = lost_during(&mut c, |c| {
            for _ in 0..3 {
                c.restart_agent(a, &["--tc-attach", path, "--fast-path"])?;
            }
            Ok(())
        })?;
        println!("{path}: 3 restarts, lost {lost:?} (a -> b, c -> a)");
        assert_eq!(lost, [0, 0], "{path}: packets lost across restarts\n{}", c.agent_log("a"));
        check(&c, path)?;
        let lost = lost_during(&mut c, |c| c.restart_agent(a, &["--tc-attach", other, "--fast-path"]))?;
        println!("{path} -> {other}: lost {lost:?}");
        // Going to netlink adds the clsact qdisc to live interfaces (grafting a qdisc
        // can drop what is in flight): 1 ping of 2,400 in 1 run of 3, tcx -> netlink.
        assert!(lost.iter().all(|l| *l <= 2), "{path} -> {other}: packets lost\n{}", c.agent_log("a"));
        check(&c, other)?;
        if other == "netlink" {
            c.nodes[a].agent.as_mut().unwrap().stop()?;
            c.uninstall(a)?;
            let ns = &c.nodes[a].ns;
            for iface in ["ul0", "cni0"] {
                for hook in ["ingress", "egress"] {
                    let left = ns.sh(&format!("tc filter show dev {iface} {hook}"))?;
                    assert!(!left.contains("weft_"), "a filter left on {iface} {hook}:\n{left}");
                }
            }
        }
    }
    Ok(())
}

/// An uplink deleted and created again under the same name (a bond or VLAN rebuilt by
/// the network manager, a driver rebind) is followed at the next resync: the config
/// names its new index, decap is attached to it again, and traffic flows.
#[test]
fn a_recreated_uplink_is_followed() -> Result<()> {
    let c = cluster();
    let a = c.node("a");
    let ifindex = || -> Result<u32> { Ok(a.ns.sh("cat /sys/class/net/ul0/ifindex")?.trim().parse()?) };
    let old = ifindex()?;
    a.ns.ip("link del ul0")?;
    let status = Command::new("ip")
        .args(["link", "add", "ul0", "netns", &a.ns.name, "type", "veth", "peer", "name", "u-a", "netns", &c.underlay.name])
        .status()?;
    assert!(status.success(), "recreating ul0");
    c.underlay.ip("link set u-a master br0 up")?;
    a.ns.ip(&format!("addr add {}/24 dev ul0", a.underlay))?;
    a.ns.ip("link set ul0 up")?;
    let new = ifindex()?;
    assert_ne!(new, old, "a new ul0");
    let t = Instant::now();
    let followed = wait_for(Duration::from_secs(5), || {
        let config = a.maps().ok()?.config().ok()?;
        let decap = tcx_programs(&a.ns, "ul0", TcAttachType::Ingress).ok()?;
        (config.uplink_ifindex == new && decap.len() == 1).then_some(())
    });
    assert!(followed.is_some(), "a follows its new uplink\n{}", c.logs());
    println!("recreated uplink followed {:?} after it came back", t.elapsed());
    assert!(c.agent_log("a").contains("the uplink was recreated"), "{}", c.agent_log("a"));
    pods_reach(&c, &[("a", "b"), ("a", "c"), ("b", "a"), ("c", "a")])?;
    Ok(())
}

/// A node whose underlay address is on another interface than the uplink (a routed
/// address on `lo`, `--iface ul0`): that is no NAT, the tunnel keeps the address.
#[test]
fn an_underlay_address_on_another_interface_stays_the_tunnel_address() -> Result<()> {
    let mut c = Cluster::new(&[("a", Kind::Weft), ("b", Kind::Weft)])?;
    for n in ["a", "b"] {
        c.add_pod(n)?;
    }
    let routed = std::net::Ipv4Addr::new(198, 19, 1, 10);
    let a = c.node_index("a");
    c.nodes[a].ns.ip(&format!("addr add {routed}/32 dev lo"))?;
    c.node("b").ns.ip(&format!("route add {routed}/32 via {} dev ul0", c.nodes[a].underlay))?;
    c.nodes[a].underlay = routed;
    c.write_peers(&c.nodes.iter().map(|n| n.table_line()).collect::<Vec<_>>())?;
    c.restart_agent(a, &["--iface", "ul0"])?;
    let config = c.nodes[a].maps()?.config()?;
    assert_eq!(std::net::Ipv4Addr::from(config.underlay_ip), routed, "a's tunnel address\n{}", c.logs());
    let followed = wait_for(Duration::from_secs(5), || {
        let tunnels = c.node("b").maps().ok()?.tunnels().ok()?;
        tunnels.values().any(|e| std::net::Ipv4Addr::from(e.underlay_ip) == routed).then_some(())
    });
    assert!(followed.is_some(), "b follows a's new address\n{}", c.logs());
    pods_reach(&c, &[("a", "b"), ("b", "a")])?;
    Ok(())
}

/// An upgrade across a map-layout change: the next agent finds `tunnels` pinned with
/// another layout (as an older weft's would be), replaces it, fills it before its
/// programs take over the live links, and traffic flows.
#[test]
fn a_pinned_map_of_another_layout_is_replaced_and_refilled() -> Result<()> {
    let mut c = cluster();
    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().unwrap().stop()?;
    // The old programs keep their own map; only the pin is swapped for an odd one.
    let pin = c.nodes[a].bpffs_dir.join(spec::TUNNELS.pin);
    std::fs::remove_file(&pin)?;
    let (key, value) = (spec::TUNNELS.key_size.to_string(), spec::TUNNELS.value_size.to_string());
    let pin_arg = pin.to_str().expect("utf-8");
    let args = ["map", "create", pin_arg, "type", "lpm_trie", "key", &key, "value", &value, "entries", "16", "name", "tunnels"];
    let status = Command::new("bpftool").args(args).args(["flags", "1"]).status()?;
    assert!(status.success(), "bpftool map create");
    for to in ["b", "c"] {
        ping_ok(&c.pod_on("a").ns, c.pod_on(to).ip, 3)?;
    }
    // Traffic both ways through the takeover: not one packet may meet the new
    // programs before their maps hold the peers (no tunnel, unknown peer).
    let drops = |c: &Cluster| -> Result<u64> {
        let maps = c.nodes[a].maps()?;
        Ok(maps.counter(Verdict::DropNoTunnel)?.packets + maps.counter(Verdict::DropUnknownPeer)?.packets)
    };
    let before = drops(&c)?;
    let (src, dst) = (c.pod_on("a").ns.name.clone(), c.pod_on("b").ip.to_string());
    // Bounded (-w) in case the test dies before it stops the pinger.
    let mut pinger = Command::new("ip")
        .args(["netns", "exec", &src, "ping", "-q", "-i", "0.001", "-w", "60", &dst])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let started = c.start_agent(a, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let still_pinging = pinger.try_wait()?.is_none();
    pinger.kill()?;
    pinger.wait()?;
    started?;
    assert!(still_pinging, "the pings covered the whole takeover");
    assert_eq!(drops(&c)? - before, 0, "packets dropped during the takeover\n{}", c.logs());
    let log = c.agent_log("a");
    assert!(log.contains("pinned map has another layout: replacing it"), "{log}");
    assert!(log.contains(r#"map="WEFT_TUNNELS" state=Replaced"#), "{log}");
    let tunnels = c.nodes[a].maps()?.tunnels()?;
    assert_eq!(tunnels.len(), 2, "b's and c's tunnels in the new map: {tunnels:?}");
    pods_reach(&c, &[("a", "b"), ("a", "c"), ("b", "a"), ("c", "a")])?;
    Ok(())
}

/// Pinned maps written by an agent of another ABI version (the same sizes, other
/// meanings: the counters' numbering, say) are all replaced, not adopted.
#[test]
fn pinned_maps_of_another_abi_version_are_all_replaced() -> Result<()> {
    let mut c = cluster();
    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().unwrap().stop()?;
    let mut maps = c.nodes[a].maps()?;
    let config = maps.config()?;
    maps.set_config(DataplaneConfig { abi_version: ABI_VERSION - 1, ..config })?;
    drop(maps);
    c.start_agent(a, &[])?;
    let log = c.agent_log("a");
    assert!(log.contains("pinned maps are of another ABI version: replacing them all"), "{log}");
    assert_eq!(log.matches("state=Replaced").count(), spec::ALL.len(), "every map replaced:\n{log}");
    assert_eq!(c.nodes[a].maps()?.config()?.abi_version, ABI_VERSION);
    pods_reach(&c, &[("a", "b"), ("b", "a"), ("a", "c")])?;
    Ok(())
}

/// `status` names this node, every peer and the local pods; `route` says where a
/// remote pod, a local pod and an outside address go; `--output json` parses; both
/// read the pinned state, so they work with the agent stopped too.
#[test]
fn status_and_route_read_the_pinned_state() -> Result<()> {
    let mut c = cluster();
    // The local pod is an endpoint once its node has resolved it.
    ping_ok(&c.pod_on("b").ns, c.pod_on("a").ip, 1)?;
    let pod_a = c.pod_on("a").ip;
    let known =
        wait_for(Duration::from_secs(5), || c.node("a").maps().ok()?.endpoints().ok()?.contains_key(&pod_a).then_some(()));
    assert!(known.is_some(), "{}", c.logs());
    for running in [true, false] {
        let text = c.inspect("a", &["status"])?;
        println!("weft-agent status (agent running: {running}):\n{text}");
        let a = c.node("a");
        assert!(text.contains(&format!("node a: pod CIDR {}", a.pod_cidr)) && text.contains(&a.underlay.to_string()), "{text}");
        for peer in ["b", "c"] {
            let p = c.node(peer);
            assert!(text.contains(&p.pod_cidr.to_string()) && text.contains(&p.underlay.to_string()), "{peer}:\n{text}");
        }
        assert!(text.contains(&pod_a.to_string()), "local pod:\n{text}");
        assert!(text.contains("link_decap") && text.contains("weft_decap"), "attachments:\n{text}");
        let json: serde_json::Value = serde_json::from_str(&c.inspect("a", &["status", "--output", "json"])?)?;
        assert_eq!(json["peers"].as_array().map(Vec::len), Some(2), "{json}");
        assert_eq!(json["node"]["pod_cidr"], a.pod_cidr.to_string(), "{json}");
        assert_eq!(json["node"]["name"], "a", "{json}");
        assert_eq!(json["local_pods"][0]["ip"], pod_a.to_string(), "{json}");

        let to_b = c.pod_on("b").ip.to_string();
        let r: serde_json::Value = serde_json::from_str(&c.inspect("a", &["route", &to_b, "-o", "json"])?)?;
        assert_eq!(r["kind"], "remote-node", "{r}");
        assert_eq!(r["node_underlay_ip"], c.node("b").underlay.to_string(), "{r}");
        assert_eq!(r["node_vtep_mac"], c.node("b").vtep_mac, "{r}");
        let text = c.inspect("a", &["route", &to_b])?;
        assert!(text.contains(&c.node("b").underlay.to_string()) && text.contains("weft0"), "{text}");
        let local: serde_json::Value = serde_json::from_str(&c.inspect("a", &["route", &pod_a.to_string(), "-o", "json"])?)?;
        assert_eq!(local["kind"], "local-pod", "{local}");
        let outside: serde_json::Value = serde_json::from_str(&c.inspect("a", &["route", "192.0.2.1", "-o", "json"])?)?;
        assert_eq!(outside["kind"], "host-stack", "{outside}");
        if running {
            let a = c.node_index("a");
            c.nodes[a].agent.as_mut().unwrap().stop()?;
        }
    }
    Ok(())
}

/// `GET path` on the agent's health port inside `ns`: the whole HTTP response.
fn http_get(ns: &Netns, port: u16, path: &str) -> Result<String> {
    weft_e2e::traffic::http_get(ns, port, path)
}

fn healthz(ns: &Netns, port: u16) -> Result<String> {
    http_get(ns, port, "/healthz")
}

/// The value of the sample `series` (name and labels, as exposed) in a `/metrics` body.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `/metrics` passes `promtool check metrics`, and after a known amount of traffic the
/// counters have moved by at least that much: node a's encap and b's decap by the
/// bytes sent; the maps report their entries against their capacity.
#[test]
fn metrics_pass_promtool_and_count_the_traffic() -> Result<()> {
    let mut c = cluster();
    for n in ["a", "b"] {
        let i = c.node_index(n);
        c.restart_agent(i, &["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"])?;
    }
    let get = |c: &Cluster, n: &str| -> Result<String> {
        let r = wait_for(Duration::from_secs(5), || http_get(&c.node(n).ns, 8471, "/metrics").ok())
            .ok_or_else(|| anyhow!("/metrics does not answer on {n}\n{}", c.logs()))?;
        anyhow::ensure!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        Ok(r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    };
    let body = get(&c, "a")?;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("promtool (apt-get install prometheus): {e}"))?;
    use std::io::Write;
    promtool.stdin.take().expect("stdin").write_all(body.as_bytes())?;
    let out = promtool.wait_with_output()?;
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sample(&body, r#"weft_map_entries{map="tunnels"}"#), Some(2.0), "{body}");
    assert_eq!(sample(&body, r#"weft_map_capacity_entries{map="tunnels"}"#), Some(f64::from(spec::MAX_NODES)), "{body}");
    assert_eq!(sample(&body, "weft_healthy"), Some(1.0), "{body}");
    assert!(body.contains("weft_build_info{version=\""), "{body}");

    const ENCAP: &str = r#"weft_forwarded_bytes_total{hook="weft0_egress",action="redirect",verdict="encapsulated"}"#;
    const DECAP: &str = r#"weft_forwarded_bytes_total{hook="uplink_ingress",action="redirect",verdict="decapsulated"}"#;
    let (enc0, dec0) = (sample(&body, ENCAP).unwrap_or(0.0), sample(&get(&c, "b")?, DECAP).unwrap_or(0.0));
    const BYTES: u64 = 8 << 20;
    let (src, dst) = (c.pod_on("a"), c.pod_on("b"));
    weft_e2e::traffic::tcp_transfer(&src.ns, &dst.ns, dst.ip, BYTES)?;
    let (enc1, dec1) = (sample(&get(&c, "a")?, ENCAP).unwrap_or(0.0), sample(&get(&c, "b")?, DECAP).unwrap_or(0.0));
    assert!(enc1 - enc0 >= BYTES as f64, "node a encapsulated {} bytes for a {BYTES}-byte transfer", enc1 - enc0);
    assert!(dec1 - dec0 >= BYTES as f64, "node b decapsulated {} bytes for a {BYTES}-byte transfer", dec1 - dec0);
    Ok(())
}

/// The health endpoint answers 200 while the node is kept programmed, and 503 with the
/// reason once resyncs keep failing (here: the uplink deleted for good), so a liveness
/// probe restarts the agent instead of leaving a node silently unprogrammed.
#[test]
fn health_endpoint_reports_a_node_it_cannot_keep_programmed() -> Result<()> {
    let mut c = Cluster::new(&[("a", Kind::Weft), ("b", Kind::Weft)])?;
    let a = c.node_index("a");
    c.restart_agent(a, &["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"])?;
    let ns = &c.nodes[a].ns;
    // The endpoint opens with the event loop, just after the agent says it is up.
    let ok = wait_for(Duration::from_secs(5), || healthz(ns, 8471).ok())
        .ok_or_else(|| anyhow!("/healthz does not answer\n{}", c.logs()))?;
    assert!(ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("ok\n"), "{ok}");
    assert!(http_get(ns, 8471, "/nothing")?.starts_with("HTTP/1.1 404"), "unknown paths are 404");
    ns.ip("link del ul0")?;
    // Three resync periods (two seconds each here) without a good one, and a second.
    let failing = wait_for(Duration::from_secs(20), || {
        let r = healthz(ns, 8471).ok()?;
        r.starts_with("HTTP/1.1 503").then_some(r)
    });
    let r = failing.ok_or_else(|| anyhow!("/healthz kept answering 200 without an uplink\n{}", c.logs()))?;
    assert!(r.contains("no successful resync for") && r.contains("uplink ul0") && r.contains("is gone"), "{r}");
    Ok(())
}

/// The health port holds up against clients that hold it (real sockets, in the
/// node's namespace): silent and trickling clients are closed at the header timeout
/// and delay nobody; more idle connections than the cap queue, and a probe among them
/// is still answered; the agent lives on and keeps forwarding.
#[test]
fn health_port_closes_slow_clients_and_survives_more_than_its_cap() -> Result<()> {
    use std::{
        io::{Read, Write},
        net::TcpStream,
    };
    let limits = weft_agent::http::bounded::Limits::default();
    let mut c = cluster();
    let a = c.node_index("a");
    c.restart_agent(a, &["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"])?;
    wait_for(Duration::from_secs(5), || healthz(&c.nodes[a].ns, 8471).ok())
        .ok_or_else(|| anyhow!("/healthz does not answer\n{}", c.logs()))?;
    let connect = move || -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", 8471))?;
        s.set_read_timeout(Some(limits.connection_timeout * 2))?;
        Ok(s)
    };
    // How long until the server closes `s`, and whether it answered 200.
    let closed_after = move |mut s: TcpStream, t0: Instant| -> (Duration, bool) {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (t0.elapsed(), String::from_utf8_lossy(&out).contains("200 OK"))
    };
    let (slow, fast) = c.nodes[a]
        .ns
        .spawn(move || {
            let t0 = Instant::now();
            let silent = connect()?;
            let mut trickle = connect()?;
            trickle.write_all(b"GET /healthz HTTP/1.1\r\nHost:")?;
            let t1 = Instant::now();
            let r = weft_e2e::traffic::http_get_here(8471, "/healthz", Duration::from_secs(5))?;
            let fast = (t1.elapsed(), r);
            let slow = [closed_after(silent, t0), closed_after(trickle, t0)];
            Ok((slow, fast))
        })
        .join()
        .map_err(|_| anyhow!("client thread panicked"))??;
    assert!(fast.1.starts_with("HTTP/1.1 200 OK"), "{}", fast.1);
    assert!(fast.0 < Duration::from_secs(1), "a probe beside two slow clients took {:?}", fast.0);
    for (after, answered) in slow {
        assert!(!answered, "a client that sent no whole request got an answer");
        assert!(
            after >= limits.header_timeout - Duration::from_millis(100) && after < limits.header_timeout + Duration::from_secs(2),
            "a slow client was closed after {after:?}, not at the {:?} header timeout",
            limits.header_timeout
        );
    }

    let over = limits.max_connections + 8;
    let (queued, probe) = c.nodes[a]
        .ns
        .spawn(move || {
            let idle: Vec<TcpStream> = (0..over).map(|_| connect()).collect::<std::io::Result<_>>()?;
            let t0 = Instant::now();
            let r = weft_e2e::traffic::http_get_here(8471, "/healthz", limits.header_timeout * 3);
            let took = t0.elapsed();
            let closed =
                idle.into_iter().map(|s| closed_after(s, t0)).filter(|(after, _)| *after < limits.connection_timeout * 2);
            Ok((closed.count(), (took, r)))
        })
        .join()
        .map_err(|_| anyhow!("client thread panicked"))??;
    let (took, r) = probe;
    let r = r.map_err(|e| anyhow!("a probe behind {over} idle connections: {e}\n{}", c.agent_log("a")))?;
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(took < limits.header_timeout * 2 + Duration::from_secs(2), "the probe waited {took:?}");
    assert_eq!(queued, over, "every idle connection, queued ones included, was closed");
    assert!(c.nodes[a].agent.as_mut().unwrap().is_running(), "{}", c.agent_log("a"));
    assert!(healthz(&c.nodes[a].ns, 8471)?.starts_with("HTTP/1.1 200 OK"));
    pods_reach(&c, &[("a", "b"), ("c", "a")])?;
    Ok(())
}

/// Past `--max-nodes` the agent neither fails nor crash-loops: it programs the nodes
/// that fit (the table's first), names the flag in one error, counts the rest in
/// `weft_peers_skipped{reason="over_limit"}`, stays live and reports degraded on
/// `/readyz`. A full map takes a node in place of a departed one (deletions first),
/// and once every node fits it is ready again.
#[test]
fn past_max_nodes_the_agent_serves_the_nodes_that_fit_and_says_why() -> Result<()> {
    let mut c = cluster();
    let a = c.node_index("a");
    c.restart_agent(a, &["--max-nodes", "1", "--healthz-ip", "127.0.0.1", "--healthz-port", "8471"])?;
    let (cidr_b, cidr_c) = (c.node("b").pod_cidr, c.node("c").pod_cidr);
    let tunnels =
        |c: &Cluster| -> Result<Vec<ipnetwork::Ipv4Network>> { Ok(c.node("a").maps()?.tunnels()?.into_keys().collect()) };
    assert_eq!(tunnels(&c)?, [cidr_b], "the table's first remote node, alone");
    let log = c.agent_log("a");
    assert_eq!(log.matches("too many nodes: 2 > --max-nodes 1").count(), 1, "one error, not one per resync:\n{log}");
    let ns = &c.nodes[a].ns;
    let body = |r: String| r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    let metrics = body(http_get(ns, 8471, "/metrics")?);
    assert_eq!(sample(&metrics, r#"weft_peers_skipped{reason="over_limit"}"#), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, r#"weft_map_capacity_entries{map="tunnels"}"#), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, r#"weft_map_capacity_entries{map="peers"}"#), Some(1.0), "{metrics}");
    let ready = http_get(ns, 8471, "/readyz")?;
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("degraded: too many nodes: 2 > --max-nodes 1"), "{ready}");
    assert!(healthz(ns, 8471)?.starts_with("HTTP/1.1 200 OK"), "live: a restart would not help");
    pods_reach(&c, &[("a", "b"), ("b", "a")])?;
    std::thread::sleep(Duration::from_secs(3)); // resyncs
    assert!(c.nodes[a].agent.as_mut().unwrap().is_running(), "{}", c.agent_log("a"));
    assert_eq!(c.agent_log("a").matches("too many nodes").count(), 1, "{}", c.agent_log("a"));

    // b leaves, c fits: into a map that is full until b's entries go.
    let lines: Vec<String> = ["a", "c"].iter().map(|n| c.node(n).table_line()).collect();
    c.write_peers(&lines)?;
    let moved = wait_for(Duration::from_secs(5), || (tunnels(&c).ok()? == [cidr_c]).then_some(()));
    assert!(moved.is_some(), "c took b's place: {:?}\n{}", tunnels(&c), c.agent_log("a"));
    assert!(c.agent_log("a").contains("every node fits the maps again"), "{}", c.agent_log("a"));
    let ns = &c.nodes[a].ns;
    assert!(http_get(ns, 8471, "/readyz")?.starts_with("HTTP/1.1 200 OK"));
    let metrics = body(http_get(ns, 8471, "/metrics")?);
    assert_eq!(sample(&metrics, r#"weft_peers_skipped{reason="over_limit"}"#), Some(0.0), "{metrics}");
    pods_reach(&c, &[("a", "c"), ("c", "a")])?;
    assert!(!c.agent_log("a").contains("ERROR resync"), "{}", c.agent_log("a"));
    Ok(())
}

fn has_route(c: &Cluster, node: &str, cidr: &str) -> bool {
    c.node(node).ns.ip("route show").map(|r| r.contains(cidr)).unwrap_or(false)
}

/// Editing the node table while the agents run removes, adds and changes peers within
/// seconds, without disturbing the flows of other peers; a broken edit is rejected
/// and the last good table kept.
#[test]
fn node_table_edits_apply_live() -> Result<()> {
    let c = cluster();
    let lines = |skip: &str| -> Vec<String> { c.nodes.iter().filter(|n| n.name != skip).map(|n| n.table_line()).collect() };
    let b_cidr = c.node("b").pod_cidr.to_string();
    // A flow to c runs through every edit: it must not lose a packet.
    let a_pod = c.pod_on("a").ns.name.clone();
    let c_ip = c.pod_on("c").ip;
    let background = std::thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &a_pod, "ping", "-n", "-c", "60", "-i", "0.1", "-W", "1"])
            .arg(c_ip.to_string())
            .output()
    });

    // Remove b.
    c.write_peers(&lines("b"))?;
    let t = Instant::now();
    let gone = wait_for(Duration::from_secs(5), || {
        let maps = c.node("a").maps().ok()?;
        let tunnels = maps.tunnels().ok()?;
        (!has_route(&c, "a", &b_cidr) && !tunnels.keys().any(|k| k.to_string() == b_cidr)).then_some(())
    });
    assert!(gone.is_some(), "b's route and tunnel entry must be gone within 5 s\n{}", c.logs());
    println!("peer removed from node a {:?} after the edit", t.elapsed());
    let p = ping(&c.pod_on("a").ns, c.pod_on("b").ip, 2, "")?;
    assert_eq!(p.received, 0, "b is no longer a peer of a");
    let kept = wait_for(Duration::from_secs(5), || c.agent_log("b").contains("this node (b) is missing").then_some(()));
    assert!(kept.is_some(), "b, missing from the table, keeps its last good one:\n{}", c.agent_log("b"));

    // A broken table is rejected with its line; the agent keeps the last good one.
    let mut broken = lines("");
    broken.push("d 198.19.0.99 10.244.9.1/24 0a:58:0a:f4:09:00".into());
    c.write_peers(&broken)?;
    let rejected = wait_for(Duration::from_secs(5), || c.agent_log("a").contains("has host bits set").then_some(()));
    assert!(rejected.is_some(), "a broken table is reported:\n{}", c.agent_log("a"));
    assert!(c.agent_log("a").contains("nodes:5:"), "the report names the line:\n{}", c.agent_log("a"));
    assert!(!has_route(&c, "a", &b_cidr), "the broken table was not applied");

    // Add b back, through SIGHUP this time.
    c.write_peers(&lines(""))?;
    c.node("a").agent.as_ref().unwrap().signal(Signal::SIGHUP)?;
    let t = Instant::now();
    let back =
        wait_for(Duration::from_secs(5), || ping(&c.pod_on("a").ns, c.pod_on("b").ip, 1, "").ok().filter(|p| p.received == 1));
    assert!(back.is_some(), "b reachable again within 5 s\n{}", c.logs());
    println!("peer added back, reachable {:?} after the edit", t.elapsed());
    assert!(c.agent_log("a").contains("SIGHUP"), "SIGHUP was handled");

    // Change b's VtepMAC: b's weft0 follows, a's tunnel entry follows, traffic flows.
    let new_mac = "0a:58:0a:f4:42:42";
    let changed: Vec<String> = c
        .nodes
        .iter()
        .map(|n| if n.name == "b" { format!("b {} {} {new_mac}", n.underlay, n.pod_cidr) } else { n.table_line() })
        .collect();
    c.write_peers(&changed)?;
    let t = Instant::now();
    let followed = wait_for(Duration::from_secs(5), || {
        let mac_ok = c.node("b").ns.ip("link show weft0").ok()?.contains(new_mac);
        let tunnels = c.node("a").maps().ok()?.tunnels().ok()?;
        let entry_ok = tunnels.iter().any(|(k, v)| k.to_string() == b_cidr && v.vtep_mac == [0x0a, 0x58, 0x0a, 0xf4, 0x42, 0x42]);
        (mac_ok && entry_ok).then_some(())
    });
    assert!(followed.is_some(), "VtepMAC change applied on both nodes within 5 s\n{}", c.logs());
    println!("VtepMAC change applied {:?} after the edit", t.elapsed());
    ping_ok(&c.pod_on("a").ns, c.pod_on("b").ip, 3)?;
    ping_ok(&c.pod_on("b").ns, c.pod_on("a").ip, 3)?;

    let out = background.join().map_err(|_| anyhow!("ping thread"))??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("60 received"), "the flow to c lost packets during the edits:\n{text}");
    Ok(())
}

/// A node namespace with an uplink, and a node table, for start-up failures.
struct Bare {
    ns: Netns,
    dir: std::path::PathBuf,
    bpffs: std::path::PathBuf,
}

impl Bare {
    fn new(table: &str) -> Result<Bare> {
        weft_e2e::prereq::require();
        let id = weft_e2e::netns::run_id();
        let ns = Netns::new(format!("{}{id}-bare", weft_e2e::netns::PREFIX))?;
        ns.ip("link add ul0 type veth peer name ul1")?;
        ns.ip("addr add 198.19.0.10/24 dev ul0")?;
        ns.ip("link set ul0 up")?;
        ns.ip("link set ul1 up")?;
        let dir = std::path::PathBuf::from("/run/weft-e2e").join(&id);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("nodes"), table)?;
        Ok(Bare { ns, bpffs: std::path::PathBuf::from(format!("/sys/fs/bpf/weft-e2e-{id}")), dir })
    }

    /// The agent's pin directory.
    fn pins(&self) -> std::path::PathBuf {
        self.bpffs.join("a")
    }

    fn command(&self, extra: &[&str]) -> Command {
        weft_e2e::agent::command(&self.ns, &self.dir.join("nodes"), "a", &self.pins(), extra)
    }

    /// Runs the agent, expects failure, returns its output.
    fn fail(&self, cmd: Command) -> Result<String> {
        let (status, out) = run_to_exit(cmd, Duration::from_secs(20))?;
        assert_eq!(status.code(), Some(1), "agent must fail:\n{out}");
        Ok(out)
    }

    /// Nothing of weft's left: no weft0, no pins.
    fn assert_clean(&self) {
        assert!(!link_exists(&self.ns, "weft0"), "weft0 left behind");
        let pins: Vec<_> = std::fs::read_dir(self.pins()).into_iter().flatten().flatten().map(|e| e.path()).collect();
        assert!(pins.iter().all(|p| p.ends_with("a/link_decap")), "pins left behind: {pins:?}");
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const GOOD: &str = "a 198.19.0.10 10.244.1.0/24 0a:58:0a:f4:01:00\nb 198.19.0.11 10.244.2.0/24 0a:58:0a:f4:02:00\n";

#[test]
fn bad_node_table_names_the_file_line_and_reason() -> Result<()> {
    let bare =
        Bare::new("a 198.19.0.10 10.244.1.0/24 0a:58:0a:f4:01:00\n\n# comment\nb 198.19.0.11 10.244.2.7/24 0a:58:0a:f4:02:00\n")?;
    let out = bare.fail(bare.command(&[]))?;
    let path = bare.dir.join("nodes");
    assert!(
        out.contains(&format!("{}:4: pod CIDR 10.244.2.7/24 has host bits set (did you mean 10.244.2.0/24?)", path.display())),
        "{out}"
    );
    bare.assert_clean();
    Ok(())
}

#[test]
fn missing_interface_is_named() -> Result<()> {
    let bare = Bare::new(GOOD)?;
    let out = bare.fail(bare.command(&["--iface", "eth9"]))?;
    assert!(out.contains("interface eth9 (--iface) does not exist"), "{out}");
    let other = Bare::new("a 198.19.0.99 10.244.1.0/24 0a:58:0a:f4:01:00\n")?;
    let out = other.fail(other.command(&[]))?;
    assert!(out.contains("no interface holds this node's underlay address 198.19.0.99"), "{out}");
    bare.assert_clean();
    Ok(())
}

/// A fatal error is logged once, in the log's format: a line for people by default,
/// one JSON object per line with `--log-format json` (what a collector parses).
#[test]
fn a_fatal_error_is_logged_once_in_the_chosen_format() -> Result<()> {
    let bare = Bare::new(GOOD)?;
    const WHY: &str = "interface eth9 (--iface) does not exist";
    let out = bare.fail(bare.command(&["--iface", "eth9"]))?;
    assert_eq!(out.matches(WHY).count(), 1, "the error once:\n{out}");
    let out = bare.fail(bare.command(&["--iface", "eth9", "--log-format", "json"]))?;
    let lines = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map_err(|e| anyhow!("not a JSON object: {l:?}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "one ERROR event:\n{out}");
    assert!(errors[0]["fields"]["message"].as_str().is_some_and(|m| m.contains(WHY)), "{out}");
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["target"].is_string()), "{out}");
    Ok(())
}

#[test]
fn own_node_missing_from_the_table_is_an_error() -> Result<()> {
    let bare = Bare::new("b 198.19.0.11 10.244.2.0/24 0a:58:0a:f4:02:00\n")?;
    let out = bare.fail(bare.command(&[]))?;
    assert!(out.contains("node \"a\" (this node) is not in the table"), "{out}");
    Ok(())
}

#[test]
fn missing_privileges_are_reported() -> Result<()> {
    let bare = Bare::new(GOOD)?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", bare.ns.path()))
        .args(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .arg(weft_e2e::agent_binary())
        .arg("--peers")
        .arg(bare.dir.join("nodes"))
        .args(["--node-name", "a", "--bpffs-dir"])
        .arg(&bare.bpffs);
    let out = bare.fail(cmd)?;
    assert!(out.contains("missing privileges") && out.contains("CAP_NET_ADMIN"), "{out}");
    bare.assert_clean();
    Ok(())
}

/// Under `ip netns exec`, /sys is remounted and a bpffs mounted there would be
/// private: the agent refuses instead of pinning into something that dies with it.
#[test]
fn private_bpffs_is_refused() -> Result<()> {
    let bare = Bare::new(GOOD)?;
    let mut cmd = bare.ns.exec_args(&[weft_e2e::agent_binary().to_str().unwrap()]);
    cmd.arg("--peers").arg(bare.dir.join("nodes")).args(["--node-name", "a", "--bpffs-dir"]).arg(&bare.bpffs);
    let out = bare.fail(cmd)?;
    assert!(out.contains("would be private") && out.contains("nsenter --net"), "{out}");
    bare.assert_clean();
    Ok(())
}

/// A start that fails after creating things undoes them: weft0, the map pins, the
/// link pinned for encap.
#[test]
fn failed_start_rolls_back_what_it_created() -> Result<()> {
    let bare = Bare::new(GOOD)?;
    // An obstacle where the decap link will be pinned: the last step before routes fails.
    let obstacle = bare.pins().join("link_decap");
    std::fs::create_dir_all(&obstacle)?;
    let out = bare.fail(bare.command(&[]))?;
    assert!(out.contains(&obstacle.display().to_string()), "the error names the pin: {out}");
    assert!(out.contains("created weft0"), "the failure came after weft0 was created: {out}");
    bare.assert_clean();
    assert!(obstacle.is_dir(), "what the agent did not create is left alone");
    Ok(())
}

/// A start that fails after adopting an earlier agent's state leaves that state alone:
/// weft0, the maps and the links it did not create keep forwarding.
#[test]
fn failed_start_never_tears_down_adopted_state() -> Result<()> {
    let mut c = cluster();
    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().unwrap().stop()?;
    let weft0_before = c.nodes[a].ns.ip("-o link show weft0")?;
    // Make only the decap attach fail: put a directory where its link is pinned (the
    // old decap link goes with its pin). Encap's pinned link stays and keeps working.
    let decap_pin = c.nodes[a].bpffs_dir.join("link_decap");
    std::fs::remove_file(&decap_pin)?;
    std::fs::create_dir(&decap_pin)?;

    let (status, out) = run_to_exit(c.agent_command(a, &[]), Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("link_decap"), "{out}");

    let n = &c.nodes[a];
    assert_eq!(n.ns.ip("-o link show weft0")?, weft0_before, "adopted weft0 untouched");
    for pin in ["tunnels", "peers", "config", "counters", "link_encap"] {
        assert!(n.bpffs_dir.join(pin).exists(), "adopted pin {pin} kept");
    }
    assert!(has_route(&c, "a", &c.node("b").pod_cidr.to_string()), "routes kept");
    assert_eq!(tcx_programs(&n.ns, "weft0", TcAttachType::Egress)?.len(), 1, "encap still attached");
    // Encap still works: packets from a's pod reach b (b decapsulates them).
    let decap_b = c.node("b").maps()?.counter(Verdict::Decapsulated)?.packets;
    let _ = ping(&c.pod_on("a").ns, c.pod_on("b").ip, 3, "")?;
    let after = c.node("b").maps()?.counter(Verdict::Decapsulated)?.packets;
    assert!(after >= decap_b + 3, "a's encap keeps forwarding after the failed start ({decap_b} -> {after})");
    Ok(())
}

/// `--iface` defaults to the interface holding the node's underlay address, not the
/// first interface, nor the one with the lowest index.
#[test]
fn uplink_defaults_to_the_interface_with_the_underlay_address() -> Result<()> {
    let mut c = Cluster::new(&[("a", Kind::Weft), ("b", Kind::Weft)])?;
    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().unwrap().stop()?;
    let ns = &c.nodes[a].ns;
    ns.ip("link add eth0 type veth peer name eth1")?;
    ns.ip("addr add 198.51.100.1/24 dev eth0")?;
    ns.ip("link set eth0 up")?;
    ns.ip("link set eth1 up")?;
    c.start_agent(a, &[])?;
    let log = c.agent_log("a");
    assert!(log.contains("uplink=ul0"), "{log}");
    let ns = &c.nodes[a].ns;
    assert_eq!(tcx_programs(ns, "ul0", TcAttachType::Ingress)?.len(), 1, "decap on ul0");
    assert!(tcx_programs(ns, "eth0", TcAttachType::Ingress)?.is_empty(), "nothing on eth0");
    ping_ok(&c.node("a").ns, c.node("b").overlay_ip(), 2)?;
    Ok(())
}
