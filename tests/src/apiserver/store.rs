//! Storage as etcd behaves under the API server: one global, strictly increasing
//! revision (the `resourceVersion` of every object, list and event), and an event
//! history that watches resume from until it is compacted. Past states are rebuilt
//! from that history, so paginated and `Exact` lists are consistent snapshots.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

/// Events kept before the oldest are dropped (as a compaction would).
const MAX_HISTORY: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change: `object` as of `rv` (for a deletion, its last state stamped with
/// the deletion's revision, as watches deliver it) and the state before it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub object: Value,
    pub prev: Option<Value>,
}

/// The history that a request needs is gone: the oldest revision still known.
#[derive(Debug, PartialEq, Eq)]
pub struct Compacted(pub u64);

#[derive(Debug)]
pub struct Store {
    rv: u64,
    /// Every event after this revision is in `history`.
    floor: u64,
    objects: BTreeMap<String, Value>,
    history: VecDeque<Event>,
}

fn set_rv(obj: &mut Value, rv: u64) {
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().expect("stored objects have names").to_string()
}

impl Default for Store {
    fn default() -> Self {
        Store { rv: 1, floor: 1, objects: BTreeMap::new(), history: VecDeque::new() }
    }
}

impl Store {
    /// The current revision.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.objects.get(name)
    }

    pub fn objects(&self) -> &BTreeMap<String, Value> {
        &self.objects
    }

    fn record(&mut self, kind: EventType, object: &Value, prev: Option<Value>) {
        self.history.push_back(Event { rv: self.rv, kind, object: object.clone(), prev });
        if self.history.len() > MAX_HISTORY {
            let oldest = self.history.pop_front().expect("history is non-empty");
            self.floor = oldest.rv;
        }
    }

    /// Writes `obj` (new or replacing its namesake) at the next revision.
    pub fn put(&mut self, mut obj: Value) -> Value {
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let prev = self.objects.insert(name(&obj), obj.clone());
        let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
        self.record(kind, &obj, prev);
        obj
    }

    /// Deletes `name` at the next revision; returns the object as it was.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let last = self.objects.remove(name)?;
        self.rv += 1;
        let mut tombstone = last.clone();
        set_rv(&mut tombstone, self.rv);
        self.record(EventType::Deleted, &tombstone, Some(last.clone()));
        Some(last)
    }

    /// Forgets every event up to now, as etcd compaction does.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// Events after `rv`, oldest first.
    pub fn events_after(&self, rv: u64) -> Result<impl Iterator<Item = &Event>, Compacted> {
        if rv < self.floor {
            return Err(Compacted(self.floor));
        }
        Ok(self.history.iter().skip_while(move |e| e.rv <= rv))
    }

    /// The objects as they were at revision `rv`, rebuilt by undoing later events.
    pub fn snapshot_at(&self, rv: u64) -> Result<BTreeMap<String, Value>, Compacted> {
        if rv < self.floor {
            return Err(Compacted(self.floor));
        }
        let mut objects = self.objects.clone();
        for e in self.history.iter().rev().take_while(|e| e.rv > rv) {
            match &e.prev {
                Some(p) => objects.insert(name(p), p.clone()),
                None => objects.remove(&name(&e.object)),
            };
        }
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, v: u32) -> Value {
        json!({"metadata": {"name": name}, "v": v})
    }

    #[test]
    fn revisions_events_and_snapshots() {
        let mut s = Store::default();
        let a = s.put(node("a", 1));
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        s.put(node("b", 1));
        let at3 = s.rv();
        s.put(node("a", 2));
        let gone = s.remove("b").unwrap();
        assert_eq!(gone["metadata"]["resourceVersion"], "3", "the deleted object as it was");
        let kinds: Vec<_> = s.events_after(2).unwrap().map(|e| (e.rv, e.kind)).collect();
        assert_eq!(kinds, [(3, EventType::Added), (4, EventType::Modified), (5, EventType::Deleted)]);
        let deleted = s.events_after(4).unwrap().next().unwrap();
        assert_eq!(deleted.object["metadata"]["resourceVersion"], "5", "tombstones carry the deletion revision");
        let then = s.snapshot_at(at3).unwrap();
        assert_eq!((then["a"]["v"].as_u64(), then["b"]["v"].as_u64()), (Some(1), Some(1)));
        assert!(s.snapshot_at(1).unwrap().is_empty());
        s.compact();
        assert_eq!(s.events_after(4).err(), Some(Compacted(5)));
        assert_eq!(s.events_after(5).unwrap().count(), 0, "watching from now is fine");
        assert_eq!(s.snapshot_at(5).unwrap().len(), 1);
    }
}
