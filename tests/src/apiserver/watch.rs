//! Watch streams: a chunked response of `{"type": ..., "object": ...}` lines.
//!
//! A watch starts either now (with synthetic ADDED events for what exists, and
//! for `sendInitialEvents` a bookmark marking their end) or after a given
//! resourceVersion, replaying history from there. History older than the last
//! compaction is gone: such a watch gets one ERROR event with a 410 `Expired`
//! Status and ends, which is what makes kube's watcher and client-go's reflector
//! relist. Bookmarks carry the current revision every second when asked for.
//!
//! A watch sees one resource, in one namespace or all: the store's history holds
//! every kind, and the others' changes pass it by. With selectors, a change that
//! moves an object into the selection is ADDED and one that moves it out is
//! DELETED, as the watch cache reports them.

use std::{
    io::{self, Write},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    Shared,
    http::Chunked,
    resource::Scope,
    router::Output,
    selector::Selectors,
    status::Status,
    store::{Event, EventType, Store},
};

const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
/// How long a watch from a revision not reached yet waits for it (as upstream).
const FUTURE_RV_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the current state; `initial` sends it as ADDED events first.
    Now { initial: bool, end_bookmark: bool },
    /// Events after this revision.
    After(u64),
}

#[derive(Debug)]
pub struct WatchRequest {
    pub scope: Scope,
    pub selectors: Selectors,
    pub start: Start,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub output: Output,
}

fn line(kind: &str, object: Value) -> Vec<u8> {
    let mut l = serde_json::to_vec(&json!({ "type": kind, "object": object })).expect("a JSON value serializes");
    l.push(b'\n');
    l
}

fn bookmark(rv: u64, req: &WatchRequest, initial_end: bool) -> Vec<u8> {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    let (api_version, kind) = match req.output {
        Output::Json => (req.scope.api.api_version(), req.scope.api.kind()),
        Output::Table(_) => ("meta.k8s.io/v1", "Table"),
        Output::Metadata => ("meta.k8s.io/v1", "PartialObjectMetadata"),
    };
    line("BOOKMARK", json!({ "kind": kind, "apiVersion": api_version, "metadata": meta }))
}

fn error(s: &Status) -> Vec<u8> {
    line("ERROR", s.to_json())
}

/// What a watcher of `scope` with `sel` sees of `e`, if anything.
fn visible(e: &Event, scope: &Scope, sel: &Selectors) -> Option<(&'static str, Value)> {
    if !scope.contains(&e.key) {
        return None;
    }
    let was = e.prev.as_ref().is_some_and(|p| sel.matches(p));
    let is = e.kind != EventType::Deleted && sel.matches(&e.object);
    match (e.kind, was, is) {
        (EventType::Deleted, true, _) => Some(("DELETED", e.object.clone())),
        (EventType::Added, _, true) | (EventType::Modified, false, true) => Some(("ADDED", e.object.clone())),
        (EventType::Modified, true, true) => Some(("MODIFIED", e.object.clone())),
        (EventType::Modified, true, false) => {
            // It left the selection: its previous state, at this revision.
            let mut gone = e.prev.clone().expect("was matched");
            gone["metadata"]["resourceVersion"] = e.object["metadata"]["resourceVersion"].clone();
            Some(("DELETED", gone))
        }
        _ => None,
    }
}

/// Collects the lines for everything after `cursor`, advancing it; `Err` carries
/// the final ERROR line when the history is gone.
fn pending(store: &Store, cursor: &mut u64, req: &WatchRequest) -> Result<Vec<Vec<u8>>, Vec<u8>> {
    let events = store
        .events_after(*cursor)
        .map_err(|c| error(&Status::expired(format!("too old resource version: {} ({})", cursor, c.0))))?;
    let api = req.scope.api;
    let lines =
        events.filter_map(|e| visible(e, &req.scope, &req.selectors)).map(|(k, o)| line(k, req.output.object(api, &o))).collect();
    *cursor = store.rv();
    Ok(lines)
}

