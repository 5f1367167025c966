//! Traffic between namespaces, every loop bounded in time.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::netns::Netns;

static PORT: AtomicU16 = AtomicU16::new(20000);

pub fn next_port() -> u16 {
    PORT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
pub struct Ping {
    pub transmitted: u32,
    pub received: u32,
    pub output: String,
}

/// `ping -c COUNT` from inside `from`, extra flags as given (e.g. `-M do -s 1500`).
pub fn ping(from: &Netns, to: Ipv4Addr, count: u32, flags: &str) -> Result<Ping> {
    let out =
        from.exec(&format!("ping -n -c {count} -i 0.2 -W 1 -w {} {flags} {to}", count + 2)).output().context("running ping")?;
    ping_stats(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Reads ping's summary line (`N packets transmitted, M received, ...`) from its output.
pub fn ping_stats(output: String) -> Result<Ping> {
    let stats =
        output.lines().find(|l| l.contains("packets transmitted")).ok_or_else(|| anyhow!("no ping statistics in:\n{output}"))?;
    let num = |key: &str| -> u32 {
        stats
            .split(',')
            .find(|p| p.contains(key))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(Ping { transmitted: num("transmitted"), received: num("received"), output })
}

/// Every ping answered.
pub fn ping_ok(from: &Netns, to: Ipv4Addr, count: u32) -> Result<Ping> {
    let p = ping(from, to, count, "")?;
    ensure!(p.received == count, "ping {} -> {to}: {}/{} answered\n{}", from.name, p.received, count, p.output);
    Ok(p)
}

/// A deterministic byte stream (xorshift64*), so the receiver can check every byte.
pub(crate) struct Stream(pub(crate) u64);

impl Stream {
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[derive(Debug)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Transfer {
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

pub(crate) const CHUNK: usize = 64 * 1024;

/// Sends `bytes` of a seeded stream over TCP from `from` to `to_ip` in `to`, and
/// checks every received byte. Bounded: 60 s of inactivity fails it.
pub fn tcp_transfer(from: &Netns, to: &Netns, to_ip: Ipv4Addr, bytes: u64) -> Result<Transfer> {
    tcp_transfer_via(from, to, to_ip, to_ip, bytes)
}

/// As [`tcp_transfer`], but the client connects to `connect_ip` (e.g. a Service
/// address some node translates to `to_ip`), same port.
pub fn tcp_transfer_via(from: &Netns, to: &Netns, to_ip: Ipv4Addr, connect_ip: Ipv4Addr, bytes: u64) -> Result<Transfer> {
    let port = next_port();
    let seed = 0x9e37_79b9_7f4a_7c15 ^ u64::from(port);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = to.spawn(move || -> Result<u64> {
        let listener = TcpListener::bind((to_ip, port)).context("bind")?;
        ready_tx.send(()).ok();
        listener.set_nonblocking(false)?;
        let (mut conn, _) = listener.accept().context("accept")?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut expect = Stream(seed);
        let (mut buf, mut want) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        let mut got = 0u64;
        loop {
            let n = match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context(format!("reading after {got} bytes")),
            };
            // Regenerate exactly the n bytes the sender wrote at this offset.
            verify(&mut expect, &buf[..n], &mut want, got)?;
            got += n as u64;
        }
        Ok(got)
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).context("server did not start")?;
    let start = Instant::now();
    let client = from.spawn(move || -> Result<()> {
        let addr = SocketAddr::from((connect_ip, port));
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).context("connect")?;
        conn.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut stream = Stream(seed);
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        while sent < bytes {
            let n = CHUNK.min((bytes - sent) as usize);
            stream.fill(&mut buf[..n]);
            conn.write_all(&buf[..n]).with_context(|| format!("writing after {sent} bytes"))?;
            sent += n as u64;
        }
        conn.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    });
    client.join().map_err(|_| anyhow!("client panicked"))??;
    let got = server.join().map_err(|_| anyhow!("server panicked"))??;
    let elapsed = start.elapsed();
    ensure!(got == bytes, "received {got} of {bytes} bytes");
    Ok(Transfer { bytes, elapsed })
}

/// The sender fills whole CHUNK-sized blocks from the stream; the receiver sees
/// arbitrary read sizes. Keep a window of the expected stream aligned to blocks.
pub(crate) fn verify(expect: &mut Stream, got: &[u8], window: &mut [u8], offset: u64) -> Result<()> {
    // `window` holds the current expected block; refill at block boundaries.
    let mut pos = offset;
    let mut i = 0;
    while i < got.len() {
        let in_block = (pos % CHUNK as u64) as usize;
        if in_block == 0 {
            expect.fill(window);
        }
        let n = (CHUNK - in_block).min(got.len() - i);
        if got[i..i + n] != window[in_block..in_block + n] {
            let bad = (0..n).find(|&k| got[i + k] != window[in_block + k]).unwrap_or(0);
            bail!("content mismatch at byte {}", pos + bad as u64);
        }
        i += n;
        pos += n as u64;
    }
    Ok(())
}

/// A UDP socket bound inside `ns`, receiving for `listen` and returning what came.
pub fn udp_receive(ns: &Netns, ip: Ipv4Addr, port: u16, listen: Duration) -> std::thread::JoinHandle<Result<Vec<Vec<u8>>>> {
    ns.spawn(move || {
        let sock = UdpSocket::bind((ip, port)).context("bind")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + listen;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) => got.push(buf[..n].to_vec()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    })
}

/// Sends `count` datagrams from inside `ns`.
pub fn udp_send(ns: &Netns, to: Ipv4Addr, port: u16, count: u32, payload: &'static [u8]) -> Result<()> {
    udp_send_ttl(ns, to, port, count, payload, 64)
}

/// As [`udp_send`], with the IP TTL `ttl`.
pub fn udp_send_ttl(ns: &Netns, to: Ipv4Addr, port: u16, count: u32, payload: &'static [u8], ttl: u32) -> Result<()> {
    ns.spawn(move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.set_ttl(ttl)?;
        for _ in 0..count {
            sock.send_to(payload, (to, port))?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow!("sender panicked"))?
}

/// `count` TCP connections from `from` to `to_ip` in `to`, each opened and closed
/// without data (handshake and teardown only). Bounded by a 5-second timeout per step.
pub fn tcp_connect_close(from: &Netns, to: &Netns, to_ip: Ipv4Addr, count: u32) -> Result<()> {
    let port = next_port();
    let listener = to.spawn(move || {
        let l = TcpListener::bind((to_ip, port)).context("bind")?;
        for _ in 0..count {
            let (mut s, _) = l.accept().context("accept")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            // Wait for the client's FIN, then close our end.
            let mut buf = [0u8; 1];
            let n = s.read(&mut buf).context("read")?;
            ensure!(n == 0, "data on a connection that should carry none");
        }
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(200));
    from.spawn(move || {
        for _ in 0..count {
            let s = TcpStream::connect_timeout(&(to_ip, port).into(), Duration::from_secs(5)).context("connect")?;
            drop(s);
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow!("client panicked"))??;
    listener.join().map_err(|_| anyhow!("listener panicked"))?
}

/// `GET path` from inside `ns` to `127.0.0.1:port` (HTTP/1.1, `Connection: close`):
/// the whole response, status line first.
pub fn http_get(ns: &Netns, port: u16, path: &str) -> Result<String> {
    let path = path.to_owned();
    ns.spawn(move || http_get_here(port, &path, Duration::from_secs(5)))
        .join()
        .map_err(|_| anyhow!("HTTP client thread panicked"))?
}

/// `GET path` on 127.0.0.1:`port` in this thread's namespace: the whole response,
/// waited for up to `timeout`.
pub fn http_get_here(port: u16, path: &str, timeout: Duration) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Sends `packet` (a whole IPv4 packet, header included, any source) `count` times from
/// inside `ns` through a raw socket, as a pod with `CAP_NET_RAW` can: the kernel routes
/// it by its destination and sends it as it is.
pub fn raw_ipv4_send(ns: &Netns, packet: Vec<u8>, count: u32) -> Result<()> {
    ns.spawn(move || {
        let dst: [u8; 4] = packet.get(16..20).and_then(|d| d.try_into().ok()).ok_or_else(|| anyhow!("no IPv4 header"))?;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst) },
            sin_zero: [0; 8],
        };
        raw_send((libc::AF_INET, libc::IPPROTO_RAW), &addr, &packet, count)
    })
    .join()
    .map_err(|_| anyhow!("sender panicked"))?
}

/// Sends the Ethernet `frame` `count` times out of `iface` in `ns` (an `AF_PACKET`
/// socket: the frame leaves as built, MACs and all).
pub fn raw_frame_send(ns: &Netns, iface: &str, frame: Vec<u8>, count: u32) -> Result<()> {
    let iface = std::ffi::CString::new(iface)?;
    ns.spawn(move || {
        // SAFETY: a plain lookup by a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        anyhow::ensure!(ifindex != 0 && frame.len() >= 14, "no interface {iface:?}, or no Ethernet header");
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        raw_send((libc::AF_PACKET, 0), &addr, &frame, count)
    })
    .join()
    .map_err(|_| anyhow!("sender panicked"))?
}

/// `count` sends of `bytes` to `addr` on a new `SOCK_RAW` socket of `(domain, protocol)`,
/// 10 ms apart.
fn raw_send<A>((domain, protocol): (i32, i32), addr: &A, bytes: &[u8], count: u32) -> Result<()> {
    // SAFETY: plain socket calls; the descriptor is this function's and is closed on
    // every path; `addr` is a sockaddr of its own size.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_RAW, protocol);
        anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let len = std::mem::size_of::<A>() as libc::socklen_t;
        for _ in 0..count {
            if libc::sendto(fd, bytes.as_ptr().cast(), bytes.len(), 0, (addr as *const A).cast(), len) < 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                anyhow::bail!("raw send: {e}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        libc::close(fd);
    }
    Ok(())
}
