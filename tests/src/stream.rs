//! Steady traffic across an event (an agent killed and restarted): sequenced UDP at
//! a fixed packet rate and a paced, content-verified TCP transfer. Each runs from
//! `start` until `finish` (at most [`MAX_RUN`]) and reports what arrived, so a loss
//! is counted, not guessed from a timeout.
//!
//! Both ends are threads that entered the pods' namespaces ([`Netns::spawn`]); the
//! receiving namespace's own counters (`/proc/thread-self/net/snmp`) tell a datagram
//! the network lost from one the receiving socket had no room for.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::{
    netns::Netns,
    traffic::{CHUNK, Stream, next_port, verify},
};

/// The longest a stream runs if nobody finishes it.
pub const MAX_RUN: Duration = Duration::from_secs(180);
/// How long the receiver waits, once the sender stopped, for datagrams still in flight.
const DRAIN: Duration = Duration::from_secs(1);
/// Not yet known: the sender is still sending.
const SENDING: u64 = u64::MAX;

/// `field` of protocol `proto` (`Udp`, `Tcp`; `TcpExt` in `netstat`) in this thread's
/// namespace's counters (`/proc/thread-self`: `/proc/self` would show the process's).
fn snmp(proto: &str, field: &str) -> Result<u64> {
    let file = if proto == "TcpExt" { "netstat" } else { "snmp" };
    let path = format!("/proc/thread-self/net/{file}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next(), lines.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no {proto} counters in {path}");
    };
    let at = names.split_whitespace().position(|n| n == field).ok_or_else(|| anyhow!("no {proto} counter {field}"))?;
    values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("bad {proto} {field} value"))
}

/// FNV-1a, 64 bits: a checksum of everything a transfer carried, printed by both ends.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What a sequenced UDP stream delivered.
#[derive(Debug, Default)]
pub struct UdpReport {
    pub sent: u64,
    /// Datagrams received, duplicates included.
    pub received: u64,
    /// Sequence numbers sent that never arrived.
    pub lost: u64,
    pub duplicates: u64,
    /// Datagrams that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// The longest run of consecutive sequence numbers lost.
    pub longest_loss_run: u64,
    /// The longest silence at the receiver between two datagrams.
    pub max_gap: Duration,
    /// The most the sender fell behind its schedule (a busy machine; it then catches up
    /// in a burst, which shortens the receiver's gaps after a long one).
    pub max_lag: Duration,
    pub send_errors: u64,
    /// Datagrams the receiving namespace dropped for a full socket buffer (`Udp:
    /// RcvbufErrors`): lost at the receiver, not on the way.
    pub rcvbuf_errors: u64,
}

impl std::fmt::Display for UdpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, received {}, lost {} (longest run {}), duplicates {}, reordered {}, max gap {:.1} ms, \
             sender lag max {:.1} ms, send errors {}, receive-buffer drops {}",
            self.sent,
            self.received,
            self.lost,
            self.longest_loss_run,
            self.duplicates,
            self.reordered,
            self.max_gap.as_secs_f64() * 1e3,
            self.max_lag.as_secs_f64() * 1e3,
            self.send_errors,
            self.rcvbuf_errors
        )
    }
}

struct Sent {
    count: u64,
    max_lag: Duration,
    errors: u64,
}

struct Arrivals {
    /// Copies received of each sequence number.
    copies: Vec<u32>,
    received: u64,
    reordered: u64,
    max_gap: Duration,
    rcvbuf_errors: u64,
}

/// `rate` datagrams per second from a thread in `from` to `to_ip` in `to`, each
/// carrying the stream's id and a sequence number, until [`UdpStream::finish`].
pub struct UdpStream {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<Result<Sent>>,
    receiver: JoinHandle<Result<Arrivals>>,
}

/// A datagram: the stream's id, its sequence number (both little-endian), padding.
const DATAGRAM: usize = 64;

impl UdpStream {
    pub fn start(from: &Netns, to: &Netns, to_ip: Ipv4Addr, rate: u32) -> Result<UdpStream> {
        ensure!(rate > 0, "a stream needs a rate");
        let port = next_port();
        let id = 0x5745_4654_0000_0000 | u64::from(port);
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(SENDING));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = to.spawn({
            let total = total.clone();
            move || -> Result<Arrivals> {
                let sock = UdpSocket::bind((to_ip, port)).context("bind")?;
                // Room for seconds of the stream, whatever the namespace's rmem_max: a
                // receiver thread the busy machine left waiting must not lose any.
                nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(4 << 20))
                    .context("SO_RCVBUFFORCE")?;
                sock.set_read_timeout(Some(Duration::from_millis(50)))?;
                let drops_before = snmp("Udp", "RcvbufErrors")?;
                ready_tx.send(()).ok();
                receive(&sock, id, &total, drops_before)
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).context("UDP receiver did not start")?;
        let sender = from.spawn({
            let stop = stop.clone();
            move || -> Result<Sent> {
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("bind")?;
                let sent = send(&sock, SocketAddr::from((to_ip, port)), id, rate, &stop);
                total.store(sent.count, Ordering::Release);
                Ok(sent)
            }
        });
        Ok(UdpStream { stop, sender, receiver })
    }