/// Streams `req` to `w` until its timeout (then ends the response cleanly), the
/// client goes away, or the server stops (then fails, so the connection closes
/// without a final chunk, as when an API server dies).
pub fn serve<W: Write>(shared: &Shared, stop: &AtomicBool, w: &mut W, req: WatchRequest) -> io::Result<()> {
    let stopped = || io::Error::new(io::ErrorKind::ConnectionAborted, "server stopped");
    let deadline = Instant::now() + req.timeout;
    let mut first = Vec::new();
    let mut ended = false;
    let mut store = shared.store.lock().expect("store lock");
    let mut cursor = match req.start {
        Start::Now { initial, end_bookmark } => {
            if initial {
                let objects = req.scope.objects(&store).map(|(_, o)| o).filter(|o| req.selectors.matches(o));
                first.extend(objects.map(|o| line("ADDED", req.output.object(req.scope.api, o))));
            }
            if end_bookmark {
                first.push(bookmark(store.rv(), &req, true));
            }
            store.rv()
        }
        Start::After(rv) => {
            let (s, _) = shared.changed.wait_timeout_while(store, FUTURE_RV_WAIT, |s| s.rv() < rv).expect("store lock");
            store = s;
            if store.rv() < rv {
                let too_large = Status::timeout(format!("Too large resource version: {rv}, current: {}", store.rv()));
                first.push(error(&too_large));
                ended = true;
            }
            rv
        }
    };
    if !ended {
        match pending(&store, &mut cursor, &req) {
            Ok(lines) => first.extend(lines),
            Err(last) => {
                first.push(last);
                ended = true;
            }
        }
    }
    drop(store);
    let mut out = Chunked::start(w, "application/json")?;
    for l in &first {
        out.send(l)?;
    }
    if ended {
        return out.finish();
    }
    let mut next_bookmark = Instant::now() + BOOKMARK_EVERY;
    loop {
        let store = shared.store.lock().expect("store lock");
        if stop.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        let now = Instant::now();
        if now >= deadline {
            drop(store);
            return out.finish();
        }
        let wake = if req.bookmarks { next_bookmark.min(deadline) } else { deadline };
        let (store, _) = shared
            .changed
            .wait_timeout_while(store, wake.saturating_duration_since(now), |s| s.rv() == cursor && !stop.load(Ordering::SeqCst))
            .expect("store lock");
        if stop.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        let result = pending(&store, &mut cursor, &req);
        drop(store);
        match result {
            Ok(lines) => {
                for l in &lines {
                    out.send(l)?;
                }
            }
            Err(last) => {
                out.send(&last)?;
                return out.finish();
            }
        }
        if req.bookmarks && Instant::now() >= next_bookmark {
            out.send(&bookmark(cursor, &req, false))?;
            next_bookmark = Instant::now() + BOOKMARK_EVERY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::{resource::Api, selector::LabelSelector, store::Key};

    #[test]
    fn selection_changes_become_added_and_deleted() {
        let sel = Selectors { labels: LabelSelector::parse("role=edge").unwrap(), ..Default::default() };
        let nodes = Scope::cluster(Api::Nodes);
        let edge = json!({"kind": "Node", "metadata": {"name": "a", "resourceVersion": "5", "labels": {"role": "edge"}}});
        let plain = json!({"kind": "Node", "metadata": {"name": "a", "resourceVersion": "6"}});
        let ev = |kind, object: &Value, prev: Option<&Value>| Event {
            rv: 6,
            key: Key::of(object),
            kind,
            object: object.clone(),
            prev: prev.cloned(),
        };
        let kind = |e: Event| visible(&e, &nodes, &sel).map(|(k, o)| (k, o["metadata"]["resourceVersion"].clone()));
        assert_eq!(kind(ev(EventType::Modified, &plain, Some(&edge))), Some(("DELETED", json!("6"))));
        assert_eq!(kind(ev(EventType::Modified, &edge, Some(&plain))), Some(("ADDED", json!("5"))));
        assert_eq!(kind(ev(EventType::Modified, &edge, Some(&edge))), Some(("MODIFIED", json!("5"))));
        assert_eq!(kind(ev(EventType::Added, &plain, None)), None);
        assert_eq!(kind(ev(EventType::Deleted, &plain, Some(&plain))), None);
        let event = json!({"kind": "Event", "metadata": {"name": "e", "namespace": "default", "resourceVersion": "6"}});
        let all = Selectors::default();
        assert!(visible(&ev(EventType::Added, &event, None), &nodes, &all).is_none(), "another kind passes by");
        assert!(visible(&ev(EventType::Added, &event, None), &Scope::cluster(Api::Events), &all).is_some());
        assert!(visible(&ev(EventType::Added, &event, None), &Scope::namespaced(Api::CoreEvents, "kube-system"), &all).is_none());
    }
}
