//! The health port (Flannel's `--healthz-ip`/`--healthz-port`), served from the
//! agent's first second: `GET /healthz` for the liveness probe, `GET /readyz` for the
//! readiness and startup probes (see [`crate::healthz`]), `GET /metrics` for Prometheus.
//! Served by [`bounded`]: timeouts, a cap on connections, accept errors backed off.

pub mod bounded;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::healthz::Health;

struct Shared {
    health: Health,
    bpffs_dir: PathBuf,
}

/// Binds `addr` and serves in the background.
pub async fn spawn(addr: SocketAddr, health: Health, bpffs_dir: PathBuf) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "health and metrics endpoint listening");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Shared { health, bpffs_dir }));
    tokio::spawn(bounded::serve(listener, app, bounded::Limits::default()));
    Ok(())
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match shared.health.failing(Instant::now()) {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match shared.health.not_ready(Instant::now()) {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // Map reads are syscalls: off the async workers.
    let body = tokio::task::spawn_blocking(move || crate::metrics::render(&shared.bpffs_dir, &shared.health)).await;
    match body {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("collecting: {e}\n")),
    }
}
