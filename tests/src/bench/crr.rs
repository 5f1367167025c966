//! TCP connect/request/response/close rate (what a service mesh-less HTTP/1.0 client
//! or a health checker does): no packaged tool measures it simply, so it runs here, in
//! process, on threads that entered the pod namespaces ([`Netns::spawn`]). The server
//! in pod b accepts, reads a 64-byte request, writes a 64-byte response and closes;
//! client threads in pod a loop connect → write → read → close until the deadline.
//! Every blocking call has a timeout and every loop a deadline.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, ensure};
use nix::sys::{
    socket::{setsockopt, sockopt},
    time::TimeVal,
};

use crate::{netns::Netns, traffic::next_port};

/// Client threads (and as many server threads): enough to keep both cores busy.
pub const CLIENTS: usize = 4;
const MESSAGE: usize = 64;
/// Per-call bound on connect, read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crr {
    pub transactions: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Crr {
    /// Completed transactions per second.
    pub fn rate(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }
}

/// One transaction. SO_LINGER 0 makes the client's close an RST that leaves no
/// TIME_WAIT: a normal close by the client would park each connection's 4-tuple for 60 s,
/// and at tens of thousands of connections per second the ~28k ephemeral ports run out
/// within a few seconds, so the run would measure port exhaustion instead of the
/// datapath. The server closes first (after its response), so nothing is lost by the RST.
fn transact(addr: SocketAddr, request: &[u8; MESSAGE]) -> std::io::Result<()> {
    let mut conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    setsockopt(&conn, sockopt::Linger, &libc::linger { l_onoff: 1, l_linger: 0 })?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(request)?;
    let mut response = [0u8; MESSAGE];
    conn.read_exact(&mut response)?;
    if response[0] != request[0] ^ 0xff {
        return Err(std::io::Error::new(ErrorKind::InvalidData, "wrong response"));
    }
    Ok(())
}

/// The server side of one connection: read the request, answer, close (drop).
fn serve(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = [0u8; MESSAGE];
    conn.read_exact(&mut request)?;
    let response = request.map(|b| b ^ 0xff);
    conn.write_all(&response)
}

/// Runs `clients` client threads in `client_ns` against `ip` (in `server_ns`) for `seconds`.
pub fn run(client_ns: &Netns, server_ns: &Netns, ip: Ipv4Addr, seconds: u32, clients: usize) -> Result<Crr> {
    let port = next_port();
    let run_for = Duration::from_secs(seconds.into());
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();

    let server = {
        let (stop, served) = (stop.clone(), served.clone());
        server_ns.spawn(move || -> Result<()> {
            let listener = TcpListener::bind((ip, port)).context("bind")?;
            // accept() honours SO_RCVTIMEO on Linux: workers wake to check `stop`.
            setsockopt(&listener, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))?;
            ready_tx.send(()).ok();
            // Bounded even if the caller never sets `stop`.
            let hard_deadline = Instant::now() + run_for + Duration::from_secs(30);
            std::thread::scope(|s| {
                // Threads inherit this thread's network namespace.
                let workers: Vec<_> = (0..clients)
                    .map(|_| {
                        s.spawn(|| -> Result<()> {
                            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
                                match listener.accept() {
                                    Ok((conn, _)) => {
                                        if serve(conn).is_ok() {
                                            served.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                                        ) => {}
                                    Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                                    Err(e) => return Err(e).context("accept"),
                                }
                            }
                            Ok(())
                        })
                    })
                    .collect();
                workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow!("server worker panicked"))?)
            })
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(10)).context("CRR server did not start")?;

    let start = Instant::now();
    let deadline = start + run_for;
    let addr = SocketAddr::from((ip, port));
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            client_ns.spawn(move || -> Result<(u64, u64, Instant)> {
                let request = [k as u8; MESSAGE];
                let (mut done, mut errors) = (0u64, 0u64);
                let mut last_error = None;
                while Instant::now() < deadline {
                    match transact(addr, &request) {
                        Ok(()) => done += 1,
                        Err(e) => {
                            errors += 1;
                            last_error = Some(e);
                        }
                    }
                }
                ensure!(done > 0, "no transaction completed ({errors} errors, last: {last_error:?})");
                Ok((done, errors, Instant::now()))
            })
        })
        .collect();
    let results: Vec<Result<(u64, u64, Instant)>> =
        threads.into_iter().map(|t| t.join().map_err(|_| anyhow!("client panicked"))?).collect();
    stop.store(true, Ordering::Relaxed);
    server.join().map_err(|_| anyhow!("server panicked"))??;

    let mut crr = Crr { transactions: 0, errors: 0, elapsed: Duration::ZERO };
    for r in results {
        let (done, errors, end) = r?;
        crr.transactions += done;
        crr.errors += errors;
        crr.elapsed = crr.elapsed.max(end - start);
    }
    ensure!(
        crr.transactions <= served.load(Ordering::Relaxed),
        "clients completed {} transactions, server answered {}",
        crr.transactions,
        served.load(Ordering::Relaxed)
    );
    Ok(crr)
}
