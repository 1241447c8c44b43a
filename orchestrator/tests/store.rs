//! The inventory and the event log survive reopening the store.

use zz_orchestrator::backend::Handle;
use zz_orchestrator::model::{Event, Incident, ReplicaRecord, ReplicaState, Role};
use zz_orchestrator::store::{Change, Store, MAX_EVENTS};
use zz_wire::{AppId, IncidentKind, ReplicaId};

fn record(index: u16, state: ReplicaState) -> ReplicaRecord {
    ReplicaRecord {
        id: ReplicaId { app: AppId(0), index },
        name: format!("kv-e{index}"),
        app_name: "kv".into(),
        state,
        generation: 3,
        role: Role::Active,
        handle: Some(Handle {
            name: format!("kv-e{index}"),
            generation: 3,
            token: "123:456".into(),
        }),
        host: "localhost".into(),
        backend: "process".into(),
        last_executed: 77,
        last_checkpoint: 64,
        fetched_objects: 5,
        stale_objects: 1,
        last_heartbeat_ms: Some(1000),
        since_ms: 900,
        cold: false,
        sync_progress_ms: 950,
        key: None,
        retired_keys: Vec::new(),
    }
}

fn event(seq: u64) -> Event {
    Event {
        seq,
        at_ms: 1000 + seq,
        replica: Some("kv-e0".into()),
        app: Some("kv".into()),
        kind: "paused".into(),
        detail: format!("event {seq}"),
    }
}

#[test]
fn inventory_events_and_incidents_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.redb");
    let incident = Incident {
        id: 7,
        app: AppId(0),
        seq: 10,
        last_seq: 12,
        kind: IncidentKind::Timeout,
        detected_at: 100,
        woken: Some(110),
        certified_at: Some(180),
        faulty: vec![ReplicaId {
            app: AppId(0),
            index: 1,
        }],
        replaced: vec![],
        coalesced: 2,
        kinds: vec![IncidentKind::Timeout, IncidentKind::Mismatch],
        answer_from: Some(12),
        last_joined_at: 150,
    };
    {
        let s = Store::open(&path).unwrap();
        s.apply(&[
            Change::Replica(record(0, ReplicaState::Active)),
            Change::Replica(record(2, ReplicaState::Paused)),
            Change::Event(event(1)),
            Change::Event(event(2)),
            Change::Incident(incident.clone()),
            Change::Nonce("kv-e1".into(), 41),
        ])
        .unwrap();
        // A later write replaces the record.
        s.apply(&[Change::Replica(record(2, ReplicaState::Hibernated))])
            .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.replicas.len(), 2);
    assert_eq!(snap.replicas["kv-e0"], record(0, ReplicaState::Active));
    assert_eq!(snap.replicas["kv-e2"].state, ReplicaState::Hibernated);
    assert_eq!(snap.events, vec![event(1), event(2)]);
    assert_eq!(snap.incidents, vec![incident]);
    assert_eq!(snap.nonces["kv-e1"], 41);
}

#[test]
fn the_event_log_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("o.redb")).unwrap();
    let total = MAX_EVENTS + 25;
    let batch: Vec<Change> = (1..=total).map(|i| Change::Event(event(i))).collect();
    for chunk in batch.chunks(1000) {
        s.apply(chunk).unwrap();
    }
    let events = s.load().unwrap().events;
    assert_eq!(events.len() as u64, MAX_EVENTS);
    assert_eq!(events.first().unwrap().seq, total - MAX_EVENTS + 1);
    assert_eq!(events.last().unwrap().seq, total);
}

#[test]
fn records_written_before_the_cold_flag_still_load() {
    let mut v = serde_json::to_value(record(2, ReplicaState::Hibernated)).unwrap();
    v.as_object_mut().unwrap().remove("cold");
    let r: ReplicaRecord = serde_json::from_value(v).unwrap();
    assert!(!r.cold);
    let mut cold = record(2, ReplicaState::Hibernated);
    cold.cold = true;
    let back: ReplicaRecord = serde_json::from_slice(&serde_json::to_vec(&cold).unwrap()).unwrap();
    assert!(back.cold);
}

#[test]
fn a_syncing_replica_is_idle_only_since_its_last_progress() {
    let mut r = record(0, ReplicaState::Provisioning);
    assert_eq!(r.idle_ms(10_000), 10_000 - 950, "from its last progress");
    r.sync_progress_ms = 0;
    assert_eq!(r.idle_ms(10_000), 10_000 - 900, "from entering its state");
}

#[test]
fn incidents_written_before_coalescing_still_load() {
    let incident = Incident {
        id: 3,
        app: AppId(0),
        seq: 10,
        last_seq: 10,
        kind: IncidentKind::Mismatch,
        detected_at: 100,
        woken: Some(101),
        certified_at: Some(150),
        faulty: vec![],
        replaced: vec![],
        coalesced: 4,
        kinds: vec![IncidentKind::Mismatch, IncidentKind::Timeout],
        answer_from: Some(10),
        last_joined_at: 140,
    };
    let mut v = serde_json::to_value(&incident).unwrap();
    for field in ["coalesced", "kinds", "answer_from", "last_joined_at"] {
        v.as_object_mut().unwrap().remove(field);
    }
    let old: Incident = serde_json::from_value(v).unwrap();
    assert_eq!((old.coalesced, old.answer_from, old.last_joined_at), (0, None, 0));
    // It reports the one kind it kept.
    assert_eq!(old.all_kinds(), vec![IncidentKind::Mismatch]);
    assert_eq!(old.recovery_ms(), Some(50));
}
