//! `zz demo --scenario wasm-app`: a tenant's app, start to upgrade. The
//! guestbook example (a Wasm component) is deployed at run time through the
//! admin API; clients sign it through the gateway; `corrupt-reply` is
//! injected into one of its active replicas and the standby is woken, fetches
//! what it needs and the liar is replaced; then the guestbook is upgraded to
//! version 2 with every entry kept.

use super::*;
use base64::Engine as _;
use std::collections::BTreeSet;

/// The components, built from `examples/` by `scripts/build-examples.sh`.
const GUESTBOOK: &[u8] = include_bytes!("../../../examples/guestbook/guestbook.wasm");
const GUESTBOOK_V2: &[u8] = include_bytes!("../../../examples/guestbook-v2/guestbook-v2.wasm");
const APP: &str = "guestbook";

fn component(bytes: &[u8]) -> Value {
    json!({ "name": APP, "component": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

/// Entries ids (newest first) as the guestbook lists them.
async fn entry_ids(http: &reqwest::Client, gw: &str) -> Option<Vec<u64>> {
    let r = http.get(format!("{gw}/{APP}/api/entries")).send().await.ok()?;
    if r.status().as_u16() != 200 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    Some(v.as_array()?.iter().filter_map(|e| e["id"].as_u64()).collect())
}

pub(super) async fn drive(
    s: &Scenario,
    a: &DemoArgs,
    seed: u64,
    running: &Info,
    n: &Arc<Narration>,
) -> anyhow::Result<()> {
    let f = s.f;
    let admin = running.admin()?;
    let gw = format!("http://{}", running.gateway_addr);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let start = Instant::now();
    wait_for(running.backend.ready_timeout(), || async {
        let r = admin.get("/v1/replicas").await.ok()?;
        ["kv", "bank"]
            .iter()
            .all(|app| count_state(&r, app, "active") == f + 1)
            .then_some(())
    })
    .await
    .context("the built-in apps did not start")?;
    say!(n, "[{:>6} ms] ready: kv and bank are up", start.elapsed().as_millis());

    // 1. Deploy the guestbook at run time.
    let t = Instant::now();
    let d = admin
        .post("/v1/apps", component(GUESTBOOK))
        .await
        .context("deploying")?;
    let slot = admin.get(&format!("/v1/apps/{APP}")).await?["slot"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    say!(
        n,
        "[{:>6} ms] deployed {APP} version {} (sha256 {}…) into {slot} in {} ms: POST /v1/apps → ordered install, certified by f+1 replicas",
        start.elapsed().as_millis(),
        d["version"],
        d["hash"].as_str().unwrap_or("").get(..12).unwrap_or(""),
        t.elapsed().as_millis()
    );
    let ready = wait_for(running.backend.ready_timeout(), || async {
        let r = admin.get("/v1/replicas").await.ok()?;
        (count_state(&r, &slot, "active") == f + 1 && count_state(&r, &slot, "paused") == f).then_some(r)
    })
    .await
    .context("the guestbook's replicas did not reach f+1 active + f paused")?;
    say!(
        n,
        "[{:>6} ms] {APP}: {}",
        start.elapsed().as_millis(),
        replica_states(&ready, &slot)
    );

    // 2. Load: each worker signs the guestbook and reads it back.
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..a.workers {
        let (http, gw, c, stop) = (http.clone(), gw.clone(), counters.clone(), stop.clone());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        workers.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                c.requests.fetch_add(1, Ordering::Relaxed);
                let ok = if rng.gen_bool(0.7) {
                    let message = format!("hello {k} from worker {w}");
                    let body = json!({"name": format!("w{w}"), "message": message});
                    match http.post(format!("{gw}/{APP}/api/entries")).json(&body).send().await {
                        // The certified entry must be the one sent.
                        Ok(r) if r.status().as_u16() == 201 => match r.json::<Value>().await {
                            Ok(e) => Some(e["message"] == message.as_str() && e["name"] == format!("w{w}")),
                            Err(_) => Some(false),
                        },
                        Ok(r) if r.status().is_server_error() => None,
                        Ok(_) => Some(false),
                        Err(_) => None,
                    }
                } else {
                    // Newest first, no id twice.
                    entry_ids(&http, &gw)
                        .await
                        .map(|ids| ids.windows(2).all(|p| p[0] > p[1]))
                };
                match ok {
                    Some(true) => c.answers.fetch_add(1, Ordering::Relaxed),
                    Some(false) => c.wrong.fetch_add(1, Ordering::Relaxed),
                    None => c.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let load_from_ms = zz_orchestrator::series::now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 3. One active replica of the guestbook starts lying.
    let r = admin.get("/v1/replicas").await?;
    let target = r
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["app"] == slot.as_str() && x["state"] == "active")
        .and_then(|x| x["id"].as_str())
        .context("no active guestbook replica")?
        .to_string();
    let mut since = admin
        .get("/v1/events?since=0")
        .await?
        .as_array()
        .map_or(0, |e| e.iter().filter_map(|x| x["seq"].as_u64()).max().unwrap_or(0));
    let t0 = Instant::now();
    let t0_ms = zz_orchestrator::series::now_ms();
    admin
        .post("/v1/faults", json!({"target": target, "kind": "corrupt-reply"}))
        .await?;
    say!(n, "[{:>6} ms] injected corrupt-reply into {target}", 0);

    // 4. Narrate until the liar is replaced and the app is back to f+1 active.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut fenced = BTreeSet::new();
    let healed = loop {
        let events = admin
            .get(&format!("/v1/events?since={since}"))
            .await
            .unwrap_or(Value::Null);
        for e in events.as_array().into_iter().flatten() {
            since = since.max(e["seq"].as_u64().unwrap_or(0));
            if e["app"] != slot.as_str() {
                continue;
            }
            if e["kind"] == "fenced" {
                fenced.insert(e["replica"].as_str().unwrap_or("").to_string());
            }
            let at = e["at_ms"].as_u64().map_or(0, |x| i128::from(x) - i128::from(t0_ms));
            say!(
                n,
                "[{:>6} ms] {:<22} {} {}",
                at,
                e["kind"].as_str().unwrap_or("?"),
                e["replica"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            );
        }
        if let Ok(r) = admin.get("/v1/replicas").await {
            if fenced.contains(&target)
                && count_state(&r, &slot, "active") == f + 1
                && count_state(&r, &slot, "paused") == f
            {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // 5. Upgrade to version 2 under load; the entries stay.
    let before = entry_ids(&http, &gw).await.unwrap_or_default();
    let t = Instant::now();
    let up = admin.put(&format!("/v1/apps/{APP}"), component(GUESTBOOK_V2)).await?;
    say!(
        n,
        "[{:>6} ms] upgraded {APP} to version {} in {} ms (an ordered install: every replica switches at the same seq)",
        t0.elapsed().as_millis(),
        up["version"],
        t.elapsed().as_millis()
    );
    let version: Value = http.get(format!("{gw}/{APP}/api/version")).send().await?.json().await?;
    let after = entry_ids(&http, &gw).await.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }

    // 6. Expectations.
    let mut problems = Vec::new();
    if !healed {
        problems.push(format!(
            "{target} was not replaced with {APP} back to f+1 active within 120 s"
        ));
    }
    let wrong = counters.wrong.load(Ordering::Relaxed);
    if wrong > 0 {
        problems.push(format!("{wrong} wrong answers reached clients"));
    }
    let answers = counters.answers.load(Ordering::Relaxed);
    if answers == 0 {
        problems.push("no request was answered".into());
    }
    if version["version"] != 2 || up["version"] != 2 {
        problems.push(format!("after the upgrade the app says {version} (install {up})"));
    }
    // Ids count on from the stored counter: an upgrade that lost the state
    // would start again at 1.
    let (newest_before, newest_after) = (
        before.first().copied().unwrap_or(0),
        after.first().copied().unwrap_or(0),
    );
    if newest_before == 0 || newest_after < newest_before {
        problems.push(format!(
            "entries lost in the upgrade: newest id {newest_before} before, {newest_after} after"
        ));
    }
    let incidents = admin.get("/v1/incidents").await?;
    for i in incidents
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["app"] == slot.as_str())
    {
        say!(
            n,
            "   incident {} seq {} kind {}: recovery {} ms, faulty {}, replaced {}",
            i["id"],
            i["seq"],
            i["kind"],
            i["recovery_ms"],
            i["faulty"],
            i["replaced"]
        );
    }
    say!(
        n,
        "   totals: requests {} answers {answers} errors {} wrong {wrong}; newest entry id {} before the upgrade, {} after",
        counters.requests.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        newest_before,
        newest_after
    );
    let window = Window {
        from_ms: load_from_ms,
        t0_ms,
        t0,
    };
    conclude(s, a, &admin, n, &[], &window, problems).await
}
