//! A bounded HTTP/1 server for the health port, which listens on every node address
//! by default (`--healthz-ip 0.0.0.0`, as Flannel's): whoever reaches the node can
//! connect, so nobody may hold it or wear the agent down.
//!
//! - **Timeouts.** A request's head must arrive within [`Limits::header_timeout`]
//!   (a slowloris client, silent or trickling, is closed), and a connection lives at
//!   most [`Limits::connection_timeout`] (a client that never reads the response).
//!   One request per connection: probes and scrapes need no keep-alive, and an idle
//!   kept-alive connection would hold a slot.
//! - **A cap.** At most [`Limits::max_connections`] are served at once; at the cap the
//!   loop stops accepting and further clients wait in the kernel's listen backlog,
//!   where each is served as a slot frees (within the timeouts), not refused.
//! - **Accept errors** (EMFILE, ENFILE, ENOBUFS: the process or the host out of
//!   something) do not spin the loop: it backs off, doubling from 10 ms up to 1 s,
//!   and says so once per run of failures.

use std::{future::Future, io, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// What a client may take of the health port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// The request line and headers must arrive within this.
    pub header_timeout: Duration,
    /// A connection's whole life: request, handler, response.
    pub connection_timeout: Duration,
}

impl Default for Limits {
    /// Probes (kubelet's default timeout is 1 s) and scrapes finish in milliseconds;
    /// 32 at once is far more than a node's probes and a few Prometheus servers need.
    fn default() -> Self {
        Limits { max_connections: 32, header_timeout: Duration::from_secs(5), connection_timeout: Duration::from_secs(10) }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where connections come from: the TCP listener, or streams a test hands over.
pub trait Acceptor: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    async fn accept(&mut self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Serves `app` on what `acceptor` yields, within `limits`, until the runtime stops.
pub async fn serve<A: Acceptor>(mut acceptor: A, app: Router, limits: Limits) {
    let slots = std::sync::Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::ZERO;
    loop {
        // Never closed: the semaphore lives as long as this loop.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match acceptor.accept().await {
            Ok(stream) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                if backoff.is_zero() {
                    tracing::warn!("health port: accepting a connection: {e}; backing off (up to {BACKOFF_MAX:?} between tries)");
                }
                backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(false);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            // Dropping the connection closes it, whatever state it is in.
            let _ = tokio::time::timeout(limits.connection_timeout, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Instant,
    };

    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
        sync::mpsc,
    };

    use super::*;

    /// Streams handed over by the test, as if accepted.
    struct Handed(mpsc::UnboundedReceiver<DuplexStream>);

    impl Acceptor for Handed {
        type Stream = DuplexStream;
        async fn accept(&mut self) -> io::Result<DuplexStream> {
            match self.0.recv().await {
                Some(s) => Ok(s),
                None => std::future::pending().await,
            }
        }
    }

    const LIMITS: Limits = Limits {
        max_connections: 2,
        header_timeout: Duration::from_millis(300),
        connection_timeout: Duration::from_millis(1000),
    };

    fn server() -> mpsc::UnboundedSender<DuplexStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
        tokio::spawn(serve(Handed(rx), app, LIMITS));
        tx
    }

    fn connect(tx: &mpsc::UnboundedSender<DuplexStream>) -> DuplexStream {
        let (client, server) = tokio::io::duplex(4096);
        tx.send(server).expect("server running");
        client
    }

    /// What the server sends until it closes, and when it closed.
    async fn read_to_close(mut s: DuplexStream) -> (String, Instant) {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        (String::from_utf8_lossy(&out).into_owned(), Instant::now())
    }

    async fn get_healthz(mut s: DuplexStream) -> String {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        read_to_close(s).await.0
    }

    #[tokio::test]
    async fn a_slowloris_client_is_closed_in_time_and_blocks_nobody() {
        let tx = server();
        let t0 = Instant::now();
        let silent = connect(&tx);
        let mut trickle = connect(&tx);
        trickle.write_all(b"GET /healthz HTTP/1.1\r\nHost:").await.unwrap();
        let (silent, trickle) = (tokio::spawn(read_to_close(silent)), tokio::spawn(read_to_close(trickle)));
        // Both slots are taken: this one waits for the first to be closed.
        let answered = tokio::spawn(get_healthz(connect(&tx)));
        for closed in [silent, trickle] {
            let (said, at) = closed.await.unwrap();
            let after = at - t0;
            assert!(after >= LIMITS.header_timeout && after < LIMITS.header_timeout * 2, "closed after {after:?}: {said:?}");
            assert!(!said.contains("200 OK"), "{said}");
        }
        let r = tokio::time::timeout(LIMITS.header_timeout * 2, answered).await.expect("answered once a slot freed").unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK") && r.ends_with("ok\n"), "{r}");
        // Below the cap, a silent client delays nobody.
        let _silent = connect(&tx);
        let t1 = Instant::now();
        let r = get_healthz(connect(&tx)).await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(t1.elapsed() < Duration::from_millis(100), "took {:?} beside a silent client", t1.elapsed());
    }

    #[tokio::test]
    async fn connections_over_the_cap_wait_and_are_served() {
        let tx = server();
        let idle: Vec<_> = (0..6).map(|_| connect(&tx)).collect();
        let t0 = Instant::now();
        let answered = tokio::spawn(get_healthz(connect(&tx)));
        // Six silent clients, two slots: three rounds of header timeouts before it.
        let r = tokio::time::timeout(LIMITS.header_timeout * 5, answered).await.expect("served, not dropped").unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(t0.elapsed() >= LIMITS.header_timeout * 3, "queued behind the cap, served after {:?}", t0.elapsed());
        drop(idle);
    }

    #[tokio::test]
    async fn a_client_that_never_reads_is_dropped_at_the_connection_timeout() {
        let tx = server();
        // A duplex buffer too small for the response, never read: the write blocks.
        let (mut client, srv) = tokio::io::duplex(8);
        tx.send(srv).unwrap();
        client.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        // Past the server's deadline (started before ours), so its timer has fired.
        tokio::time::sleep(LIMITS.connection_timeout + Duration::from_millis(100)).await;
        let closed = tokio::time::timeout(Duration::from_millis(300), read_to_close(client)).await;
        let (said, _) = closed.expect("closed by the server at its connection timeout");
        assert!(said.len() <= 8, "no more than the buffer took: {said:?}");
    }

    /// An acceptor that always fails, as with EMFILE, counting its calls.
    struct Failing(Arc<AtomicUsize>);

    impl Acceptor for Failing {
        type Stream = DuplexStream;
        async fn accept(&mut self) -> io::Result<DuplexStream> {
            if self.0.fetch_add(1, Ordering::Relaxed) > 1000 {
                // Spinning: stop here so the assertion below reports it.
                std::future::pending::<()>().await;
            }
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        }
    }

    #[tokio::test]
    async fn accept_errors_back_off_instead_of_spinning() {
        let calls = Arc::new(AtomicUsize::new(0));
        let server = tokio::spawn(serve(Failing(calls.clone()), Router::new(), LIMITS));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.abort();
        let n = calls.load(Ordering::Relaxed);
        // 10, 20, 40, … 640 ms, then 1 s: eight tries in 1.5 s.
        assert!((5..=12).contains(&n), "{n} accepts in 1.5 s");
    }
}
