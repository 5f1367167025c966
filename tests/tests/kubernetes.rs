//! Kubernetes mode end to end: agents in node namespaces learn the cluster from the
//! project's API server through the real `kube` client; Node changes are made with the
//! real `kubectl`; pods get their addresses from the reference CNI plugins through the
//! conflist the agent wrote from the podCIDR the API server gave its node; node c is
//! a Flannel node that knows the others only from their annotations.

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, ensure};
use serde_json::Value;
use weft_e2e::{
    cluster::{Cluster, Kind},
    kube::{self, node_manifest},
    traffic::{ping, ping_ok},
    wait_for,
};

const P: &str = "flannel.alpha.coreos.com";

fn cluster() -> Cluster {
    let mut c = Cluster::new_kube(&[("a", Kind::Weft), ("b", Kind::Weft), ("c", Kind::Flannel)]).expect("cluster");
    for n in ["a", "b", "c"] {
        c.add_pod(n).expect("CNI ADD");
    }
    c
}

fn all_pods_reach_each_other(c: &Cluster) -> Result<()> {
    for from in &c.pods {
        for to in c.pods.iter().filter(|p| p.node != from.node) {
            ping_ok(&from.ns, to.ip, 2).map_err(|e| anyhow!("{} -> {}: {e}\n{}", from.name, to.name, c.logs()))?;
        }
    }
    Ok(())
}

fn has_route(c: &Cluster, node: &str, cidr: &str) -> bool {
    c.node(node).ns.ip("route show").map(|r| r.contains(&format!("{cidr} via"))).unwrap_or(false)
}

/// The Events about Node `node` as `kubectl get events -A` lists them: (type, reason,
/// message, reporting instance).
fn node_events(c: &Cluster, node: &str) -> Result<Vec<(String, String, String, String)>> {
    let selector = format!("involvedObject.kind=Node,involvedObject.name={node}");
    let out = c.control().kubectl(&["get", "events", "-A", "--field-selector", &selector, "-o", "json"])?;
    let list: Value = serde_json::from_str(&out).map_err(|e| anyhow!("kubectl get events: {e}: {out}"))?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let items = list["items"].as_array().ok_or_else(|| anyhow!("no items: {out}"))?;
    Ok(items.iter().map(|e| (text(&e["type"]), text(&e["reason"]), text(&e["message"]), text(&e["reportingInstance"]))).collect())
}

/// Waits until `node` has an Event with `reason`; returns all of its Events.
fn wait_for_event(c: &Cluster, node: &str, reason: &str) -> Result<Vec<(String, String, String, String)>> {
    wait_for(Duration::from_secs(10), || node_events(c, node).ok().filter(|es| es.iter().any(|e| e.1 == reason)))
        .ok_or_else(|| anyhow!("no {reason} Event on node {node}: {:?}\n{}", node_events(c, node), c.logs()))
}

fn has_tunnel(c: &Cluster, node: &str, cidr: &str) -> bool {
    c.node(node).maps().and_then(|m| Ok(m.tunnels()?)).map(|t| t.keys().any(|k| k.to_string() == cidr)).unwrap_or(false)
}

