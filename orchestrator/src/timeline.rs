//! The story of a fault episode read from the event log: markers on the
//! live charts' time axis (fault injected, incident opened, standby woken,
//! first certified answer, fenced, replaced) and one incident's phases
//! (detected → woken → resumed → fetched → certified → fenced → replaced).
//! Pure functions of the events and incidents the controller already keeps.

use crate::model::{Event, IncidentView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why a standby is woken or activated for incident `id` (the detail of
/// its `woken` or `active` event): how the timeline knows which replicas
/// an incident woke.
pub(crate) fn wake_reason(incident: u64) -> String {
    format!("incident {incident}")
}

pub(crate) fn activate_reason(incident: u64) -> String {
    format!("ready while incident {incident} is open")
}

/// Whether a state change's detail (`"paused -> waking: {why}"`, or just
/// `why` when the state stays) gives `why` as its reason.
fn gives_reason(detail: &str, why: &str) -> bool {
    detail == why || detail.strip_suffix(why).is_some_and(|head| head.ends_with(": "))
}

/// The detail of a `fetched` event.
pub(crate) fn fetched_detail(fetched: u64, stale: u64) -> String {
    format!("{fetched} objects fetched from peers, {stale} still stale")
}

fn parse_fetched(detail: &str) -> Option<u64> {
    detail.split(" objects fetched").next()?.parse().ok()
}

/// A fault injected up to this long before detection belongs to the
/// incident's timeline.
const FAULT_LOOKBACK_MS: u64 = 60_000;

/// One marker on a chart's time axis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Marker {
    pub at_ms: u64,
    /// `fault`, `incident`, `woken`, `certified`, `fenced` or `replaced`.
    pub kind: String,
    pub replica: Option<String>,
    /// The event's detail.
    pub detail: String,
    /// The event it comes from (`/v1/events`).
    pub event: u64,
}

fn replica_app(dep_apps: &[String], replica: &str) -> Option<String> {
    // Replica names are `<app>-e<index>`; app names may hold dashes.
    let (app, idx) = replica.rsplit_once("-e")?;
    (idx.chars().all(|c| c.is_ascii_digit()) && dep_apps.iter().any(|a| a == app)).then(|| app.to_string())
}

/// The app an event is about: its own, its replica's, or none (an
/// agreement node's: it concerns every app).
fn event_app(dep_apps: &[String], e: &Event) -> Option<String> {
    e.app
        .clone()
        .or_else(|| e.replica.as_deref().and_then(|r| replica_app(dep_apps, r)))
}

/// Markers of `app` among `events` (oldest first): what a person watching
/// the chart wants to see. A replica's replacement is marked when the new
/// instance is ready (paused as the standby, or activated).
pub fn markers(dep_apps: &[String], app: &str, events: &[Event]) -> Vec<Marker> {
    let mut fenced: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for e in events {
        let ev_app = event_app(dep_apps, e);
        let for_app = ev_app.as_deref().is_none_or(|a| a == app);
        if !for_app {
            continue;
        }
        let kind = match e.kind.as_str() {
            "fault-injected" => Some("fault"),
            "incident-opened" => Some("incident"),
            "woken" if ev_app.is_some() => Some("woken"),
            "incident-certified" => Some("certified"),
            "fenced" if ev_app.is_some() => {
                if let Some(r) = &e.replica {
                    fenced.push(r.clone());
                }
                Some("fenced")
            }
            "paused" | "active" => match &e.replica {
                Some(r) if fenced.contains(r) => {
                    fenced.retain(|x| x != r);
                    Some("replaced")
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(Marker {
                at_ms: e.at_ms,
                kind: kind.to_string(),
                replica: e.replica.clone(),
                detail: e.detail.clone(),
                event: e.seq,
            });
        }
    }
    out
}

/// One phase of an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Phase {
    /// `fault-injected`, `detected`, `woken`, `resumed`, `fetched`,
    /// `certified`, `fenced` or `replaced`; phases are in the order they
    /// happened.
    pub phase: String,
    pub at_ms: u64,
    /// From detection (negative for the injected fault before it).
    pub since_detected_ms: i64,
    /// From the phase before it.
    pub since_previous_ms: i64,
    /// The replicas (or the agreement node) the phase involved.
    pub replicas: Vec<String>,
}

/// `GET /v1/incidents/{id}/timeline`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncidentTimeline {
    pub id: u64,
    pub app: String,
    /// Phases reached, in order; one the event log no longer holds (or
    /// that did not happen, such as fencing after a view change) is absent.
    pub phases: Vec<Phase>,
    /// Standbys woken or activated for it.
    pub woken: Vec<String>,
    /// Objects the woken replicas fetched from peers while catching up.
    pub fetched_objects: u64,
    pub faulty: Vec<String>,
    pub replaced: Vec<String>,
    pub recovery_ms: Option<u64>,
}

fn signed_diff(a: u64, b: u64) -> i64 {
    i64::try_from(i128::from(a) - i128::from(b)).unwrap_or(0)
}

/// The phases of incident `i` from the event log (oldest first).
pub fn incident_timeline(dep_apps: &[String], i: &IncidentView, events: &[Event]) -> IncidentTimeline {
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| event_app(dep_apps, e).is_none_or(|a| a == i.app))
        .collect();
    let mut raw: Vec<(&str, u64, Vec<String>)> = Vec::new();

    // The last fault injected into one of the app's replicas before
    // detection, or else into an agreement node.
    let injected = |replica: bool| {
        mine.iter().rev().find(|e| {
            e.kind == "fault-injected"
                && e.replica.is_some() == replica
                && e.at_ms <= i.detected_at
                && i.detected_at - e.at_ms <= FAULT_LOOKBACK_MS
        })
    };
    if let Some(e) = injected(true).or_else(|| injected(false)) {
        // A node's name is in the detail: "fault 3: mute on a3".
        let who = e.replica.clone().or_else(|| {
            e.detail
                .split(" on ")
                .nth(1)
                .and_then(|w| w.split_whitespace().next())
                .map(String::from)
        });
        raw.push(("fault-injected", e.at_ms, who.into_iter().collect()));
    }
    raw.push(("detected", i.detected_at, Vec::new()));

    let (wake, activate) = (wake_reason(i.id), activate_reason(i.id));
    let woken_events: Vec<&&Event> = mine
        .iter()
        .filter(|e| {
            (e.kind == "woken" && gives_reason(&e.detail, &wake))
                || (e.kind == "active" && gives_reason(&e.detail, &activate))
        })
        .collect();
    let mut woken: Vec<String> = Vec::new();
    for e in &woken_events {
        if let Some(r) = &e.replica {
            if !woken.contains(r) {
                woken.push(r.clone());
            }
        }
    }
    if let Some(at) = i.woken.or_else(|| woken_events.first().map(|e| e.at_ms)) {
        raw.push(("woken", at, woken.clone()));
        // Resumed: each woken replica's first report as active after it
        // was woken (an activated replacement is active at once).
        let mut resumed_at = None;
        let mut resumed = Vec::new();
        for w in &woken_events {
            let first = mine
                .iter()
                .find(|e| e.kind == "active" && e.replica == w.replica && e.at_ms >= w.at_ms && e.seq >= w.seq);
            if let (Some(e), Some(r)) = (first, &w.replica) {
                resumed_at = Some(resumed_at.map_or(e.at_ms, |t: u64| t.min(e.at_ms)));
                if !resumed.contains(r) {
                    resumed.push(r.clone());
                }
            }
        }
        if let Some(t) = resumed_at {
            raw.push(("resumed", t, resumed));
        }
        // The agent reports catch-up fetches in its heartbeats for 10 s
        // after it joins (see the pool).
        let fetches: Vec<&&Event> = mine
            .iter()
            .filter(|e| {
                e.kind == "fetched"
                    && e.at_ms >= at
                    && e.at_ms <= at + 10_000
                    && e.replica.as_ref().is_some_and(|r| woken.contains(r))
            })
            .collect();
        if let Some(first) = fetches.first() {
            let mut who: Vec<String> = fetches.iter().filter_map(|e| e.replica.clone()).collect();
            who.dedup();
            raw.push(("fetched", first.at_ms, who));
        }
    }
    let fetched_objects: u64 = mine
        .iter()
        .filter(|e| {
            e.kind == "fetched"
                && i.woken.is_some_and(|w| e.at_ms >= w && e.at_ms <= w + 10_000)
                && e.replica.as_ref().is_some_and(|r| woken.contains(r))
        })
        .filter_map(|e| parse_fetched(&e.detail))
        .sum();
    if let Some(c) = i.certified_at {
        raw.push(("certified", c, Vec::new()));
    }
    let fenced: Vec<&&Event> = mine
        .iter()
        .filter(|e| {
            e.kind == "fenced" && e.at_ms >= i.detected_at && e.replica.as_ref().is_some_and(|r| i.faulty.contains(r))
        })
        .collect();
    if let Some(first) = fenced.first() {
        let who: Vec<String> = fenced.iter().filter_map(|e| e.replica.clone()).collect();
        raw.push(("fenced", first.at_ms, who));
        let mut replaced_at = None;
        for f in &fenced {
            let ready = mine
                .iter()
                .find(|e| matches!(e.kind.as_str(), "paused" | "active") && e.replica == f.replica && e.seq > f.seq);
            if let Some(e) = ready {
                replaced_at = Some(replaced_at.map_or(e.at_ms, |t: u64| t.max(e.at_ms)));
            }
        }
        if let Some(t) = replaced_at {
            raw.push(("replaced", t, i.replaced.clone()));
        }
    }
    // On one axis: in the order they happened (a woken replica may report
    // its first fetches before the heartbeat that shows it active).
    raw.sort_by_key(|(_, at, _)| *at);
    let mut phases = Vec::with_capacity(raw.len());
    let mut prev = None;
    for (phase, at, replicas) in raw {
        phases.push(Phase {
            phase: phase.to_string(),
            at_ms: at,
            since_detected_ms: signed_diff(at, i.detected_at),
            since_previous_ms: prev.map_or(0, |p| signed_diff(at, p)),
            replicas,
        });
        prev = Some(at);
    }
    IncidentTimeline {
        id: i.id,
        app: i.app.clone(),
        phases,
        woken,
        fetched_objects,
        faulty: i.faulty.clone(),
        replaced: i.replaced.clone(),
        recovery_ms: i.recovery_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Vec<String> {
        vec!["kv".into(), "bank".into(), "my-app".into()]
    }

    struct Log(Vec<Event>);

    impl Log {
        fn ev(&mut self, at: u64, kind: &str, replica: Option<&str>, app: Option<&str>, detail: &str) -> &mut Self {
            let seq = self.0.len() as u64 + 1;
            self.0.push(Event {
                seq,
                at_ms: at,
                replica: replica.map(String::from),
                app: app.or(replica.and_then(|r| r.split("-e").next())).map(String::from),
                kind: kind.into(),
                detail: detail.into(),
            });
            self
        }
    }

    /// The story of a `corrupt-reply` in kv-e1 as the controller logs it,
    /// with bank's events and a node fault mixed in.
    fn episode() -> (Log, IncidentView) {
        let mut l = Log(Vec::new());
        l.ev(1_000, "fault-injected", Some("kv-e1"), None, "corrupt-reply (fault 1)")
            .ev(1_100, "fault-injected", Some("bank-e0"), None, "slow (fault 2)")
            .ev(1_200, "fault-injected", None, None, "fault 3: mute on a3")
            .ev(
                1_500,
                "incident-opened",
                None,
                Some("kv"),
                "incident 7: mismatch at seq 40",
            )
            .ev(
                1_502,
                "woken",
                Some("kv-e2"),
                None,
                &format!("paused -> waking: {}", wake_reason(7)),
            )
            .ev(
                1_503,
                "woken",
                Some("bank-e2"),
                None,
                &format!("paused -> waking: {}", wake_reason(6)),
            )
            .ev(1_504, "woken", Some("kv-e0"), None, "paused -> waking: incident 17")
            .ev(1_520, "fetched", Some("kv-e2"), None, &fetched_detail(12, 3))
            .ev(1_530, "active", Some("kv-e2"), None, "heartbeat after wake")
            .ev(
                1_540,
                "incident-certified",
                None,
                Some("kv"),
                "incident 7 certified after 40 ms",
            )
            .ev(
                1_560,
                "faulty",
                Some("kv-e1"),
                None,
                "f+1 FAULT certificate (incident 7)",
            )
            .ev(1_561, "fenced", Some("kv-e1"), None, "generation 0 destroyed")
            .ev(
                1_562,
                "provisioning",
                Some("kv-e1"),
                None,
                "faulty -> provisioning: generation 1 (replacement)",
            )
            .ev(2_020, "fetched", Some("kv-e2"), None, &fetched_detail(3, 0))
            .ev(2_400, "paused", Some("kv-e1"), None, "standby ready")
            .ev(70_000, "fetched", Some("kv-e2"), None, &fetched_detail(99, 0));
        let i = IncidentView {
            id: 7,
            app: "kv".into(),
            seq: 40,
            last_seq: 40,
            kind: "mismatch".into(),
            detected_at: 1_500,
            woken: Some(1_502),
            certified_at: Some(1_540),
            faulty: vec!["kv-e1".into()],
            replaced: vec!["kv-e1".into()],
            recovery_ms: Some(40),
            coalesced: 0,
            kinds: vec!["mismatch".into()],
        };
        (l, i)
    }

    #[test]
    fn reasons_are_read_from_state_change_details() {
        assert!(gives_reason("paused -> waking: incident 7", &wake_reason(7)));
        assert!(gives_reason("incident 7", &wake_reason(7)));
        assert!(!gives_reason("paused -> waking: incident 17", &wake_reason(7)));
        assert!(gives_reason(
            "provisioning -> active: ready while incident 3 is open",
            &activate_reason(3)
        ));
    }

    #[test]
    fn fetched_details_parse_back() {
        assert_eq!(parse_fetched(&fetched_detail(4711, 2)), Some(4711));
        assert_eq!(parse_fetched("objects fetched"), None);
    }

    #[test]
    fn markers_of_an_app_follow_the_episode_and_skip_other_apps() {
        let (l, _) = episode();
        let m = markers(&apps(), "kv", &l.0);
        let got: Vec<(&str, u64)> = m.iter().map(|m| (m.kind.as_str(), m.at_ms)).collect();
        assert_eq!(
            got,
            vec![
                ("fault", 1_000),
                ("fault", 1_200), // a node's fault concerns every app
                ("incident", 1_500),
                ("woken", 1_502),
                ("woken", 1_504),
                ("certified", 1_540),
                ("fenced", 1_561),
                ("replaced", 2_400),
            ]
        );
        let bank: Vec<String> = markers(&apps(), "bank", &l.0).into_iter().map(|m| m.kind).collect();
        assert_eq!(bank, vec!["fault", "fault", "woken"]);
    }

    #[test]
    fn replica_names_map_to_apps_with_dashes() {
        assert_eq!(replica_app(&apps(), "my-app-e12").as_deref(), Some("my-app"));
        assert_eq!(replica_app(&apps(), "kv-ex"), None);
        assert_eq!(replica_app(&apps(), "other-e1"), None);
    }

    #[test]
    fn an_incident_timeline_has_its_phases_in_order_with_durations() {
        let (l, i) = episode();
        let t = incident_timeline(&apps(), &i, &l.0);
        let got: Vec<(&str, i64, i64)> = t
            .phases
            .iter()
            .map(|p| (p.phase.as_str(), p.since_detected_ms, p.since_previous_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                ("fault-injected", -500, 0),
                ("detected", 0, 500),
                ("woken", 2, 2),
                ("fetched", 20, 18),
                ("resumed", 30, 10),
                ("certified", 40, 10),
                ("fenced", 61, 21),
                ("replaced", 900, 839),
            ]
        );
        assert_eq!(t.woken, vec!["kv-e2".to_string()]);
        // 12 + 3 within 10 s of the wake; the later background fetch is not
        // this incident's catch-up.
        assert_eq!(t.fetched_objects, 15);
        assert_eq!(t.phases[0].replicas, vec!["kv-e1".to_string()]);
        assert_eq!(t.phases[6].replicas, vec!["kv-e1".to_string()]);
        assert_eq!(t.recovery_ms, Some(40));
    }

    #[test]
    fn an_open_incident_stops_at_the_phases_reached() {
        let (mut l, mut i) = episode();
        l.0.truncate(9); // up to kv-e2 active
        i.certified_at = None;
        i.recovery_ms = None;
        i.replaced.clear();
        let t = incident_timeline(&apps(), &i, &l.0);
        let got: Vec<&str> = t.phases.iter().map(|p| p.phase.as_str()).collect();
        assert_eq!(got, vec!["fault-injected", "detected", "woken", "fetched", "resumed"]);
    }
}