    /// Stops the sender, lets the receiver drain, and counts.
    pub fn finish(self) -> Result<UdpReport> {
        self.stop.store(true, Ordering::Release);
        let sent = self.sender.join().map_err(|_| anyhow!("UDP sender panicked"))??;
        let got = self.receiver.join().map_err(|_| anyhow!("UDP receiver panicked"))??;
        let mut report = UdpReport {
            sent: sent.count,
            received: got.received,
            reordered: got.reordered,
            max_gap: got.max_gap,
            max_lag: sent.max_lag,
            send_errors: sent.errors,
            rcvbuf_errors: got.rcvbuf_errors,
            ..UdpReport::default()
        };
        let mut run = 0;
        for seq in 0..sent.count as usize {
            match got.copies.get(seq).copied().unwrap_or(0) {
                0 => {
                    report.lost += 1;
                    run += 1;
                    report.longest_loss_run = report.longest_loss_run.max(run);
                }
                n => {
                    report.duplicates += u64::from(n - 1);
                    run = 0;
                }
            }
        }
        Ok(report)
    }
}

/// Sends on a fixed schedule (datagram `k` at `start + k / rate`), until `stop` or
/// [`MAX_RUN`]. A sender the machine left behind catches up rather than skipping.
fn send(sock: &UdpSocket, to: SocketAddr, id: u64, rate: u32, stop: &AtomicBool) -> Sent {
    let period = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut sent = Sent { count: 0, max_lag: Duration::ZERO, errors: 0 };
    let mut datagram = [0u8; DATAGRAM];
    datagram[..8].copy_from_slice(&id.to_le_bytes());
    while !stop.load(Ordering::Acquire) && start.elapsed() < MAX_RUN {
        let due = start + period * sent.count as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent.max_lag = sent.max_lag.max(Instant::now().saturating_duration_since(due));
        datagram[8..16].copy_from_slice(&sent.count.to_le_bytes());
        if sock.send_to(&datagram, to).is_err() {
            sent.errors += 1;
        }
        sent.count += 1;
    }
    sent
}

/// Receives until every datagram the sender reports sent has arrived, or [`DRAIN`]
/// after it stopped, or [`MAX_RUN`] and the drain time have passed.
fn receive(sock: &UdpSocket, id: u64, total: &AtomicU64, drops_before: u64) -> Result<Arrivals> {
    let deadline = Instant::now() + MAX_RUN + DRAIN + Duration::from_secs(5);
    let mut got = Arrivals { copies: Vec::new(), received: 0, reordered: 0, max_gap: Duration::ZERO, rcvbuf_errors: 0 };
    let (mut highest, mut last, mut distinct, mut sender_done) = (None::<u64>, None::<Instant>, 0u64, None::<Instant>);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let sent = total.load(Ordering::Acquire);
        if sent != SENDING {
            let done = *sender_done.get_or_insert_with(Instant::now);
            if distinct >= sent || done.elapsed() > DRAIN {
                break;
            }
        }
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => continue,
            Err(e) => return Err(e).context("receiving"),
        };
        let now = Instant::now();
        if n != DATAGRAM || buf[..8] != id.to_le_bytes() {
            continue; // not this stream's
        }
        let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        let at = usize::try_from(seq).context("sequence number")?;
        ensure!(at < 10_000_000, "sequence number {seq}: not this sender's");
        if got.copies.len() <= at {
            got.copies.resize(at + 1, 0);
        }
        if got.copies[at] == 0 {
            distinct += 1;
            if highest.is_some_and(|h| seq < h) {
                got.reordered += 1;
            }
        }
        got.copies[at] += 1;
        got.received += 1;
        highest = Some(highest.map_or(seq, |h| h.max(seq)));
        if let Some(prev) = last {
            got.max_gap = got.max_gap.max(now - prev);
        }
        last = Some(now);
    }
    got.rcvbuf_errors = snmp("Udp", "RcvbufErrors")? - drops_before;
    Ok(got)
}

/// What a paced TCP transfer carried.
#[derive(Debug)]
pub struct TcpReport {
    /// Bytes sent, all received and each checked against the seeded stream.
    pub bytes: u64,
    /// FNV-1a of the bytes, the same at both ends.
    pub checksum: u64,
    pub elapsed: Duration,
    /// Segments the sender's namespace retransmitted meanwhile (`Tcp: RetransSegs`).
    pub retransmitted_segments: u64,
    /// Why, from the sender's `TcpExt` counters: tail loss probes (sent when an ACK is
    /// late, not only when a segment was lost), fast retransmits (duplicate ACKs or
    /// SACKs reported a hole), retransmission timeouts.
    pub loss_probes: u64,
    pub fast_retransmits: u64,
    pub timeouts: u64,
}

/// The sender namespace's retransmission counters.
#[derive(Clone, Copy)]
struct Retransmissions([u64; 4]);

impl Retransmissions {
    const COUNTERS: [(&str, &str); 4] =
        [("Tcp", "RetransSegs"), ("TcpExt", "TCPLossProbes"), ("TcpExt", "TCPFastRetrans"), ("TcpExt", "TCPTimeouts")];