/// The agents advertise in Flannel's format, clear NetworkUnavailable, write
/// subnet.env and the conflist; pods get addresses from their node's podCIDR; every
/// pod reaches every other, Flannel node included.
#[test]
fn agents_advertise_like_flannel_and_pods_talk() -> Result<()> {
    let c = cluster();
    let cp = c.control();
    for n in ["a", "b"] {
        let node = c.node(n);
        let json: Value = serde_json::from_str(&cp.kubectl(&["get", "node", n, "-o", "json"])?)?;
        let a = &json["metadata"]["annotations"];
        assert_eq!(a[format!("{P}/backend-type")], "vxlan");
        assert_eq!(a[format!("{P}/kube-subnet-manager")], "true");
        assert_eq!(a[format!("{P}/public-ip")], node.underlay.to_string());
        let data: Value = serde_json::from_str(a[format!("{P}/backend-data")].as_str().unwrap())?;
        assert_eq!(data["VNI"], 1);
        let mac = data["VtepMAC"].as_str().unwrap();
        assert!(node.ns.ip("link show weft0")?.contains(mac), "weft0 carries the advertised VtepMAC {mac}");
        let cond = json["status"]["conditions"].as_array().unwrap();
        assert!(
            cond.iter().any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False"),
            "NetworkUnavailable cleared: {cond:?}"
        );
        assert!(cond.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"), "Ready kept: {cond:?}");
        let env = std::fs::read_to_string(node.subnet_file())?;
        let o = node.pod_cidr.network().octets();
        assert_eq!(
            env,
            format!(
                "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}.{}.{}.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
                kube::NETWORK,
                o[0],
                o[1],
                o[2]
            )
        );
        let pod = c.pod_on(n);
        assert!(node.pod_cidr.contains(pod.ip), "pod {} got {} from host-local over {}", pod.name, pod.ip, node.pod_cidr);
    }
    let wide = cp.kubectl(&["get", "nodes", "-o", "wide"])?;
    for n in &c.nodes {
        assert!(wide.contains(&n.name) && wide.contains(&n.underlay.to_string()), "kubectl get nodes -o wide:\n{wide}");
    }
    all_pods_reach_each_other(&c)
}

/// A new node (namespace + `kubectl create -f`) is reachable from every pod within 5 s
/// of its Node event; `kubectl delete node` removes its routes and entries within 5 s.
#[test]
fn nodes_added_and_deleted_with_kubectl() -> Result<()> {
    let mut c = cluster();
    let d = c.add_node_ns("d", Kind::Weft, 3)?;
    let manifest = node_manifest("d", c.nodes[d].underlay, c.nodes[d].pod_cidr);
    c.control().kubectl_create(&manifest, &c.dir)?;
    c.start_agent(d, &[])?;
    // The Node event that makes d a peer: its advertisement appearing.
    kube::require_lease(&c.control().api, "d")?;
    let advertised = Instant::now();
    c.sync_flannel()?;
    c.add_pod("d")?;
    let d_ip = c.pod_on("d").ip;
    for from in ["a", "b", "c"] {
        let reached = wait_for(Duration::from_secs(5), || ping(&c.pod_on(from).ns, d_ip, 1, "").ok().filter(|p| p.received == 1));
        assert!(reached.is_some(), "pod on {from} cannot reach the new node's pod\n{}", c.logs());
    }
    let t = advertised.elapsed();
    println!("new node d reachable from every other node's pod {t:?} after its Node event");
    assert!(t < Duration::from_secs(5));
    ping_ok(&c.pod_on("d").ns, c.pod_on("c").ip, 2)?;

    let cidr = c.node("b").pod_cidr.to_string();
    c.control().kubectl(&["delete", "node", "b"])?;
    let deleted = Instant::now();
    let gone = wait_for(Duration::from_secs(5), || {
        (["a", "d"].iter().all(|n| !has_route(&c, n, &cidr) && !has_tunnel(&c, n, &cidr))).then_some(())
    });
    assert!(gone.is_some(), "node b's routes and tunnel entries must go within 5 s\n{}", c.logs());
    println!("deleted node b swept from a and d {:?} after kubectl delete", deleted.elapsed());
    ping_ok(&c.pod_on("a").ns, c.pod_on("d").ip, 2)?;
    Ok(())
}

/// A node's public IP (through the `public-ip-overwrite` annotation, set with kubectl)
/// or VtepMAC changes: peers follow and traffic flows again.
#[test]
fn traffic_follows_ip_and_vtep_mac_changes() -> Result<()> {
    let mut c = cluster();
    let cp = c.control();
    // b moves to a second underlay address.
    c.node("b").ns.ip("addr add 198.19.0.50/24 dev ul0")?;
    cp.kubectl(&["annotate", "node", "b", &format!("{P}/public-ip-overwrite=198.19.0.50")])?;
    let t = Instant::now();
    let moved = wait_for(Duration::from_secs(5), || {
        let l = kube::require_lease(&cp.api, "b").ok()?;
        let tunnels = c.node("a").maps().ok()?.tunnels().ok()?;
        let a_follows = tunnels.values().any(|e| Ipv4Addr::from(e.underlay_ip) == Ipv4Addr::new(198, 19, 0, 50));
        (l.public_ip == Ipv4Addr::new(198, 19, 0, 50) && a_follows).then_some(())
    });
    assert!(moved.is_some(), "b re-advertised and a followed\n{}", c.logs());
    println!("public-ip change followed {:?} after kubectl annotate", t.elapsed());
    c.sync_flannel()?;
    // The old address is gone: only the new one can carry the traffic. (Without
    // promote_secondaries, deleting the primary address takes .50 with it.)
    c.node("b").ns.sh("sysctl -qw net.ipv4.conf.ul0.promote_secondaries=1")?;
    c.node("b").ns.ip("addr del 198.19.0.11/24 dev ul0")?;
    assert!(c.node("b").ns.ip("-4 addr show dev ul0")?.contains("198.19.0.50/24"), "b keeps its new address");
    all_pods_reach_each_other(&c)?;

    // b's node is re-provisioned: weft0 and the annotation gone, a new VtepMAC.
    let b = c.node_index("b");
    let old = kube::require_lease(&cp.api, "b")?.vtep_mac;
    c.nodes[b].agent.as_mut().unwrap().stop()?;
    c.nodes[b].ns.ip("link del weft0")?;
    c.control().kubectl(&["annotate", "node", "b", &format!("{P}/backend-data-")])?;
    c.start_agent(b, &[])?;
    let new = kube::require_lease(&c.control().api, "b")?.vtep_mac;
    assert_ne!(new, old, "a new VtepMAC");
    let t = Instant::now();
    let followed = wait_for(Duration::from_secs(5), || {
        let tunnels = c.node("a").maps().ok()?.tunnels().ok()?;
        tunnels.values().any(|e| e.vtep_mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":") == new).then_some(())
    });
    assert!(followed.is_some(), "a uses b's new VtepMAC\n{}", c.logs());
    println!("VtepMAC change followed {:?}", t.elapsed());
    c.sync_flannel()?;
    all_pods_reach_each_other(&c)
}

