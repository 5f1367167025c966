//! `GET /healthz` (Flannel's `--healthz-port`): 200 while the agent keeps its node
//! programmed; 503, with the reason, once resyncs have failed [`Health::FAILURES`]
//! times in a row (an uplink gone for good, a netlink or map error that does not
//! clear), so a liveness probe restarts the agent and the failure shows in its status.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// What the endpoint reports; the agent updates it after every resync.
#[derive(Clone, Default)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    failures: u32,
    last_error: String,
}

impl Health {
    /// Consecutive failed resyncs before the endpoint reports failure: one can be a
    /// race with the node's own network manager; three are a node left unprogrammed.
    pub const FAILURES: u32 = 3;

    pub fn resync_ok(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failures = 0;
        s.last_error.clear();
    }

    pub fn resync_failed(&self, error: String) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failures += 1;
        s.last_error = error;
    }

    /// `None`: healthy; else why not.
    fn failing(&self) -> Option<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.failures >= Self::FAILURES).then(|| format!("{} resyncs in a row failed; last: {}\n", s.failures, s.last_error))
    }
}

pub async fn spawn(addr: SocketAddr, health: Health) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "health endpoint listening");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let reply = if !buf[..n].starts_with(b"GET /healthz ") {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    let (status, body) = match health.failing() {
                        None => ("200 OK", "ok\n".to_string()),
                        Some(why) => ("503 Service Unavailable", why),
                    };
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_after_consecutive_failed_resyncs_and_recovers() {
        let h = Health::default();
        assert!(h.failing().is_none());
        for _ in 1..Health::FAILURES {
            h.resync_failed("uplink ul0 (index 2) is gone".into());
            assert!(h.failing().is_none(), "a single failed resync is not yet a failure");
        }
        h.resync_failed("uplink ul0 (index 2) is gone".into());
        let why = h.failing().expect("failing");
        assert!(why.contains("3 resyncs in a row failed; last: uplink ul0 (index 2) is gone"), "{why}");
        h.resync_ok();
        assert!(h.failing().is_none());
    }
}
