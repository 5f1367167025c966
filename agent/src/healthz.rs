//! `GET /healthz` (Flannel's `--healthz-port`): 200 while the agent keeps its node
//! programmed; 503, with the reason, once no resync has succeeded for three resync
//! periods — resyncs that keep failing (an uplink gone for good, a netlink or map error
//! that does not clear) or an event loop that stopped running them — so a liveness
//! probe restarts the agent and the failure shows in the pod's status.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// What the endpoint reports; the agent updates it after every resync.
#[derive(Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
    /// How long without a successful resync is a failure.
    max_age: Duration,
}

struct State {
    last_ok: Instant,
    last_error: Option<String>,
}

impl Health {
    /// For an agent that resyncs every `resync`: three missed or failed periods (one
    /// can be a race with the node's own network manager) and a second of slack.
    pub fn new(resync: Duration) -> Health {
        Health {
            state: Arc::new(Mutex::new(State { last_ok: Instant::now(), last_error: None })),
            max_age: resync * 3 + Duration::from_secs(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn resync_ok(&self) {
        let mut s = self.state();
        s.last_ok = Instant::now();
        s.last_error = None;
    }

    pub fn resync_failed(&self, error: String) {
        self.state().last_error = Some(error);
    }

    /// `None`: healthy at `now`; else why not.
    fn failing(&self, now: Instant) -> Option<String> {
        let s = self.state();
        let age = now.saturating_duration_since(s.last_ok);
        (age > self.max_age).then(|| {
            let last = s.last_error.as_deref().unwrap_or("none: resyncs stopped running");
            format!("no successful resync for {} s; last error: {last}\n", age.as_secs())
        })
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
                    let (status, body) = match health.failing(Instant::now()) {
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
    fn fails_after_three_periods_without_a_good_resync_and_recovers() {
        let h = Health::new(Duration::from_secs(10));
        let t0 = Instant::now();
        h.resync_failed("uplink ul0 (index 2) is gone".into());
        assert!(h.failing(t0 + Duration::from_secs(30)).is_none(), "failed resyncs within three periods are tolerated");
        let why = h.failing(t0 + Duration::from_secs(32)).expect("failing");
        assert!(why.contains("no successful resync for 3") && why.contains("last error: uplink ul0 (index 2) is gone"), "{why}");
        h.resync_ok();
        assert!(h.failing(Instant::now() + Duration::from_secs(30)).is_none());
        // A loop that stops resyncing, without any error, is caught too.
        let why = h.failing(Instant::now() + Duration::from_secs(40)).expect("failing");
        assert!(why.contains("resyncs stopped running"), "{why}");
    }
}