/// A node behind 1:1 NAT, as with k3s's `flannel-external-ip`: it advertises a
/// public address (`public-ip-overwrite`) that no interface of its own holds. Peers
/// send to that address and the NAT hands the frames over addressed to the node's own;
/// the node's frames leave from its own address and reach peers translated. The
/// tunnel must use the node's own address on the wire, as Flannel's vxlan device
/// (bound to the interface's address) does, while peers know it by the public one.
/// The NAT is the underlay switch's namespace routing for 198.19.0.50 with
/// iptables DNAT/SNAT: outside node b, so b sees only its own address.
#[test]
fn a_node_behind_nat_is_reached_at_its_public_address() -> Result<()> {
    let c = cluster();
    let public = Ipv4Addr::new(198, 19, 0, 50);
    let b = c.node("b").underlay;
    let sw = &c.underlay;
    sw.ip(&format!("addr add {public}/24 dev br0"))?;
    sw.sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.br0.send_redirects=0")?;
    sw.sh(&format!("iptables -t nat -A PREROUTING -d {public} -p udp --dport 8472 -j DNAT --to-destination {b}"))?;
    sw.sh(&format!("iptables -t nat -A POSTROUTING -s {b} -p udp --dport 8472 -j SNAT --to-source {public}"))?;
    // b reaches its peers through the NAT (their replies come back the same way).
    for peer in ["a", "c"] {
        c.node("b").ns.ip(&format!("route add {}/32 via {public} dev ul0", c.node(peer).underlay))?;
    }
    let cp = c.control();
    cp.kubectl(&["annotate", "node", "b", &format!("{P}/public-ip-overwrite={public}")])?;
    let followed = wait_for(Duration::from_secs(5), || {
        let l = kube::require_lease(&cp.api, "b").ok()?;
        let tunnels = c.node("a").maps().ok()?.tunnels().ok()?;
        let a_follows = tunnels.values().any(|e| Ipv4Addr::from(e.underlay_ip) == public);
        (l.public_ip == public && a_follows).then_some(())
    });
    assert!(followed.is_some(), "b advertises {public} and a follows\n{}", c.logs());
    c.sync_flannel()?;
    // b's tunnel stays on its own address: what decap accepts and encap sends from.
    let config = c.node("b").maps()?.config()?;
    assert_eq!(Ipv4Addr::from(config.underlay_ip), b, "b's tunnel address\n{}", c.logs());
    assert!(c.agent_log("b").contains("NAT?"), "b says why the tunnel is not on {public}\n{}", c.agent_log("b"));
    all_pods_reach_each_other(&c)?;
    // The traffic did cross the NAT, both ways.
    let nat = sw.sh("iptables -t nat -L -v -n -x")?;
    for target in ["DNAT", "SNAT"] {
        let packets: u64 = nat
            .lines()
            .find(|l| l.contains(target) && l.contains("8472"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no {target} rule in\n{nat}"))?;
        ensure!(packets > 0, "no tunnel traffic through the {target} rule\n{nat}");
    }
    Ok(())
}

/// A mistyped `public-ip-overwrite` on a node's own Node object, set while its agent
/// runs, costs one warning: the agent keeps the address it uses and goes on following
/// the other nodes (here: a's move to another address); restarted, it starts.
#[test]
fn a_bad_own_address_annotation_does_not_stop_updates() -> Result<()> {
    let mut c = cluster();
    let cp = c.control();
    cp.kubectl(&["annotate", "node", "b", &format!("{P}/public-ip-overwrite=198.19.0.x")])?;
    c.node("a").ns.ip("addr add 198.19.0.60/24 dev ul0")?;
    cp.kubectl(&["annotate", "node", "a", &format!("{P}/public-ip-overwrite=198.19.0.60")])?;
    let t = Instant::now();
    let followed = wait_for(Duration::from_secs(5), || {
        let tunnels = c.node("b").maps().ok()?.tunnels().ok()?;
        tunnels.values().any(|e| Ipv4Addr::from(e.underlay_ip) == Ipv4Addr::new(198, 19, 0, 60)).then_some(())
    });
    assert!(followed.is_some(), "b follows a's move despite its own bad annotation\n{}", c.logs());
    println!("b followed a's move {:?} after its own annotation went bad", t.elapsed());
    // One more resync (2 s here) must neither fail nor warn again.
    std::thread::sleep(Duration::from_millis(2500));
    let log = c.agent_log("b");
    let warnings = log.lines().filter(|l| l.contains("WARN") && l.contains("198.19.0.x")).count();
    assert_eq!(warnings, 1, "b warns once about its own annotation\n{log}");
    // And one Warning Event on its Node, from its own agent.
    let events = wait_for_event(&c, "b", "InvalidAddress")?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "Warning");
    assert!(
        events[0].2.contains("198.19.0.x") && events[0].2.contains(&format!("keeping {}", c.node("b").underlay)),
        "{events:?}"
    );
    assert_eq!(events[0].3, "b", "reported by b's agent");
    assert!(!log.contains("ERROR"), "b's syncs failed\n{log}");
    assert_eq!(kube::require_lease(&cp.api, "b")?.public_ip, c.node("b").underlay, "b keeps advertising its address");
    c.sync_flannel()?;
    all_pods_reach_each_other(&c)?;
    // Nor does it keep a restarted agent down: it advertises the uplink's address.
    let b = c.node_index("b");
    c.restart_agent(b, &[])?;
    assert_eq!(kube::require_lease(&c.control().api, "b")?.public_ip, c.nodes[b].underlay, "b still advertises its address");
    all_pods_reach_each_other(&c)
}

/// Entries of a node that does not exist (planted while nobody watched) are swept when
/// the agent relists; a node with malformed annotations is skipped with one warning
/// and the others are unaffected.
#[test]
fn relist_sweeps_unknown_entries_and_bad_nodes_are_skipped() -> Result<()> {
    let c = cluster();
    let a = c.node("a");
    let ghost: ipnetwork::Ipv4Network = "10.244.99.0/24".parse()?;
    let mut maps = a.maps()?;
    maps.set_tunnel(
        ghost,
        weft_common::tunnel::TunnelEndpoint {
            underlay_ip: [198, 19, 0, 99],
            vni: 1,
            vtep_mac: [0x0a, 0, 0, 0, 0, 0x99],
            _pad: [0; 2],
        },
    )?;
    a.ns.ip("route add 10.244.99.0/24 via 10.244.99.0 dev weft0 onlink")?;
    // Force a relist: forget history and cut every watch; the watchers get 410 Gone.
    let cp = c.control();
    cp.api.compact();
    cp.stop();
    cp.resume()?;
    let swept = wait_for(Duration::from_secs(10), || {
        (!has_route(&c, "a", "10.244.99.0/24") && !has_tunnel(&c, "a", "10.244.99.0/24")).then_some(())
    });
    assert!(swept.is_some(), "planted entries swept\n{}", c.agent_log("a"));

    // A node whose backend-data is not JSON: skipped, with one warning; others fine.
    let mut bad = node_manifest("e", Ipv4Addr::new(198, 19, 0, 60), "10.244.60.0/24".parse()?);
    bad["metadata"]["annotations"] = serde_json::json!({
        format!("{P}/backend-type"): "vxlan",
        format!("{P}/backend-data"): "{not json",
        format!("{P}/public-ip"): "198.19.0.60",
        format!("{P}/kube-subnet-manager"): "true",
    });
    cp.kubectl_create(&bad, &c.dir)?;
    let warned = wait_for(Duration::from_secs(5), || {
        c.agent_log("a").contains("skipping node: flannel.alpha.coreos.com/backend-data: not JSON").then_some(())
    });
    assert!(warned.is_some(), "{}", c.agent_log("a"));
    // An overlapping podCIDR is skipped too.
    let mut overlap = node_manifest("f", Ipv4Addr::new(198, 19, 0, 61), "10.244.2.0/25".parse()?);
    overlap["metadata"]["annotations"] = kube::flannel_annotations(Ipv4Addr::new(198, 19, 0, 61), "0a:58:0a:f4:61:00");
    cp.kubectl_create(&overlap, &c.dir)?;
    let warned = wait_for(Duration::from_secs(5), || c.agent_log("a").contains("overlaps 10.244.2.0/24 of node b").then_some(()));
    assert!(warned.is_some(), "{}", c.agent_log("a"));
    std::thread::sleep(Duration::from_secs(3)); // a few resyncs
    assert_eq!(c.agent_log("a").matches("backend-data: not JSON").count(), 1, "one warning per node and reason");
    assert!(!has_tunnel(&c, "a", "10.244.60.0/24") && !has_tunnel(&c, "a", "10.244.2.0/25"));
    all_pods_reach_each_other(&c)?;

    // Both show in the skipped-peers metric, with their reason.
    let mut c = c;
    let ai = c.node_index("a");
    c.restart_agent(ai, &["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"])?;
    let metric = r#"weft_peers_skipped{reason="invalid"} 2"#;
    let shown = wait_for(Duration::from_secs(10), || {
        weft_e2e::traffic::http_get(&c.node("a").ns, 8471, "/metrics").ok().filter(|m| m.contains(metric))
    });
    assert!(shown.is_some(), "no {metric} in /metrics\n{}", c.agent_log("a"));
    Ok(())
}

/// A `public-ip` no tunnel can reach (loopback here), or one that is already an
/// older node's (b's), makes the newcomer a skipped peer, logged and evented like any
/// bad annotation; the node that had the address keeps it, and traffic goes on.
#[test]
fn unusable_or_taken_public_ips_are_skipped_and_evented() -> Result<()> {
    let c = cluster();
    let cp = c.control();
    let b_ip = c.node("b").underlay;
    for (name, ip, cidr) in [("lo", Ipv4Addr::LOCALHOST, "10.244.61.0/24"), ("dup", b_ip, "10.244.62.0/24")] {
        let mut n = node_manifest(name, ip, cidr.parse()?);
        n["metadata"]["annotations"] = kube::flannel_annotations(ip, "0a:58:0a:f4:3d:00");
        cp.kubectl_create(&n, &c.dir)?;
    }
    let lo = wait_for_event(&c, "lo", "PeerSkipped")?;
    assert!(lo.iter().any(|e| e.2.contains("public-ip: 127.0.0.1 is a loopback address")), "{lo:?}");
    let dup = wait_for_event(&c, "dup", "PeerSkipped")?;
    assert!(dup.iter().any(|e| e.2.contains(&format!("public-ip: {b_ip} is already node b's"))), "{dup:?}");
    let log = c.agent_log("a");
    assert!(log.contains("skipping node: flannel.alpha.coreos.com/public-ip: 127.0.0.1 is a loopback address"), "{log}");
    for cidr in ["10.244.61.0/24", "10.244.62.0/24"] {
        assert!(!has_tunnel(&c, "a", cidr) && !has_route(&c, "a", cidr), "{cidr} programmed on a");
    }
    assert!(has_tunnel(&c, "a", &c.node("b").pod_cidr.to_string()), "b keeps its address and its entry");
    all_pods_reach_each_other(&c)
}

/// Leases real flanneld rejects — a VtepMAC `zz` (not a MAC to Go's `net.ParseMAC`), a
/// public-ip that is no IPv4 address — are skipped by the emulated Flannel node, with
/// flanneld's reason, as by the weft nodes; every other node keeps working on both
/// kinds. Once fixed with kubectl, the lease is programmed on both.
#[test]
fn leases_flanneld_rejects_are_skipped_by_flannel_and_weft_nodes() -> Result<()> {
    let c = cluster();
    let cp = c.control();
    for (name, ip, mac, cidr) in
        [("badmac", "198.19.0.70", "zz", "10.244.70.0/24"), ("badip", "198.19.0.300", "0a:58:0a:f4:47:00", "10.244.71.0/24")]
    {
        let mut n = node_manifest(name, Ipv4Addr::new(198, 19, 0, 70), cidr.parse()?);
        n["metadata"]["annotations"] = kube::flannel_annotations(Ipv4Addr::new(198, 19, 0, 70), mac);
        n["metadata"]["annotations"][format!("{P}/public-ip")] = ip.into();
        cp.kubectl_create(&n, &c.dir)?;
    }
    let rejected = c.sync_flannel()?;
    let why = |n: &str| rejected.get(n).map(|r| r.why.clone()).unwrap_or_default();
    assert!(why("badmac").contains("error decoding subnet lease JSON: address zz: invalid MAC address"), "{rejected:?}");
    assert!(why("badip").contains("Error turning node to lease: invalid IP address format"), "{rejected:?}");
    assert_eq!(rejected.len(), 2, "only those two: {rejected:?}");
    for (name, cidr) in [("badmac", "10.244.70.0/24"), ("badip", "10.244.71.0/24")] {
        assert!(!has_route(&c, "c", cidr), "Flannel node c programmed {name}");
        let events = wait_for_event(&c, name, "PeerSkipped")?;
        assert!(events.iter().any(|e| e.0 == "Warning"), "{events:?}");
        for n in ["a", "b"] {
            assert!(!has_tunnel(&c, n, cidr) && !has_route(&c, n, cidr), "weft node {n} programmed {name}");
        }
    }
    assert!(c.node("c").ns.ip("neigh show dev flannel.1")?.lines().all(|l| !l.contains("10.244.70.0")));
    all_pods_reach_each_other(&c)?;

    // Fixed: both kinds of node take it up; the other one stays skipped.
    let data = r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:46:00"}"#;
    cp.kubectl(&["annotate", "node", "badmac", "--overwrite", &format!("{P}/backend-data={data}")])?;
    let rejected = c.sync_flannel()?;
    assert_eq!(rejected.keys().collect::<Vec<_>>(), ["badip"]);
    assert!(has_route(&c, "c", "10.244.70.0/24"), "Flannel node c programs the fixed lease");
    let taken = wait_for(Duration::from_secs(5), || ["a", "b"].iter().all(|n| has_tunnel(&c, n, "10.244.70.0/24")).then_some(()));
    assert!(taken.is_some(), "weft nodes take the fixed lease up\n{}", c.logs());
    all_pods_reach_each_other(&c)
}

/// A Node with a malformed annotation gets one Warning Event, however many agents
/// skip it and however often they resync, which `kubectl get events` and `kubectl
/// describe node` show; fixing the annotation makes it a peer again, with a Normal
/// Event saying so.
#[test]
fn a_skipped_node_gets_one_warning_event_and_its_fix_is_taken_up() -> Result<()> {
    let c = cluster();
    let cp = c.control();
    let ip = Ipv4Addr::new(198, 19, 0, 60);
    let mut bad = node_manifest("e", ip, "10.244.60.0/24".parse()?);
    bad["metadata"]["annotations"] = kube::flannel_annotations(ip, "0a:58:0a:f4:3c:00");
    bad["metadata"]["annotations"][format!("{P}/backend-data")] = "{not json".into();
    cp.kubectl_create(&bad, &c.dir)?;
    wait_for_event(&c, "e", "PeerSkipped")?;
    std::thread::sleep(Duration::from_secs(3)); // both agents warned, and resynced
    for n in ["a", "b"] {
        assert_eq!(c.agent_log(n).matches("skipping node: ").count(), 1, "{n} warns once\n{}", c.agent_log(n));
    }
    let events = node_events(&c, "e")?;
    assert_eq!(events.len(), 1, "one Event for two agents and several resyncs: {events:?}");
    let (kind, reason, message, instance) = &events[0];
    assert_eq!((kind.as_str(), reason.as_str()), ("Warning", "PeerSkipped"));
    assert!(message.contains("backend-data: not JSON"), "{message}");
    assert!(["a", "b"].contains(&instance.as_str()), "reported by a weft agent: {instance}");
    let table = cp.kubectl(&["get", "events", "-A"])?;
    let row = table.lines().find(|l| l.contains("node/e")).ok_or_else(|| anyhow!("no row for node/e:\n{table}"))?;
    assert!(row.contains("Warning") && row.contains("PeerSkipped") && row.contains("not JSON"), "{row}");
    let described = cp.kubectl(&["describe", "node", "e"])?;
    assert!(described.contains("PeerSkipped") && described.contains("not JSON"), "kubectl describe node e:\n{described}");
    assert!(!has_tunnel(&c, "a", "10.244.60.0/24"));

    // The fix: the node becomes a peer on both weft nodes, and says so once.
    let data = r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:3c:00"}"#;
    cp.kubectl(&["annotate", "node", "e", "--overwrite", &format!("{P}/backend-data={data}")])?;
    let taken = wait_for(Duration::from_secs(5), || {
        (has_tunnel(&c, "a", "10.244.60.0/24") && has_tunnel(&c, "b", "10.244.60.0/24")).then_some(())
    });
    assert!(taken.is_some(), "the fixed node is a peer\n{}", c.logs());
    let events = wait_for_event(&c, "e", "PeerAccepted")?;
    std::thread::sleep(Duration::from_secs(2));
    let events_later = node_events(&c, "e")?;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events_later, events, "nothing more once fixed");
    Ok(())
}

