//! Aardvark's yardstick (issue 25): a primary that orders a batch just
//! under the view-change timeout keeps PBFT's timer quiet for ever; the
//! throughput monitor replaces it.

use super::*;

/// Backup 1 with room for many seqs and no checkpoints in the way.
fn backup() -> Core {
    let cfg = Config {
        timing: Timing {
            log_window: 4096,
            ..timing()
        },
        checkpoint_interval: 1 << 20,
        ..config(1)
    };
    let mut c = Core::new(cfg, node_id(1));
    c.start(T0);
    c
}

/// The primary (node 0) gets `ids` committed at `seq` at time `now`.
fn commit_now(c: &mut Core, now: u64, seq: Seq, ids: &[u64]) -> Vec<Action> {
    let p = proposal(ids, now);
    let d = p.digest();
    let mut acts = c.step(now, Input::Peer(Msg::PrePrepare(pp(0, 0, seq, p))));
    acts.extend(c.step(now, Input::Peer(prepare(2, 0, seq, d))));
    acts.extend(c.step(now, Input::Peer(commit(0, 0, seq, d))));
    acts.extend(c.step(now, Input::Peer(commit(2, 0, seq, d))));
    acts
}

/// The backup's periodic timers up to `now` (every T/4, as the driver
/// fires them); the view changes it broadcast.
fn tick(c: &mut Core, now: u64) -> usize {
    let mut acts = c.step(now, Input::Timer(TimerId::Retransmit));
    acts.extend(c.step(now, Input::Timer(TimerId::ViewChange(0))));
    broadcasts(&acts)
        .iter()
        .filter(|m| matches!(m, Msg::ViewChange(_)))
        .count()
}

const PERIOD: u64 = 100; // timing().view_change_timeout_ms

/// Four periods at 20 requests each: the throughput the primary showed.
fn fast_start(c: &mut Core) -> (u64, Seq, u64) {
    let (mut now, mut seq, mut id) = (T0, 1, 1000);
    for _ in 0..4 {
        for q in 0..4 {
            now += PERIOD / 4;
            if q == 0 {
                let ids: Vec<u64> = (id..id + 20).collect();
                id += 20;
                assert_eq!(delivered(&commit_now(c, now, seq, &ids)), vec![seq]);
                seq += 1;
            }
            assert_eq!(tick(c, now), 0, "a fast primary is not suspected");
        }
    }
    (now, seq, id)
}

/// `periods` periods in which a client re-sends each request to the
/// backup (it is late) and the primary orders it `delay` ms later, one
/// request per `per` ms; the number of view changes the backup sent.
fn slow_phase(c: &mut Core, start: (u64, Seq, u64), periods: u64, per: u64, delay: u64) -> usize {
    let (mut now, mut seq, mut id) = start;
    let end = now + periods * PERIOD;
    let mut sent = 0;
    let mut next_tick = now + PERIOD / 4;
    while now < end && sent == 0 {
        c.step(now, Input::Request(req(id)));
        let ordered_at = now + delay;
        while next_tick <= ordered_at {
            sent += tick(c, next_tick);
            next_tick += PERIOD / 4;
        }
        if sent > 0 {
            break;
        }
        now = ordered_at;
        commit_now(c, now, seq, &[id]);
        seq += 1;
        id += 1;
        now = (now + per - delay).max(now);
    }
    sent
}

#[test]
fn a_primary_ordering_just_under_the_timeout_is_replaced_by_the_throughput_monitor() {
    let mut b = backup();
    let start = fast_start(&mut b);
    // One request every 90 ms, each ordered 90 ms after a client re-sent
    // it to the backup: always under the 100 ms view-change timeout.
    let sent = slow_phase(&mut b, start, 40, 90, 90);
    assert!(sent > 0, "the slow primary kept its view for 40 periods");
    assert_eq!(b.stats().slow_primary_suspected, 1);
    assert_eq!(b.view(), 1);
}

#[test]
fn a_primary_keeping_its_throughput_is_not_suspected() {
    let mut b = backup();
    let (mut now, mut seq, mut id) = fast_start(&mut b);
    for _ in 0..40 {
        for q in 0..4 {
            now += PERIOD / 4;
            if q == 0 {
                // Late requests reach the backup, and are served at the old rate.
                let ids: Vec<u64> = (id..id + 20).collect();
                for i in &ids {
                    b.step(now, Input::Request(req(*i)));
                }
                commit_now(&mut b, now + 5, seq, &ids);
                id += 20;
                seq += 1;
            }
            assert_eq!(tick(&mut b, now + 5), 0, "a primary keeping up is not suspected");
        }
    }
    assert_eq!(b.stats().slow_primary_suspected, 0);
}

#[test]
fn without_waiting_requests_a_quiet_primary_is_not_suspected() {
    let mut b = backup();
    let (mut now, mut seq, mut id) = fast_start(&mut b);
    // The load went away: a request now and then, none of them late.
    for _ in 0..40 {
        now += PERIOD;
        commit_now(&mut b, now, seq, &[id]);
        seq += 1;
        id += 1;
        assert_eq!(tick(&mut b, now), 0, "an idle primary is not suspected");
    }
    assert_eq!(b.stats().slow_primary_suspected, 0);
}