    fn read() -> Result<Self> {
        let mut out = [0; 4];
        for (v, (proto, field)) in out.iter_mut().zip(Self::COUNTERS) {
            *v = snmp(proto, field)?;
        }
        Ok(Retransmissions(out))
    }

    fn since(self, before: Retransmissions) -> Retransmissions {
        Retransmissions(std::array::from_fn(|i| self.0[i] - before.0[i]))
    }
}

impl std::fmt::Display for TcpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes ({:.1} MiB) in {:.1} s, every byte checked, FNV-1a {:016x} at both ends, {} segments retransmitted \
             (tail loss probes {}, fast retransmits {}, timeouts {})",
            self.bytes,
            self.bytes as f64 / (1 << 20) as f64,
            self.elapsed.as_secs_f64(),
            self.checksum,
            self.retransmitted_segments,
            self.loss_probes,
            self.fast_retransmits,
            self.timeouts
        )
    }
}

/// A TCP connection from `from` to `to_ip` in `to` carrying a seeded byte stream at
/// `rate` bytes per second (small writes, so the flow never idles for long), until
/// [`PacedTransfer::finish`]; the receiver checks every byte.
pub struct PacedTransfer {
    stop: Arc<AtomicBool>,
    started: Instant,
    sender: JoinHandle<Result<(u64, Fnv, Retransmissions)>>,
    receiver: JoinHandle<Result<(u64, Fnv)>>,
}

/// Bytes per write: at 4 MiB/s a write every 2 ms.
const PIECE: usize = 8 * 1024;

impl PacedTransfer {
    pub fn start(from: &Netns, to: &Netns, to_ip: Ipv4Addr, rate: u64) -> Result<PacedTransfer> {
        ensure!(rate > 0, "a transfer needs a rate");
        let port = next_port();
        let seed = 0x6a09_e667_f3bc_c908 ^ u64::from(port);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = to.spawn(move || -> Result<(u64, Fnv)> {
            let listener = TcpListener::bind((to_ip, port)).context("bind")?;
            ready_tx.send(()).ok();
            let (mut conn, _) = listener.accept().context("accept")?;
            conn.set_read_timeout(Some(Duration::from_secs(60)))?;
            let (mut expect, mut sum) = (Stream(seed), Fnv::new());
            let (mut buf, mut window) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
            let mut got = 0u64;
            loop {
                let n = match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).context(format!("reading after {got} bytes")),
                };
                verify(&mut expect, &buf[..n], &mut window, got)?;
                sum.update(&buf[..n]);
                got += n as u64;
            }
            Ok((got, sum))
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).context("TCP receiver did not start")?;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let sender = from.spawn({
            let stop = stop.clone();
            move || -> Result<(u64, Fnv, Retransmissions)> {
                let before = Retransmissions::read()?;
                let addr = SocketAddr::from((to_ip, port));
                let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).context("connect")?;
                conn.set_write_timeout(Some(Duration::from_secs(60)))?;
                let (mut stream, mut sum) = (Stream(seed), Fnv::new());
                let mut block = vec![0u8; CHUNK];
                let mut sent = 0u64;
                'blocks: loop {
                    // Whole blocks from the stream, as the receiver regenerates them.
                    stream.fill(&mut block);
                    for piece in block.chunks(PIECE) {
                        if stop.load(Ordering::Acquire) || started.elapsed() > MAX_RUN {
                            break 'blocks;
                        }
                        let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        conn.write_all(piece).with_context(|| format!("writing after {sent} bytes"))?;
                        sum.update(piece);
                        sent += piece.len() as u64;
                    }
                }
                conn.shutdown(std::net::Shutdown::Write)?;
                // Wait for the receiver's close, so every retransmission is counted.
                let mut rest = [0u8; 1];
                conn.set_read_timeout(Some(Duration::from_secs(60)))?;
                let _ = conn.read(&mut rest);
                Ok((sent, sum, Retransmissions::read()?.since(before)))
            }
        });
        Ok(PacedTransfer { stop, started, sender, receiver })
    }

    /// Stops sending, waits for the receiver to have everything, compares both ends.
    pub fn finish(self) -> Result<TcpReport> {
        self.stop.store(true, Ordering::Release);
        let (sent, sent_sum, retrans) = self.sender.join().map_err(|_| anyhow!("TCP sender panicked"))??;
        let (got, got_sum) = self.receiver.join().map_err(|_| anyhow!("TCP receiver panicked"))??;
        ensure!(got == sent, "received {got} of {sent} bytes");
        ensure!(got_sum.0 == sent_sum.0, "checksums differ: sent {:016x}, received {:016x}", sent_sum.0, got_sum.0);
        let [retransmitted_segments, loss_probes, fast_retransmits, timeouts] = retrans.0;
        Ok(TcpReport {
            bytes: got,
            checksum: got_sum.0,
            elapsed: self.started.elapsed(),
            retransmitted_segments,
            loss_probes,
            fast_retransmits,
            timeouts,
        })
    }
}
