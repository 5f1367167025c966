//! Storage as etcd behaves under the API server: one global, strictly increasing
//! revision (the `resourceVersion` of every object, list and event, whatever the
//! kind), and an event history that watches resume from until it is compacted.
//! Past states are rebuilt from that history, so paginated and `Exact` lists are
//! consistent snapshots. Objects are keyed as etcd keys them, by kind, namespace
//! and name, so one kind (or one namespace of it) is a contiguous range.

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

/// Where an object is stored: `/registry/<kind>/<namespace>/<name>` upstream.
/// The namespace is empty for cluster-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    /// The key of a stored object (which always has a kind and a name).
    pub fn of(obj: &Value) -> Key {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let meta = &obj["metadata"];
        let key = Key { kind: text(&obj["kind"]), namespace: text(&meta["namespace"]), name: text(&meta["name"]) };
        assert!(!key.kind.is_empty() && !key.name.is_empty(), "stored objects have a kind and a name");
        key
    }
}

/// One change: `object` as of `rv` (for a deletion, its last state stamped with
/// the deletion's revision, as watches deliver it) and the state before it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub key: Key,
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
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
}

fn set_rv(obj: &mut Value, rv: u64) {
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
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

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// The objects of `kind`, in one namespace or (`None`) all, in key order.
    pub fn range<'a>(&'a self, kind: &'a str, namespace: Option<&'a str>) -> impl Iterator<Item = (&'a Key, &'a Value)> {
        let start = Key { kind: kind.to_string(), namespace: namespace.unwrap_or_default().to_string(), name: String::new() };
        self.objects.range(start..).take_while(move |(k, _)| k.kind == kind && namespace.is_none_or(|n| k.namespace == n))
    }

    fn record(&mut self, kind: EventType, key: Key, object: &Value, prev: Option<Value>) {
        self.history.push_back(Event { rv: self.rv, key, kind, object: object.clone(), prev });
        if self.history.len() > MAX_HISTORY {
            let oldest = self.history.pop_front().expect("history is non-empty");
            self.floor = oldest.rv;
        }
    }

    /// Writes `obj` (new or replacing the object at its key) at the next revision.
    pub fn put(&mut self, mut obj: Value) -> Value {
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let key = Key::of(&obj);
        let prev = self.objects.insert(key.clone(), obj.clone());
        let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
        self.record(kind, key, &obj, prev);
        obj
    }

    /// Deletes the object at `key` at the next revision; returns it as it was.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let last = self.objects.remove(key)?;
        self.rv += 1;
        let mut tombstone = last.clone();
        set_rv(&mut tombstone, self.rv);
        self.record(EventType::Deleted, key.clone(), &tombstone, Some(last.clone()));
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

    /// The objects whose keys `within` accepts as they were at revision `rv`,
    /// rebuilt by undoing later events.
    pub fn snapshot_at(&self, rv: u64, within: impl Fn(&Key) -> bool) -> Result<BTreeMap<Key, Value>, Compacted> {
        if rv < self.floor {
            return Err(Compacted(self.floor));
        }
        let mut objects: BTreeMap<Key, Value> =
            self.objects.iter().filter(|(k, _)| within(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        for e in self.history.iter().rev().take_while(|e| e.rv > rv).filter(|e| within(&e.key)) {
            match &e.prev {
                Some(p) => objects.insert(e.key.clone(), p.clone()),
                None => objects.remove(&e.key),
            };
        }
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, v: u32) -> Value {
        json!({"kind": "Node", "metadata": {"name": name}, "v": v})
    }

    fn key(kind: &str, namespace: &str, name: &str) -> Key {
        Key { kind: kind.into(), namespace: namespace.into(), name: name.into() }
    }

    #[test]
    fn revisions_events_and_snapshots() {
        let mut s = Store::default();
        let a = s.put(node("a", 1));
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        s.put(node("b", 1));
        let at3 = s.rv();
        s.put(node("a", 2));
        let gone = s.remove(&key("Node", "", "b")).unwrap();
        assert_eq!(gone["metadata"]["resourceVersion"], "3", "the deleted object as it was");
        let kinds: Vec<_> = s.events_after(2).unwrap().map(|e| (e.rv, e.kind)).collect();
        assert_eq!(kinds, [(3, EventType::Added), (4, EventType::Modified), (5, EventType::Deleted)]);
        let deleted = s.events_after(4).unwrap().next().unwrap();
        assert_eq!(deleted.object["metadata"]["resourceVersion"], "5", "tombstones carry the deletion revision");
        let then = s.snapshot_at(at3, |_| true).unwrap();
        let v = |k: &Key| then[k]["v"].as_u64();
        assert_eq!((v(&key("Node", "", "a")), v(&key("Node", "", "b"))), (Some(1), Some(1)));
        assert!(s.snapshot_at(1, |_| true).unwrap().is_empty());
        s.compact();
        assert_eq!(s.events_after(4).err(), Some(Compacted(5)));
        assert_eq!(s.events_after(5).unwrap().count(), 0, "watching from now is fine");
        assert_eq!(s.snapshot_at(5, |_| true).unwrap().len(), 1);
    }

    #[test]
    fn kinds_share_one_revision_and_ranges_split_them() {
        let mut s = Store::default();
        let event = |ns: &str, name: &str| json!({"kind": "Event", "metadata": {"namespace": ns, "name": name}});
        s.put(event("kube-system", "x"));
        s.put(node("a", 1));
        s.put(event("default", "y"));
        s.put(event("default", "z"));
        assert_eq!(s.rv(), 5, "one revision for every kind");
        let names = |kind, ns| s.range(kind, ns).map(|(k, _)| k.name.clone()).collect::<Vec<_>>();
        assert_eq!(names("Event", None), ["y", "z", "x"], "namespace, then name");
        assert_eq!(names("Event", Some("default")), ["y", "z"]);
        assert_eq!(names("Event", Some("kube-public")), Vec::<String>::new());
        assert_eq!(names("Node", None), ["a"]);
        s.remove(&key("Event", "default", "y"));
        let before = s.snapshot_at(4, |k| k.kind == "Event" && k.namespace == "default").unwrap();
        assert_eq!(before.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["y"]);
    }
}
