//! Masquerade (`--ip-masq`) end to end, static peers mode: pods on two weft nodes
//! reach a host on the "internet" (behind a router on the underlay that knows no pod
//! addresses, so only masqueraded traffic gets answers), which sees the nodes'
//! addresses; what Flannel's rules leave alone keeps its addresses.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    sync::{Arc, Barrier},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nix::sys::signal::Signal;
use weft_e2e::{
    agent::AgentProcess,
    cluster::{Cluster, INTERNET_HOST, Kind},
    netns::Netns,
    traffic::{next_port, ping_ok, tcp_transfer, tcp_transfer_via},
    wait_for,
};

/// Linux's default ephemeral ports (`net.ipv4.ip_local_port_range`): the node's own.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// net-conf.json for static mode (its `Network` is the cluster network).
fn net_conf() -> String {
    weft_e2e::cluster::static_net_conf().expect("net-conf.json").display().to_string()
}

fn cluster(masquerade: bool) -> Cluster {
    cluster_with_path_mtu(masquerade, 1500)
}

fn cluster_with_path_mtu(masquerade: bool, mtu: u32) -> Cluster {
    let conf = net_conf();
    let mut args: Vec<&str> = vec!["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"];
    if masquerade {
        args.extend(["--ip-masq", "--net-config-path", &conf]);
    }
    let mut c = Cluster::new_with_agent_args(&[("a", Kind::Weft), ("b", Kind::Weft)], &args).expect("cluster");
    for n in ["a", "a", "b", "b"] {
        c.add_pod(n).expect("CNI ADD");
    }
    c.add_internet(mtu).expect("internet");
    c
}

/// The internet host's server, a process of its own (10,000 sockets on each side do
/// not fit one process's descriptors): accepts `count` connections on `port`, then
/// reads each to its end and answers `ok`; prints `IP:PORT TEXT` per connection.
const SERVER: &str = r#"
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.10", port))
s.listen(4096)
print("listening", flush=True)
conns = [s.accept() for _ in range(count)]
for c, (ip, p) in conns:
    c.settimeout(30)
    data = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        data += b
    c.sendall(b"ok")
    c.close()
    print(f"{ip}:{p} {data.decode()}")
"#;