/// The API server goes away for 30 s: pod-to-pod traffic keeps flowing without a
/// single loss, nothing is flushed, and a change made meanwhile (a node deleted) is
/// picked up when it returns.
#[test]
fn api_server_outage_keeps_traffic_and_resyncs() -> Result<()> {
    let c = cluster();
    let cp = c.control();
    // A node with no namespace behind it, deleted while the agents cannot see.
    let mut ghost = node_manifest("ghost", Ipv4Addr::new(198, 19, 0, 77), "10.244.77.0/24".parse()?);
    ghost["metadata"]["annotations"] = kube::flannel_annotations(Ipv4Addr::new(198, 19, 0, 77), "0a:58:0a:f4:77:00");
    cp.api.create_node(ghost).map_err(|e| anyhow!("{e:?}"))?;
    let ghost_cidr = "10.244.77.0/24";
    let known =
        wait_for(Duration::from_secs(5), || (has_route(&c, "a", ghost_cidr) && has_route(&c, "b", ghost_cidr)).then_some(()));
    assert!(known.is_some(), "ghost node programmed\n{}", c.logs());

    let a_pod = c.pod_on("a").ns.name.clone();
    let pings: Vec<_> = ["b", "c"]
        .iter()
        .map(|n| {
            let (ns, ip) = (a_pod.clone(), c.pod_on(n).ip.to_string());
            std::thread::spawn(move || {
                Command::new("ip").args(["netns", "exec", &ns, "ping", "-n", "-c", "170", "-i", "0.2", "-W", "1", &ip]).output()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    cp.stop();
    let down = Instant::now();
    cp.api.delete_node("ghost").map_err(|e| anyhow!("{e:?}"))?;
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    assert!(has_route(&c, "a", ghost_cidr), "nothing changes while the API server is away");
    cp.resume()?;
    let back = Instant::now();
    let caught_up =
        wait_for(Duration::from_secs(15), || (!has_route(&c, "a", ghost_cidr) && !has_route(&c, "b", ghost_cidr)).then_some(()));
    assert!(caught_up.is_some(), "agents resync after the outage\n{}", c.logs());
    println!("agents caught up {:?} after the API server returned", back.elapsed());
    for p in pings {
        let out = p.join().map_err(|_| anyhow!("ping thread"))??;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains("170 received"), "losses during the outage:\n{text}\n{}", c.logs());
    }
    Ok(())
}

/// A restarted agent keeps its VtepMAC (from its own annotation), even if weft0 is gone,
/// and clears a NetworkUnavailable set while it was down (its annotations are already
/// published, so it has nothing to advertise).
#[test]
fn restart_keeps_the_vtep_mac() -> Result<()> {
    let mut c = cluster();
    let a = c.node_index("a");
    let before = kube::require_lease(&c.control().api, "a")?.vtep_mac;
    c.nodes[a].agent.as_mut().unwrap().stop()?;
    c.nodes[a].ns.ip("link del weft0")?;
    let condition = |node: &Value| {
        node["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter().find(|c| c["type"] == "NetworkUnavailable").and_then(|c| c["status"].as_str().map(str::to_owned))
        })
    };
    c.control()
        .api
        .update_node("a", |node| {
            for cond in node["status"]["conditions"].as_array_mut().expect("conditions") {
                if cond["type"] == "NetworkUnavailable" {
                    cond["status"] = "True".into();
                }
            }
        })
        .map_err(|e| anyhow!("setting NetworkUnavailable: {e:?}"))?;
    let node: Value = serde_json::from_str(&c.control().kubectl(&["get", "node", "a", "-o", "json"])?)?;
    assert_eq!(condition(&node).as_deref(), Some("True"), "NetworkUnavailable set while the agent is down");
    c.start_agent(a, &[])?;
    assert_eq!(kube::require_lease(&c.control().api, "a")?.vtep_mac, before);
    assert!(c.nodes[a].ns.ip("link show weft0")?.contains(&before));
    let cleared = wait_for(Duration::from_secs(5), || {
        let node: Value = serde_json::from_str(&c.control().kubectl(&["get", "node", "a", "-o", "json"]).ok()?).ok()?;
        (condition(&node).as_deref() == Some("False")).then_some(())
    });
    assert!(cleared.is_some(), "the restarted agent clears NetworkUnavailable\n{}", c.logs());
    all_pods_reach_each_other(&c)
}

/// An agent waiting for its podCIDR serves its health port from the start: live
/// (`/healthz` 200: a restart would not help) and not ready (`/readyz` 503, saying
/// what it waits for), saying so once in its log; ready once kube-controller-manager's
/// podCIDR arrives (seen through a watch) and the dataplane is programmed.
#[test]
fn an_agent_waiting_for_its_pod_cidr_is_live_but_not_ready() -> Result<()> {
    let mut c = Cluster::new_kube(&[("a", Kind::Weft)])?;
    let z = c.add_node_ns("z", Kind::Weft, 1)?;
    let mut manifest = node_manifest("z", c.nodes[z].underlay, "10.244.9.0/24".parse()?);
    manifest["spec"] = serde_json::json!({});
    c.control().kubectl_create(&manifest, &c.dir)?;
    let cmd = c.agent_command(z, &["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"]);
    c.nodes[z].agent = Some(weft_e2e::agent::AgentProcess::spawn(cmd, "z", c.dir.join("agent-z.log"))?);
    let ns = &c.nodes[z].ns;
    let get = |path: &str| weft_e2e::traffic::http_get(ns, 8471, path).ok();
    let waiting = wait_for(Duration::from_secs(10), || get("/readyz").filter(|r| r.contains("podCIDR")))
        .ok_or_else(|| anyhow!("/readyz never said it waits for the podCIDR\n{}", c.agent_log("z")))?;
    assert!(waiting.starts_with("HTTP/1.1 503"), "{waiting}");
    std::thread::sleep(Duration::from_secs(2));
    let live = get("/healthz").ok_or_else(|| anyhow!("/healthz does not answer while waiting"))?;
    assert!(live.starts_with("HTTP/1.1 200"), "live while waiting: {live}");
    assert!(get("/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 503")), "still not ready");
    let log = c.agent_log("z");
    assert_eq!(log.matches("no spec.podCIDR yet").count(), 1, "one clear line while it waits:\n{log}");

    c.control().kubectl(&["patch", "node", "z", "-p", r#"{"spec":{"podCIDR":"10.244.9.0/24","podCIDRs":["10.244.9.0/24"]}}"#])?;
    let ready = wait_for(Duration::from_secs(15), || get("/readyz").filter(|r| r.starts_with("HTTP/1.1 200")));
    ready.ok_or_else(|| anyhow!("/readyz not ready after the podCIDR came\n{}", c.agent_log("z")))?;
    assert!(ns.ip("link show weft0").is_ok(), "programmed when ready");
    assert!(has_route(&c, "z", &c.node("a").pod_cidr.to_string()), "node a's pods routed when ready");
    Ok(())
}

/// This node's own podCIDR is re-checked after start (agent/src/own_cidr.rs): when its
/// Node is deleted and recreated while an older Node took its range, or recreated with
/// another range, the agent says so (error log, a PodCIDRConflict Warning Event on the
/// Node, `/readyz` 503 "degraded", `/healthz` still 200) and keeps serving the range
/// its pods hold (weft0's address, subnet.env, its routes); other nodes are unaffected.
/// Once the Node's range is its own again, the agent is ready and every pod talks.
#[test]
fn own_pod_cidr_taken_or_changed_after_start_is_reported_and_the_served_range_kept() -> Result<()> {
    let mut c = cluster();
    let bi = c.node_index("b");
    c.restart_agent(bi, &["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"])?;
    let (b_ip, b_cidr, a_cidr) = (c.node("b").underlay, c.node("b").pod_cidr, c.node("a").pod_cidr);
    let get = |c: &Cluster, path: &str| weft_e2e::traffic::http_get(&c.node("b").ns, 8471, path).ok();
    let ready = |c: &Cluster| {
        wait_for(Duration::from_secs(15), || get(c, "/readyz").filter(|r| r.starts_with("HTTP/1.1 200")))
            .map(|_| ())
            .ok_or_else(|| anyhow!("b not ready: {:?}\n{}", get(c, "/readyz"), c.agent_log("b")))
    };
    let degraded = |c: &Cluster, needle: &str| -> Result<String> {
        let r = wait_for(Duration::from_secs(15), || get(c, "/readyz").filter(|r| r.contains(needle)))
            .ok_or_else(|| anyhow!("/readyz never said {needle:?}: {:?}\n{}", get(c, "/readyz"), c.agent_log("b")))?;
        ensure!(r.starts_with("HTTP/1.1 503") && r.contains("degraded: "), "{r}");
        let live = get(c, "/healthz").unwrap_or_default();
        ensure!(live.starts_with("HTTP/1.1 200"), "live all the same: {live}");
        Ok(r)
    };
    // What b serves: the range its pods hold.
    let serves_old_range = |c: &Cluster| -> Result<()> {
        let b = c.node("b");
        let addr = b.ns.ip("-4 addr show dev weft0")?;
        ensure!(addr.contains(&format!("{}/32", b_cidr.network())), "weft0 keeps {b_cidr}'s address: {addr}");
        let env = std::fs::read_to_string(b.subnet_file())?;
        let o = b_cidr.network().octets();
        ensure!(env.contains(&format!("FLANNEL_SUBNET={}.{}.{}.1/24", o[0], o[1], o[2])), "{env}");
        ensure!(has_route(c, "b", &a_cidr.to_string()), "b keeps routing a's pods");
        ensure!(b_cidr.contains(c.pod_on("b").ip), "b's pod holds an address of the served range");
        Ok(())
    };
    let pods_talk = |c: &Cluster| -> Result<()> {
        // b advertises on its recreated Node within a resync period.
        wait_for(Duration::from_secs(10), || kube::require_lease(&c.control().api, "b").ok())
            .ok_or_else(|| anyhow!("b never advertised on its recreated Node\n{}", c.agent_log("b")))?;
        c.sync_flannel()?;
        wait_for(Duration::from_secs(10), || all_pods_reach_each_other(c).ok())
            .ok_or_else(|| anyhow!("pods do not all reach each other: {:?}", all_pods_reach_each_other(c)))
    };
    let recreate_b = |c: &Cluster, cidr: ipnetwork::Ipv4Network| -> Result<()> {
        c.control().kubectl(&["delete", "node", "b"])?;
        c.control().kubectl_create(&node_manifest("b", b_ip, cidr), &c.dir)?;
        Ok(())
    };
    ready(&c)?;

    // 1. Node b deleted; its range goes to a new Node x; b comes back with that range.
    c.control().kubectl(&["delete", "node", "b"])?;
    let x_ip = Ipv4Addr::new(198, 19, 0, 80);
    let mut x = node_manifest("x", x_ip, b_cidr);
    x["metadata"]["annotations"] = kube::flannel_annotations(x_ip, "0a:58:0a:f4:50:00");
    c.control().kubectl_create(&x, &c.dir)?;
    // creationTimestamp counts seconds: x must be older, not a tie (broken by name).
    std::thread::sleep(Duration::from_millis(1100));
    c.control().kubectl_create(&node_manifest("b", b_ip, b_cidr), &c.dir)?;
    let r = degraded(&c, "an older Node")?;
    assert!(r.contains(&format!("podCIDR {b_cidr} overlaps {b_cidr} of node x")), "{r}");
    let events = wait_for_event(&c, "b", "PodCIDRConflict")?;
    assert!(events.iter().any(|e| e.0 == "Warning" && e.2.contains("of node x, an older Node")), "{events:?}");
    assert!(c.agent_log("b").contains("this node's podCIDR: podCIDR"), "{}", c.agent_log("b"));
    serves_old_range(&c)?;
    // The older Node keeps the range on every peer: a routes it to x.
    let to_x = wait_for(Duration::from_secs(5), || {
        c.node("a").maps().ok()?.tunnels().ok()?.get(&b_cidr).filter(|t| t.underlay_ip == x_ip.octets()).map(|_| ())
    });
    assert!(to_x.is_some(), "a routes {b_cidr} to the older x\n{}", c.logs());

    // 2. x goes: b's range is its own again.
    c.control().kubectl(&["delete", "node", "x"])?;
    ready(&c)?;
    assert!(c.agent_log("b").contains("this node's podCIDR is its own again"));
    pods_talk(&c)?;

    // 3. Node b recreated with another range: reported, the old one served.
    recreate_b(&c, "10.244.52.0/24".parse()?)?;
    let r = degraded(&c, "podCIDR changed")?;
    assert!(r.contains(&format!("podCIDR changed from {b_cidr} to 10.244.52.0/24")) && r.contains("drain the node"), "{r}");
    let changed = wait_for(Duration::from_secs(10), || {
        node_events(&c, "b").ok().filter(|es| es.iter().any(|e| e.1 == "PodCIDRConflict" && e.2.contains("changed from")))
    });
    assert!(changed.is_some(), "no PodCIDRConflict Event for the change: {:?}", node_events(&c, "b"));
    serves_old_range(&c)?;
    ping_ok(&c.pod_on("a").ns, c.pod_on("c").ip, 2)?;
    ping_ok(&c.pod_on("c").ns, c.pod_on("a").ip, 2)?;

    // 4. Recreated with its range: ready, and every pod talks again.
    recreate_b(&c, b_cidr)?;
    ready(&c)?;
    serves_old_range(&c)?;
    pods_talk(&c)
}

/// `weft-agent uninstall` on a node whose agent is stopped removes everything weft
/// created there — every pin (so every program leaves its hook), `weft0` and its
/// peer with their routes, the conflist and subnet.env, the reserved NAT ports — and
/// lists each; checked by listing what is left. A second run finds nothing.
#[test]
fn uninstall_leaves_nothing_of_weft_behind() -> Result<()> {
    use aya::programs::TcAttachType::{Egress, Ingress};
    let mut c = Cluster::new_kube(&[("a", Kind::Weft), ("b", Kind::Weft)])?;
    c.add_pod("a")?;
    let a = c.node_index("a");
    let (bpffs, cni, subnet) = (c.nodes[a].bpffs_dir.clone(), c.nodes[a].cni_dir(), c.nodes[a].subnet_file());
    {
        let ns = &c.nodes[a].ns;
        let reserved = ns.sh("cat /proc/sys/net/ipv4/ip_local_reserved_ports")?;
        assert!(reserved.contains("1024-32767"), "the kube cluster runs --ip-masq: ports reserved ({reserved})");
        assert!(!ns.tc_programs("ul0", Ingress)?.is_empty() && !ns.tc_programs("cni0", Egress)?.is_empty());
    }
    c.nodes[a].agent.as_mut().unwrap().stop()?;
    let ns = &c.nodes[a].ns;
    let reserved = || ns.sh("cat /proc/sys/net/ipv4/ip_local_reserved_ports");

    let uninstall = || c.uninstall(a);
    let said = uninstall()?;
    println!("{said}");
    for line in
        ["removed link weft0", "removed pinned link", "removed pinned map", "10-weft.conflist", "subnet.env", "1024-32767"]
    {
        assert!(said.contains(line), "uninstall does not list {line:?}:\n{said}");
    }
    // What is left: nothing of weft's.
    assert!(!bpffs.exists(), "pins left: {:?}", std::fs::read_dir(&bpffs).map(|d| d.count()));
    for link in ["weft0", "weft0_peer"] {
        assert!(ns.ip(&format!("link show {link}")).is_err(), "{link} left");
    }
    let routes = ns.ip("route show")?;
    assert!(!routes.contains("weft0") && !routes.contains(&c.node("b").pod_cidr.to_string()), "routes left:\n{routes}");
    for (iface, hook) in [("ul0", Ingress), ("ul0", Egress), ("cni0", Egress)] {
        assert!(ns.tc_programs(iface, hook)?.is_empty(), "a program left on {iface}");
    }
    assert!(!ns.ip("link show ul0")?.contains("xdp"), "no XDP program left");
    assert!(!cni.join("10-weft.conflist").exists() && !subnet.exists(), "files left");
    let ports = reserved()?;
    assert!(!ports.contains("1024-32767") && !ports.contains("61000-65535"), "reserved ports left: {ports}");
    assert_eq!(uninstall()?.trim(), "nothing of weft's found on this node");
    Ok(())
}

/// A podCIDR outside the cluster network is refused at start, clearly.
#[test]
fn own_pod_cidr_outside_the_network_is_refused() -> Result<()> {
    let mut c = Cluster::new_kube(&[("a", Kind::Weft)])?;
    let z = c.add_node_ns("z", Kind::Weft, 1)?;
    let manifest = node_manifest("z", c.nodes[z].underlay, "10.99.0.0/24".parse()?);
    c.control().kubectl_create(&manifest, &c.dir)?;
    let (status, out) = weft_e2e::agent::run_to_exit(c.agent_command(z, &[]), Duration::from_secs(20))?;
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("podCIDR 10.99.0.0/24 lies outside the cluster network 10.244.0.0/16"), "{out}");
    assert!(c.nodes[z].ns.ip("link show weft0").is_err(), "nothing set up");
    // The Node says why, for `kubectl describe node`.
    // (Node a's agent reports it too, as a peer it skips.)
    let events = wait_for_event(&c, "z", "PeerSkipped")?;
    let own: Vec<_> = events.iter().filter(|e| e.3 == "z").collect();
    assert_eq!(own.len(), 1, "{events:?}");
    let (kind, reason, message, _) = own[0];
    assert_eq!((kind.as_str(), reason.as_str()), ("Warning", "InvalidPodCIDR"));
    assert!(message.contains("lies outside the cluster network") && message.contains("exits"), "{message}");
    assert!(events.iter().any(|e| e.1 == "PeerSkipped" && e.3 == "a"), "{events:?}");
    let described = c.control().kubectl(&["describe", "node", "z"])?;
    assert!(described.contains("InvalidPodCIDR"), "kubectl describe node z:\n{described}");
    Ok(())
}

/// Pods go through the whole CNI life cycle with the agent's conflist: ADD allocates
/// from the node's podCIDR, CHECK passes, DEL releases the address (the next ADD may
/// take it again).
#[test]
fn pods_are_added_checked_and_deleted_through_cni() -> Result<()> {
    let mut c = cluster();
    let i = c.add_pod("a")?;
    let (ip, ipam) = (c.pods[i].ip, c.node("a").dir.join("ipam"));
    c.check_pod(i)?;
    let reserved = |ip: Ipv4Addr| walk(&ipam).iter().any(|p| p.file_name().is_some_and(|n| n == ip.to_string().as_str()));
    assert!(reserved(ip), "host-local keeps {ip} reserved under {}", ipam.display());
    ping_ok(&c.pod_on("b").ns, ip, 2)?;
    c.del_pod(i)?;
    assert!(!reserved(ip), "DEL released {ip}");
    let again = c.add_pod("a")?;
    assert!(c.node("a").pod_cidr.contains(c.pods[again].ip));
    ping_ok(&c.pod_on("c").ns, c.pods[again].ip, 2)?;
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// kube-flannel.yml's `kube-flannel` container with only the image swapped: its
/// args (`--ip-masq --kube-subnet-mgr --healthz-port=8081`) and env (`POD_NAME`,
/// `POD_NAMESPACE`, no `NODE_NAME`) start the agent, which finds its node through its
/// own Pod as flanneld does. The environment adds only what the container's mounts
/// and service account would give it (kubeconfig, the ConfigMap's and hostPaths'
/// places in this test). Every flanneld flag weft refuses fails with its reason.
#[test]
fn kube_flannel_ymls_container_spec_runs_unchanged() -> Result<()> {
    let mut c = Cluster::new_kube(&[("a", Kind::Weft), ("b", Kind::Weft)])?;
    let a = c.node_index("a");
    c.nodes[a].agent.as_mut().unwrap().stop()?;
    // As the DaemonSet controller and the scheduler leave it (in kube-system: the test
    // API server has a fresh cluster's namespaces, not kube-flannel).
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kube-flannel-ds-x7k2p", "namespace": "kube-system", "labels": {"app": "flannel", "tier": "node"}},
        "spec": {"nodeName": "a", "hostNetwork": true, "containers": [{"name": "kube-flannel", "image": "weft-agent:0.1.0"}]}
    });
    c.control().api.create_pod(pod).map_err(|e| anyhow!("creating the agent's Pod: {e:?}"))?;

    let (n, cp) = (&c.nodes[a], c.control());
    let flannel_args = ["--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"];
    let env = [
        ("POD_NAME", "kube-flannel-ds-x7k2p".into()),
        ("POD_NAMESPACE", "kube-system".into()),
        ("EVENT_QUEUE_DEPTH", "5000".into()),
        ("CONT_WHEN_CACHE_NOT_READY", "false".into()),
        ("KUBECONFIG", cp.kubeconfig.clone()),
        ("FLANNELD_NET_CONFIG_PATH", cp.net_conf.clone()),
        ("FLANNELD_SUBNET_FILE", n.subnet_file()),
        ("WEFT_BPFFS_DIR", n.bpffs_dir.clone()),
        ("WEFT_CNI_CONF_DIR", n.cni_dir()),
        ("WEFT_CNI_IPAM_DATA_DIR", n.dir.join("ipam")),
    ];
    let netns = format!("--net={}", n.ns.path());
    let container = move |args: &[&str]| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(&netns).arg(weft_e2e::agent_binary()).args(args).env_remove("NODE_NAME").envs(env.clone());
        cmd
    };
    let log = n.dir.join("agent-a-flannel-spec.log");
    let agent = weft_e2e::agent::AgentProcess::start(container(&flannel_args), "a", log)?;
    let text = agent.log_text();
    assert!(!text.contains("WARN"), "kube-flannel.yml's own spec warns:\n{text}");
    assert!(text.contains("this node node=a"), "node name from the Pod:\n{text}");
    assert!(text.contains("program=\"weft_masq\" iface=ul0"), "--ip-masq taken:\n{text}");
    let ready = wait_for(Duration::from_secs(10), || {
        weft_e2e::traffic::http_get(&n.ns, 8081, "/readyz").ok().filter(|r| r.starts_with("HTTP/1.1 200"))
    });
    assert!(ready.is_some(), "/readyz on kube-flannel.yml's port 8081");
    c.nodes[a].agent = Some(agent);
    c.add_pod("a")?;
    c.add_pod("b")?;
    for (from, to) in [("a", "b"), ("b", "a")] {
        ping_ok(&c.pod_on(from).ns, c.pod_on(to).ip, 2).map_err(|e| anyhow!("{from} -> {to}: {e}\n{}", c.logs()))?;
        weft_e2e::traffic::tcp_transfer(&c.pod_on(from).ns, &c.pod_on(to).ns, c.pod_on(to).ip, 1 << 20)?;
    }

    // flanneld's flags weft refuses: a named reason each, never clap's bare error.
    for (flag, reason) in [
        ("--etcd-endpoints=http://127.0.0.1:2379", "weft has no etcd mode"),
        ("--public-ipv6=fd00::1", "IPv4 only"),
        ("--iface-can-reach=198.19.0.11", "--iface-can-reach: not supported"),
        ("--ip-blackhole-route", "--ip-blackhole-route: not supported"),
        ("--kube-annotation-prefix=example.com", "Flannel's own annotations"),
    ] {
        let out = container(&[&flannel_args[..], &[flag]].concat()).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} accepted");
        assert!(stderr.contains(reason) && !stderr.contains("unexpected argument"), "{flag}: {stderr}");
    }
    Ok(())
}
