//! The measurements made with external tools (iperf3, sockperf) between two pod
//! namespaces, and the machine's CPU time from /proc/stat. Servers are child processes
//! killed on drop; clients run under `timeout`, so nothing outlives its time bound.
//! Parsers are separate functions, tested on captured output.

use std::{
    net::Ipv4Addr,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;

use crate::{netns::Netns, run, traffic::next_port, wait_for};

/// A server process in a pod namespace; killed and reaped on drop.
struct Server {
    child: Child,
}

impl Server {
    /// Starts `line` in `ns` and waits (at most 5 s) until something listens on TCP `port`.
    fn start(ns: &Netns, line: &str, port: u16) -> Result<Server> {
        let child = ns
            .exec(line)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {line}"))?;
        let mut server = Server { child };
        let listening = wait_for(Duration::from_secs(5), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Some(Err(anyhow!("`{line}` exited before listening: {status}")));
            }
            let out = ns.exec(&format!("ss -Hltn sport = :{port}")).output().ok()?;
            (!out.stdout.is_empty()).then_some(Ok(()))
        });
        match listening {
            Some(Ok(())) => Ok(server),
            Some(Err(e)) => Err(e),
            None => bail!("`{line}` in {} not listening on {port} after 5 s", ns.name),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client tool in `ns` for about `seconds`, killed if it takes 20 s longer.
fn client(ns: &Netns, line: &str, seconds: u32) -> Result<String> {
    let out = run(&mut ns.exec(&format!("timeout -k 5 {} {line}", seconds + 20)))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn iperf3(client_ns: &Netns, server_ns: &Netns, ip: Ipv4Addr, seconds: u32, args: &str) -> Result<Value> {
    let port = next_port();
    let _server = Server::start(server_ns, &format!("iperf3 -s -1 -p {port}"), port)?;
    let out = client(client_ns, &format!("iperf3 --connect-timeout 5000 -c {ip} -p {port} -t {seconds} -J {args}"), seconds)?;
    serde_json::from_str(&out).with_context(|| format!("iperf3 -J output: {out}"))
}

fn num(v: &Value, path: &[&str]) -> Result<f64> {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().ok_or_else(|| anyhow!("no {} in iperf3 output", path.join(".")))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tcp {
    /// Received by the server.
    pub gbit_s: f64,
    pub bytes: f64,
}

/// iperf3 TCP: what the receiver got (`end.sum_received`).
pub fn parse_tcp(json: &Value) -> Result<Tcp> {
    Ok(Tcp {
        gbit_s: num(json, &["end", "sum_received", "bits_per_second"])? / 1e9,
        bytes: num(json, &["end", "sum_received", "bytes"])?,
    })
}

/// `iperf3 -c IP -t S -P streams` from `client_ns` to an `iperf3 -s -1` in `server_ns`.
pub fn tcp_throughput(client_ns: &Netns, server_ns: &Netns, ip: Ipv4Addr, seconds: u32, streams: u32) -> Result<Tcp> {
    parse_tcp(&iperf3(client_ns, server_ns, ip, seconds, &format!("-P {streams}"))?)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TcpCpu {
    pub gbit_s: f64,
    pub cpu_s_per_gb: f64,
}

/// One TCP stream, and the CPU time the whole machine spent during it per GB received.
/// Machine-wide is right because the machine is dedicated to the benchmark: sender,
/// receiver, both nodes' forwarding, encapsulation and softirqs all run on it, and
/// per-process accounting would miss the softirq work the datapaths differ in.
pub fn tcp_with_cpu(client_ns: &Netns, server_ns: &Netns, ip: Ipv4Addr, seconds: u32) -> Result<TcpCpu> {
    let port = next_port();
    let _server = Server::start(server_ns, &format!("iperf3 -s -1 -p {port}"), port)?;
    let before = busy_jiffies()?;
    let out = client(client_ns, &format!("iperf3 --connect-timeout 5000 -c {ip} -p {port} -t {seconds} -J"), seconds)?;
    let after = busy_jiffies()?;
    let tcp = parse_tcp(&serde_json::from_str(&out).with_context(|| format!("iperf3 -J output: {out}"))?)?;
    ensure!(tcp.bytes > 0.0, "iperf3 received nothing");
    let cpu_s = after.saturating_sub(before) as f64 / clk_tck();
    Ok(TcpCpu { gbit_s: tcp.gbit_s, cpu_s_per_gb: cpu_s / (tcp.bytes / 1e9) })
}

/// Busy jiffies of the aggregate `cpu` line of /proc/stat: user + nice + system + irq +
/// softirq + steal (guest time is already inside user and nice; idle and iowait are not busy).
pub fn parse_busy_jiffies(stat: &str) -> Result<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<u64>().with_context(|| format!("/proc/stat field {x:?}")))
        .collect::<Result<_>>()?;
    ensure!(f.len() >= 8, "short cpu line in /proc/stat: {line}");
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// Fraction of the machine's CPU busy over `window` (the bench wants it near 0 first).
pub fn machine_busy(window: Duration) -> Result<f64> {
    let total = |stat: &str| -> Result<u64> {
        let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
        // user..steal: guest time is already inside user and nice.
        Ok(line.split_whitespace().skip(1).take(8).map(|x| x.parse::<u64>().unwrap_or(0)).sum())
    };
    let read = || std::fs::read_to_string("/proc/stat").context("reading /proc/stat");
    let first = read()?;
    std::thread::sleep(window);
    let second = read()?;
    let busy = parse_busy_jiffies(&second)?.saturating_sub(parse_busy_jiffies(&first)?);
    let all = total(&second)?.saturating_sub(total(&first)?);
    Ok(if all == 0 { 0.0 } else { busy as f64 / all as f64 })
}

fn busy_jiffies() -> Result<u64> {
    parse_busy_jiffies(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Received packets per second of an iperf3 UDP run (client's JSON). `end.sum.packets`
/// is what the sender sent and `lost_packets` the receiver's sequence gaps; a drop at
/// the very end of the run is no gap, so the receiver's own byte count
/// (`sum_received.bytes` / datagram size) bounds it: the smaller of the two.
pub fn parse_udp_pps(json: &Value, datagram: u32) -> Result<f64> {
    let sent = num(json, &["end", "sum", "packets"])?;
    let lost = num(json, &["end", "sum", "lost_packets"])?;
    let seconds = num(json, &["end", "sum", "seconds"])?;
    let by_bytes = num(json, &["end", "sum_received", "bytes"])? / f64::from(datagram);
    ensure!(sent > 0.0 && seconds > 0.0, "iperf3 UDP sent nothing");
    Ok((sent - lost).min(by_bytes).max(0.0) / seconds)
}

/// `iperf3 -u -l 64 -b 0`: 64-byte datagrams as fast as the sender can; received pps.
pub fn udp_pps(client_ns: &Netns, server_ns: &Netns, ip: Ipv4Addr, seconds: u32) -> Result<f64> {
    parse_udp_pps(&iperf3(client_ns, server_ns, ip, seconds, "-u -l 64 -b 0")?, 64)
}

/// TCP request/response (sockperf ping-pong, 64-byte messages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rr {
    /// Round trips per second over the valid (post-warm-up) duration.
    pub rate: f64,
    /// Percentiles of sockperf's latency, which is half the round trip (usec).
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Drops ANSI colour sequences (`ESC [ ... m`), which sockperf writes even to a pipe.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `KEY=number` in a sockperf line (`RunTime=1.550 sec; ... ReceivedMessages=26958`).
fn field(line: &str, key: &str) -> Result<f64> {
    let start = line.find(&format!("{key}=")).ok_or_else(|| anyhow!("no {key}= in {line:?}"))? + key.len() + 1;
    let text: String = line[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    text.parse().with_context(|| format!("{key} in {line:?}"))
}

pub fn parse_sockperf(output: &str) -> Result<Rr> {
    let text = strip_ansi(output);
    let valid = text
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .ok_or_else(|| anyhow!("no [Valid Duration] line in sockperf output:\n{text}"))?;
    let (runtime, received) = (field(valid, "RunTime")?, field(valid, "ReceivedMessages")?);
    ensure!(runtime > 0.0 && received > 0.0, "sockperf measured nothing: {valid}");
    let percentile = |p: &str| -> Result<f64> {
        let key = format!("percentile {p} =");
        let line = text.lines().find(|l| l.contains(&key)).ok_or_else(|| anyhow!("no `{key}` in sockperf output"))?;
        let after = &line[line.find(&key).expect("found") + key.len()..];
        after.trim().parse().with_context(|| format!("`{key}` value in {line:?}"))
    };
    Ok(Rr { rate: received / runtime, p50_us: percentile("50.000")?, p99_us: percentile("99.000")? })
}

/// `sockperf ping-pong --tcp -m 64` against a `sockperf server --tcp` in `server_ns`.
pub fn sockperf_rr(client_ns: &Netns, server_ns: &Netns, ip: Ipv4Addr, seconds: u32) -> Result<Rr> {
    let port = next_port();
    let _server = Server::start(server_ns, &format!("sockperf server --tcp -i {ip} -p {port}"), port)?;
    let out = client(client_ns, &format!("sockperf ping-pong --tcp -i {ip} -p {port} -t {seconds} -m 64"), seconds)?;
    parse_sockperf(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sockperf 3.7's ping-pong output (Debian 12), colour codes included.
    const SOCKPERF: &str = "sockperf: \u{1b}[2;35m== version #3.7-no.git == \u{1b}[0m
sockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)

[ 0] IP = 127.0.0.1       PORT = 31112 # TCP
sockperf: Warmup stage (sending a few dummy messages)...
sockperf: Starting test...
sockperf: Test end (interrupted by timer)
sockperf: Test ended
sockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=20111; ReceivedMessages=20110
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=9200; ReceivedMessages=9200
sockperf: \u{1b}[2;35m====> avg-latency=29.895 (std-dev=8.442)\u{1b}[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Latency is 29.895 usec
sockperf: \u{1b}[2;35mTotal 9200 observations\u{1b}[0m; each percentile contains 92.00 observations
sockperf: ---> <MAX> observation =  705.946
sockperf: ---> percentile 99.999 =  705.946
sockperf: ---> percentile 99.990 =  110.778
sockperf: ---> percentile 99.900 =   58.766
sockperf: ---> percentile 99.000 =   45.777
sockperf: ---> percentile 90.000 =   35.417
sockperf: ---> percentile 75.000 =   32.107
sockperf: ---> percentile 50.000 =   28.381
sockperf: ---> percentile 25.000 =   26.934
sockperf: ---> <MIN> observation =    9.328
";

    #[test]
    fn sockperf_rate_and_percentiles() {
        let rr = parse_sockperf(SOCKPERF).unwrap();
        assert!((rr.rate - 9200.0 / 0.55).abs() < 1e-6, "{rr:?}");
        assert_eq!((rr.p50_us, rr.p99_us), (28.381, 45.777));
        assert!(parse_sockperf("sockperf: Test ended\n").is_err());
    }

    #[test]
    fn iperf3_fields() {
        let tcp = serde_json::json!({"end": {"sum_received": {"bytes": 5.0e9, "bits_per_second": 9.87e9}}});
        assert_eq!(parse_tcp(&tcp).unwrap(), Tcp { gbit_s: 9.87, bytes: 5.0e9 });
        // From a real `iperf3 -u -l 64 -b 0 -t 1 -J` run (iperf 3.12).
        let udp = serde_json::json!({"end": {
            "sum": {"seconds": 1.000072, "bytes": 17005440, "lost_packets": 90756, "packets": 265710},
            "sum_received": {"seconds": 1.000072, "bytes": 11197056, "lost_packets": 90756, "packets": 265710},
        }});
        let pps = parse_udp_pps(&udp, 64).unwrap();
        assert!((pps - 174954.0 / 1.000072).abs() < 1e-6, "{pps}");
        assert!(parse_tcp(&serde_json::json!({"error": "unable to connect"})).is_err());
    }

    #[test]
    fn proc_stat_busy() {
        let stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 50 2 25 500 3 1 1 0 0 0\nintr 1\n";
        assert_eq!(parse_busy_jiffies(stat).unwrap(), 100 + 5 + 50 + 3 + 2 + 1);
        assert!(parse_busy_jiffies("intr 1\n").is_err());
    }
}