/// Runs [`SERVER`] in `ns`; checks every connection's content (`hello from IP #N`, as
/// the client wrote it) and returns the peers.
fn tcp_server(ns: &Netns, port: u16, count: usize) -> std::thread::JoinHandle<Result<Vec<(SocketAddrV4, String)>>> {
    use std::io::BufRead;
    let mut child = ns
        .exec_args(&["timeout", "120", "python3", "-c", SERVER, &port.to_string(), &count.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3)");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(|l| l.ok());
    assert_eq!(first.as_deref(), Some("listening"), "the server did not start");
    std::thread::spawn(move || {
        let mut out = Vec::with_capacity(count);
        for line in lines {
            let line = line?;
            let (peer, text) = line.split_once(' ').ok_or_else(|| anyhow!("server printed {line:?}"))?;
            ensure!(text.starts_with("hello from "), "content from {peer}: {text:?}");
            out.push((peer.parse()?, text.to_owned()));
        }
        ensure!(child.wait()?.success(), "the server failed after {} connections", out.len());
        Ok(out)
    })
}

/// Room for this process's side of 10,000 connections.
fn raise_fd_limit() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    ensure!(hard >= 12_000, "RLIMIT_NOFILE's hard limit {hard} is below 12,000 (ulimit -Hn)");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

/// Opens `count` connections from `ns` to the internet host's `port`, all of them
/// before writing on any (so they are concurrent), then writes, closes and waits for
/// the answer on each.
fn tcp_clients(ns: &Netns, me: Ipv4Addr, port: u16, count: usize, all: Arc<Barrier>) -> std::thread::JoinHandle<Result<()>> {
    ns.spawn(move || {
        let to = SocketAddr::from((INTERNET_HOST, port));
        let mut conns = Vec::with_capacity(count);
        for i in 0..count {
            let c = TcpStream::connect_timeout(&to, Duration::from_secs(10)).with_context(|| format!("connect #{i}"))?;
            c.set_read_timeout(Some(Duration::from_secs(30)))?;
            conns.push(c);
        }
        all.wait();
        for (i, c) in conns.iter_mut().enumerate() {
            c.write_all(format!("hello from {me} #{i}").as_bytes())?;
            c.shutdown(std::net::Shutdown::Write)?;
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let mut answer = String::new();
            c.read_to_string(&mut answer).with_context(|| format!("answer #{i}"))?;
            ensure!(answer == "ok", "answer #{i}: {answer:?}");
        }
        Ok(())
    })
}

/// One UDP datagram from `from` to the internet host; the source it arrived from.
fn udp_source(c: &Cluster, from: &Netns) -> Result<SocketAddrV4> {
    udp_source_at(&c.internet.as_ref().expect("internet").host.ns, INTERNET_HOST, from)
}

/// One UDP datagram from `from` to `to_ip` in `to`, answered; the source it arrived from.
fn udp_source_at(to: &Netns, to_ip: Ipv4Addr, from: &Netns) -> Result<SocketAddrV4> {
    let port = next_port();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = to.spawn(move || {
        let s = UdpSocket::bind((to_ip, port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        tx.send(()).ok();
        let mut buf = [0u8; 64];
        let (n, peer) = s.recv_from(&mut buf).context("no datagram arrived")?;
        ensure!(&buf[..n] == b"weft masquerade", "content: {:?}", &buf[..n]);
        s.send_to(b"back", peer)?;
        let SocketAddr::V4(peer) = peer else { bail!("IPv6 peer") };
        Ok(peer)
    });
    rx.recv_timeout(Duration::from_secs(5))?;
    let client = from.spawn(move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.send_to(b"weft masquerade", (to_ip, port))?;
        let mut buf = [0u8; 16];
        let (n, _) = s.recv_from(&mut buf).context("no answer")?;
        ensure!(&buf[..n] == b"back");
        Ok(())
    });
    let peer = server.join().map_err(|_| anyhow!("server panicked"))??;
    client.join().map_err(|_| anyhow!("client panicked"))?.context("the answer comes back")?;
    Ok(peer)
}

/// Pods' TCP, UDP and ping reach the internet from their node's address (and a NAT
/// port), content intact; 10,000 concurrent connections from four pods to one
/// ip:port all complete, beside the node's own connections to it (which keep their
/// ephemeral ports, never a NAT port); pod to pod and outside to pod keep their
/// addresses; `nat list` shows the flows and the collector reclaims them after
/// their timeouts.
#[test]
fn pods_reach_the_internet_from_their_nodes_address() -> Result<()> {
    let c = cluster(true);
    let host = &c.internet.as_ref().unwrap().host.ns;
    for pod in &c.pods {
        let node = c.node(&pod.node);
        ping_ok(&pod.ns, INTERNET_HOST, 2).map_err(|e| anyhow!("ping from {}: {e}\n{}", pod.name, c.logs()))?;
        let src = udp_source(&c, &pod.ns).map_err(|e| anyhow!("UDP from {}: {e:#}\n{}", pod.name, c.logs()))?;
        assert_eq!(*src.ip(), node.underlay, "UDP from {} arrives from its node's address", pod.name);
        assert!(!EPHEMERAL.contains(&src.port()), "from a NAT port: {src}");
    }
    tcp_transfer(&c.pod_on("a").ns, host, INTERNET_HOST, 20 << 20).context("20 MiB pod -> internet")?;

    // 10,000 concurrent connections from four pods, and 50 of node a's own, to one ip:port.
    raise_fd_limit()?;
    let port = next_port();
    let per_pod = 2500;
    let server = tcp_server(host, port, c.pods.len() * per_pod + 50);
    let all = Arc::new(Barrier::new(c.pods.len() + 1));
    let mut clients: Vec<_> = c.pods.iter().map(|p| tcp_clients(&p.ns, p.ip, port, per_pod, all.clone())).collect();
    clients.push(tcp_clients(&c.node("a").ns, c.node("a").underlay, port, 50, all));
    for (i, client) in clients.into_iter().enumerate() {
        client.join().map_err(|_| anyhow!("client panicked"))?.map_err(|e| anyhow!("clients #{i}: {e:#}\n{}", c.logs()))?;
    }
    let peers = server.join().map_err(|_| anyhow!("server panicked"))??;
    assert_eq!(peers.len(), 10_050);
    let mut seen = BTreeSet::new();
    for (peer, text) in &peers {
        assert!(seen.insert(*peer), "two connections from {peer}");
        let node = if *peer.ip() == c.node("a").underlay { "a" } else { "b" };
        assert_eq!(*peer.ip(), c.node(node).underlay, "{peer}");
        let own = text.starts_with(&format!("hello from {} ", c.node("a").underlay));
        if own {
            assert!(EPHEMERAL.contains(&peer.port()), "the node's own connection kept its ephemeral port: {peer}");
        } else {
            assert!(!EPHEMERAL.contains(&peer.port()), "a pod's connection has a NAT port: {peer}");
        }
    }
    let reserved = c.node("a").ns.sh("cat /proc/sys/net/ipv4/ip_local_reserved_ports")?;
    assert!(reserved.contains("1024-32767") && reserved.contains("61000-65535"), "NAT ports reserved: {reserved:?}");

    // `nat list` shows the pod's flows with the node's address.
    let list = c.inspect("a", &["nat", "list", "-o", "json"])?;
    let flows: serde_json::Value = serde_json::from_str(&list)?;
    let pod_a = c.pod_on("a").ip.to_string();
    let tcp: Vec<_> = flows
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["protocol"] == "tcp" && f["original"].as_str().unwrap().starts_with(&format!("{pod_a}:")))
        .collect();
    assert!(tcp.len() >= per_pod, "{} TCP flows of pod a listed", tcp.len());
    assert!(tcp.iter().all(|f| f["translated"].as_str().unwrap().starts_with(&c.node("a").underlay.to_string())));
    assert!(tcp.iter().all(|f| f["state"] == "closing"), "closed connections: {:?}", tcp.first());
    println!("{}", c.inspect("a", &["nat", "list"])?.lines().take(5).collect::<Vec<_>>().join("\n"));

    // Pod to pod and outside to pod keep their addresses.
    let to_b = c.pod_on("b").ip;
    ping_ok(&c.pod_on("a").ns, to_b, 1)?;
    let internet = c.internet.as_ref().unwrap();
    internet.route_pods_via(c.node("a"))?;
    let inbound = tcp_transfer(host, &c.pod_on("a").ns, c.pod_on("a").ip, 1 << 20);
    inbound.map_err(|e| anyhow!("internet -> pod a: {e:#}\n{}", c.logs()))?;

    // Closed connections are reclaimed (TCP closing: 10 s, collected every 5 s).
    let closed = std::time::Instant::now();
    let reclaimed = wait_for(Duration::from_secs(25), || {
        let maps = c.node("a").maps().ok()?;
        let left = maps.nat_out().ok()?.iter().filter(|(k, _)| k.protocol == 6 && k.dport == port.to_be_bytes()).count();
        (left == 0).then_some(())
    });
    assert!(reclaimed.is_some(), "closed flows reclaimed\n{}", c.agent_log("a"));
    println!("node a's table drained of the closed connections {:?} after the last transfer", closed.elapsed());
    // What /metrics says of it: the table's size and the reclaimed flows.
    let metrics = weft_e2e::traffic::http_get(&c.node("a").ns, 8471, "/metrics")?;
    assert!(metrics.contains(r#"weft_map_capacity_entries{map="nat_out"} 65536"#), "{metrics}");
    let reclaimed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"weft_nat_reclaimed_total{reason="expired"} "#))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no weft_nat_reclaimed_total in\n{metrics}"))?;
    assert!(reclaimed >= 5000.0, "the closed connections of node a's pods were reclaimed: {reclaimed}");
    let key = r#"weft_forwarded_packets_total{hook="uplink_egress",action="rewrite",verdict="masqueraded"} "#;
    let masqueraded: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no {key} in\n{metrics}"))?;
    assert!(masqueraded >= 1000.0, "{masqueraded} packets masqueraded");
    Ok(())
}

/// Outside → another node's pod, routed through this node (a router with a route to
/// pod b's CIDR via node a; Flannel's last rule): node a masquerades the flow to its
/// tunnel address (`weft0`'s, as `flannel.1`'s) before encapsulation, so pod b sees
/// that address and answers through node a, which restores the client's. UDP, TCP
/// (content verified) and ping; `nat list` shows the translation.
#[test]
fn outside_to_a_remote_pod_through_this_node_takes_the_tunnel_address() -> Result<()> {
    let c = cluster(true);
    let internet = c.internet.as_ref().unwrap();
    let (a, pod_b) = (c.node("a"), c.pod_on("b"));
    internet.router.ip(&format!("route replace {} via {}", c.node("b").pod_cidr, a.underlay))?;
    let tunnel_a = a.pod_cidr.network();
    let host = &internet.host.ns;

    let src = udp_source_at(&pod_b.ns, pod_b.ip, host).map_err(|e| anyhow!("UDP internet -> pod b: {e:#}\n{}", c.logs()))?;
    assert_eq!(*src.ip(), tunnel_a, "pod b sees node a's tunnel address");
    assert!(!EPHEMERAL.contains(&src.port()), "and a NAT port: {src}");
    tcp_transfer(host, &pod_b.ns, pod_b.ip, 8 << 20).map_err(|e| anyhow!("TCP internet -> pod b: {e:#}\n{}", c.logs()))?;
    ping_ok(host, pod_b.ip, 2).map_err(|e| anyhow!("ping internet -> pod b: {e}\n{}", c.logs()))?;

    let list = c.inspect("a", &["nat", "list", "-o", "json"])?;
    let flows: serde_json::Value = serde_json::from_str(&list)?;
    let from_host = |f: &&serde_json::Value| f["original"].as_str().unwrap().starts_with(&format!("{INTERNET_HOST}"));
    let through: Vec<_> = flows.as_array().unwrap().iter().filter(from_host).collect();
    for protocol in ["udp", "tcp", "icmp"] {
        let f = through.iter().find(|f| f["protocol"] == protocol).ok_or_else(|| anyhow!("no {protocol} flow in {list}"))?;
        assert!(f["translated"].as_str().unwrap().starts_with(&format!("{tunnel_a}")), "{f}");
    }
    // Node b translated nothing: the flows arrived there from a cluster address.
    assert!(c.node("b").maps()?.nat_out()?.iter().all(|(_, e)| e.flags != 0), "node b masqueraded nothing");
    Ok(())
}

/// The host's netfilter conntrack and weft's masquerade on one flow, beside a plain
/// masqueraded one: a Service whose endpoint is outside the cluster (kube-proxy's
/// DNAT only: conntrack restores the Service address on the reply weft translated
/// back), and one kube-proxy marks for its own MASQUERADE (weft leaves it alone, as
/// Flannel's first rule does). Every transfer arrives intact.
#[test]
fn a_services_conntrack_and_the_masquerade_work_together() -> Result<()> {
    let c = cluster(true);
    let (a, pod) = (c.node("a"), c.pod_on("a"));
    let host = &c.internet.as_ref().unwrap().host.ns;
    let (external, marked) = (Ipv4Addr::new(10, 96, 0, 10), Ipv4Addr::new(10, 96, 0, 11));
    for rule in [
        format!("-t nat -A PREROUTING -d {external}/32 -p tcp -j DNAT --to-destination {INTERNET_HOST}"),
        format!("-t nat -A PREROUTING -d {marked}/32 -p tcp -j MARK --set-xmark 0x4000/0x4000"),
        format!("-t nat -A PREROUTING -d {marked}/32 -p tcp -j DNAT --to-destination {INTERNET_HOST}"),
        "-t nat -A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully".to_string(),
    ] {
        a.ns.sh(&format!("iptables -w {rule}"))?;
    }
    // Flows of pod a to the internet host that weft translated.
    let translated = || -> Result<usize> {
        Ok(a.maps()?
            .nat_out()?
            .iter()
            .filter(|(k, e)| k.saddr == pod.ip.octets() && k.daddr == INTERNET_HOST.octets() && k.protocol == 6 && e.flags == 0)
            .count())
    };
    for (service, added) in [(external, 2), (marked, 1)] {
        let before = translated()?;
        std::thread::scope(|s| -> Result<()> {
            let direct = s.spawn(|| tcp_transfer(&pod.ns, host, INTERNET_HOST, 16 << 20));
            let via = tcp_transfer_via(&pod.ns, host, INTERNET_HOST, service, 16 << 20);
            via.map_err(|e| anyhow!("pod a -> Service {service}: {e:#}\n{}", c.logs()))?;
            let direct = direct.join().map_err(|_| anyhow!("transfer panicked"))?;
            direct.map_err(|e| anyhow!("pod a -> internet beside it: {e:#}\n{}", c.logs()))?;
            Ok(())
        })?;
        assert_eq!(translated()? - before, added, "flows weft translated with the Service {service}");
    }
    Ok(())
}

/// A path with a smaller MTU (1400) between the router and the internet host: the
/// router's fragmentation-needed errors reach the pod translated back, its TCP
/// lowers its segment size, and a large transfer completes.
#[test]
fn path_mtu_discovery_works_through_the_masquerade() -> Result<()> {
    let c = cluster_with_path_mtu(true, 1400);
    let (pod, host) = (&c.pod_on("a").ns, &c.internet.as_ref().unwrap().host.ns);
    tcp_transfer(pod, host, INTERNET_HOST, 8 << 20).map_err(|e| anyhow!("8 MiB over a 1400-byte path: {e:#}\n{}", c.logs()))?;
    let learned = pod.ip(&format!("route get {INTERNET_HOST}"))?;
    assert!(learned.contains("mtu 1400"), "the pod learned the path's MTU: {learned}");
    let errors = c
        .node("a")
        .maps()?
        .counter_at(weft_common::counters::Hook::UplinkIngress, weft_common::counters::Verdict::Unmasqueraded)?;
    assert!(errors.packets > 0);
    Ok(())
}

/// Without `--ip-masq` nothing is translated: the internet host sees the pod's own
/// address (and, with no route back to pods, never answers).
#[test]
fn without_ip_masq_pods_keep_their_address() -> Result<()> {
    let c = cluster(false);
    // Routes to the pods, so that an unmasqueraded packet would be answered.
    let internet = c.internet.as_ref().unwrap();
    internet.host.ns.ip("route add 10.244.0.0/16 via 192.0.2.1")?;
    internet.route_pods_via(c.node("a"))?;
    let src = udp_source(&c, &c.pod_on("a").ns)?;
    assert_eq!(*src.ip(), c.pod_on("a").ip);
    assert!(c.node("a").maps()?.nat_out()?.is_empty());
    assert!(c.node("a").ns.tc_programs("ul0", aya::programs::TcAttachType::Egress)?.is_empty(), "no masquerade program");
    Ok(())
}

/// An agent killed (SIGKILL) and started again in the middle of a pod's long
/// transfer to the internet: the pinned programs and NAT table carry it, intact.
#[test]
fn a_killed_agent_does_not_break_a_masqueraded_transfer() -> Result<()> {
    let mut c = cluster(true);
    let a = c.node_index("a");
    let conf = net_conf();
    let (done, restarted) = std::thread::scope(|s| -> Result<_> {
        let (pod, host) = (&c.pod_on("a").ns, &c.internet.as_ref().unwrap().host.ns);
        let transfer = s.spawn(move || tcp_transfer(pod, host, INTERNET_HOST, 1 << 30));
        std::thread::sleep(Duration::from_millis(300));
        c.nodes[a].agent.as_ref().unwrap().signal(Signal::SIGKILL)?;
        std::thread::sleep(Duration::from_millis(200));
        let log = c.dir.join("agent-a-restarted.log");
        let restarted = AgentProcess::start(c.agent_command(a, &["--ip-masq", "--net-config-path", &conf]), "a", log)?;
        Ok((transfer.join().map_err(|_| anyhow!("transfer panicked"))?, restarted))
    })?;
    c.nodes[a].agent = Some(restarted);
    let done = done.map_err(|e| anyhow!("{e:#}\n{}", c.logs()))?;
    println!("1 GiB through a killed and restarted agent in {:?}", done.elapsed);
    ping_ok(&c.pod_on("a").ns, INTERNET_HOST, 1)?;
    Ok(())
}

/// Kubernetes mode, as the manifests run it (`--ip-masq`, the cluster network from
/// the ConfigMap's net-conf.json): pods on a weft node and a Flannel node (kernel
/// vxlan, Flannel's own iptables masquerade) both reach the internet from their
/// node's address; `subnet.env` says masquerade is the agent's.
#[test]
fn kubernetes_mode_masquerades_like_flannel() -> Result<()> {
    let mut c = Cluster::new_kube(&[("a", Kind::Weft), ("c", Kind::Flannel)])?;
    for n in ["a", "c"] {
        c.add_pod(n)?;
    }
    c.add_internet(1500)?;
    for n in ["a", "c"] {
        let pod = c.pod_on(n);
        ping_ok(&pod.ns, INTERNET_HOST, 1).map_err(|e| anyhow!("ping from {}: {e}\n{}", pod.name, c.logs()))?;
        let src = udp_source(&c, &pod.ns)?;
        assert_eq!(*src.ip(), c.node(n).underlay, "{n}'s pod leaves from its node's address");
    }
    let env = std::fs::read_to_string(c.node("a").subnet_file())?;
    assert!(env.contains("FLANNEL_IPMASQ=true"), "{env}");
    Ok(())
}
