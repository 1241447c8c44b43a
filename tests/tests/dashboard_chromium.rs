//! The dashboard in a real browser: headless Chromium, driven through
//! chromedriver's W3C WebDriver HTTP API, opens the page `zz up` serves,
//! injects `hang` into kv-e1 with the page's own button while the
//! gateway carries traffic, sees the incident appear, waits until kv's live
//! chart shows the episode's markers (fault → incident → woken → certified
//! → fenced → replaced), the dip (a second between the fault and the
//! recovery worse than the level before it) and answers again after them,
//! checks that the
//! chart's newest second shows what `/metrics` exports for it, opens the
//! incident's timeline, and keeps a screenshot
//! (`$CARGO_TARGET_TMPDIR/dashboard-chromium.png`, printed).
//!
//! Needs `/usr/bin/chromedriver` and `/usr/bin/chromium`
//! (`scripts/install-browser.sh`). Without them the test is skipped, unless
//! `CI` is set or `ZZ_REQUIRE_BROWSER=1`, where it fails.

mod support;

use base64::Engine as _;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::ZzUp;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C name of the key that holds an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const KV_E1_STATE: &str = r#"tr[data-replica="kv-e1"] .state"#;
/// The fault the page's button injects: kv-e1 stops answering, so requests
/// wait out the voters' reply timeout before the standby is woken — a dip
/// that shows on any machine (a lie is outvoted in ~20 ms, too fast to see).
const FAULT: &str = "hang";
const KV_E1_FAULT: &str = r#"tr[data-replica="kv-e1"] button.fault[data-kind="hang"]"#;
const INCIDENT_ROW: &str = "#incident-table tr.incident";
/// An incident needs traffic, detection, f+1 WAKEs and a render.
const INCIDENT_LIMIT: Duration = Duration::from_secs(60);

/// Headless Chromium behind chromedriver. Dropping it kills chromedriver's
/// process group and every process that names this browser profile.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Result<Browser, String> {
        let profile = tempfile::Builder::new()
            .prefix("zz-chromium-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).map_err(|e| e.to_string())?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawning {CHROMEDRIVER}: {e}"))?;
        let mut b = Browser {
            http: support::http(),
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            driver,
            profile,
        };
        let start = Instant::now();
        loop {
            let ready = b.http.get(format!("{}/status", b.base)).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(15) {
                return Err(format!("chromedriver not ready on port {port}:\n{}", b.driver_log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            "--window-size=1400,1000",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", b.profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        }}});
        let v = b
            .cmd(reqwest::Method::POST, "/session", Some(caps))
            .await
            .map_err(|e| format!("new session: {e}\n{}", b.driver_log()))?;
        let id = v["sessionId"].as_str().ok_or_else(|| format!("no sessionId in {v}"))?;
        println!(
            "chromium session {id} via chromedriver on port {port} ({})",
            v["capabilities"]["browserVersion"]
        );
        b.session = Some(id.to_string());
        Ok(b)
    }

    /// One WebDriver command: the `value` of the answer, or its error.
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| format!("{status}: {e}"))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("{status} {}: {}", v["value"]["error"], v["value"]["message"]))
        }
    }

    async fn session_cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let id = self.session.as_deref().ok_or("no session")?;
        self.cmd(method, &format!("/session/{id}{path}"), body).await
    }

    async fn goto(&self, url: &str) -> Result<(), String> {
        self.session_cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .session_cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        v[ELEMENT_KEY]
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("no element reference in {v}"))
    }

    async fn text(&self, element: &str) -> Result<String, String> {
        let v = self
            .session_cmd(reqwest::Method::GET, &format!("/element/{element}/text"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Runs `script` (a function body) in the page; what it returns.
    async fn exec(&self, script: &str) -> Result<Value, String> {
        self.session_cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Saves a screenshot of the page as PNG at `path`.
    async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let v = self.session_cmd(reqwest::Method::GET, "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    async fn find_text(&self, css: &str) -> Result<String, String> {
        let e = self.find(css).await?;
        self.text(&e).await
    }

    async fn type_into(&self, element: &str, text: &str) -> Result<(), String> {
        self.session_cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .map(drop)
    }

    async fn click(&self, element: &str) -> Result<(), String> {
        self.session_cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Saves a screenshot and the page source for a failure report; returns
    /// where they went.
    async fn save_evidence(&self) -> String {
        let dir = std::env::temp_dir().join(format!("zz-dashboard-failure-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return format!("(no evidence saved: {e})");
        }
        let mut saved = Vec::new();
        match self.session_cmd(reqwest::Method::GET, "/screenshot", None).await {
            Ok(v) => {
                let png = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or_default())
                    .map_err(|e| e.to_string())
                    .and_then(|png| std::fs::write(dir.join("screenshot.png"), png).map_err(|e| e.to_string()));
                match png {
                    Ok(()) => saved.push(dir.join("screenshot.png")),
                    Err(e) => eprintln!("screenshot not saved: {e}"),
                }
            }
            Err(e) => eprintln!("screenshot failed: {e}"),
        }
        if let Ok(v) = self.session_cmd(reqwest::Method::GET, "/source", None).await {
            if std::fs::write(dir.join("page.html"), v.as_str().unwrap_or_default()).is_ok() {
                saved.push(dir.join("page.html"));
            }
        }
        let list = saved
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        println!("dashboard evidence saved: {list}");
        list
    }

    fn driver_log(&self) -> String {
        support::tail(&self.profile.path().join("chromedriver.log"), 30)
    }

    /// Closes the browser through WebDriver (Drop then kills whatever is left).
    async fn quit(&mut self) {
        if self.session.is_some() {
            let _ = self.session_cmd(reqwest::Method::DELETE, "", None).await;
            self.session = None;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Collect the browser's processes before chromedriver dies and they
        // are reparented away from it.
        let profile = self.profile.path().to_string_lossy().into_owned();
        let driver = self.driver.id();
        let procs: Vec<support::Proc> = support::processes()
            .into_iter()
            .filter(|p| p.cmdline.contains(&profile) || p.has_ancestor(driver))
            .collect();
        if let Ok(pid) = i32::try_from(driver) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        support::kill_all(&procs);
    }
}

fn browser_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var("ZZ_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// Keeps PUTs going through the gateway until stopped; an incident is only
/// detected when replicas answer requests.
fn start_traffic(
    up: &ZzUp,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (http, base) = (support::http(), up.gateway_url("/kv/"));
    let (ok2, failed2) = (ok.clone(), failed.clone());
    let task = tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let r = http.put(format!("{base}t{i}")).body(format!("v{i}")).send().await;
            match r {
                Ok(r) if r.status() == reqwest::StatusCode::OK => ok2.fetch_add(1, Ordering::SeqCst),
                _ => failed2.fetch_add(1, Ordering::SeqCst),
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (task, ok, failed)
}

/// Polls `f` every 250 ms until it returns Ok or `limit` passes; the error
/// is the last one seen.
async fn poll<T, F, Fut>(limit: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match f().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() > limit {
            return Err(format!("after {limit:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_button_injects_a_fault_and_the_incident_appears() {
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        let why = format!("{CHROMEDRIVER} or {CHROMIUM} missing (run scripts/install-browser.sh)");
        assert!(
            !browser_required(),
            "{why}; a browser is required here (CI or ZZ_REQUIRE_BROWSER=1)"
        );
        println!("SKIPPED: {why}");
        return;
    }
    let mut up = ZzUp::start();
    let http = support::http();
    up.wait_ready(&http).await;
    let mut browser = match Browser::start().await {
        Ok(b) => b,
        Err(e) => up.fail(format!("starting headless chromium: {e}")),
    };
    let result = drive(&up, &browser, &http).await;
    if let Err(msg) = result {
        let evidence = browser.save_evidence().await;
        eprintln!("==== chromedriver log (tail)\n{}", browser.driver_log());
        // Let chromedriver close and reap the browser; killed from Drop
        // instead, its processes would be orphaned.
        browser.quit().await;
        up.fail(format!("{msg}\nscreenshot/page source: {evidence}"));
    }
    // An operator stops `zz up` with the dashboard still open: its event
    // stream must not hold the shutdown up.
    let status = up.interrupt(Duration::from_secs(30));
    if !status.success() {
        up.fail(format!(
            "zz up exited with {status} after SIGINT with the dashboard open"
        ));
    }
    browser.quit().await;
}

async fn drive(up: &ZzUp, browser: &Browser, http: &reqwest::Client) -> Result<(), String> {
    browser
        .goto(&up.admin_url("/"))
        .await
        .map_err(|e| format!("opening the dashboard: {e}"))?;
    // The page takes the token typed in, never from its URL.
    let input = browser.find("#token").await?;
    browser.type_into(&input, &up.token()).await?;
    let use_it = browser.find("#save-token").await?;
    browser.click(&use_it).await?;
    let state = poll(Duration::from_secs(30), || async {
        match browser.find_text(KV_E1_STATE).await? {
            s if s == "active" => Ok(s),
            s => Err(format!("kv-e1 shows {s:?}")),
        }
    })
    .await
    .map_err(|e| format!("the replicas table never showed kv-e1 active: {e}"))?;
    println!("dashboard shows kv-e1 {state}");
    let apps = poll(Duration::from_secs(10), || async {
        let v = browser
            .exec(r##"return Array.from(document.querySelectorAll("#apps-table tr.app")).map(r => r.dataset.app + ":" + r.dataset.kind);"##)
            .await?;
        let apps: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        match ["kv:builtin", "bank:builtin"].iter().find(|a| !apps.iter().any(|x| x == *a)) {
            None => Ok(apps),
            Some(a) => Err(format!("the apps table lacks {a}: {apps:?}")),
        }
    })
    .await
    .map_err(|e| format!("the dashboard's apps: {e}"))?;
    println!("dashboard lists apps {apps:?}");

    // Traffic first, so the chart has a level to dip from.
    let stop = Arc::new(AtomicBool::new(false));
    let (traffic, ok, failed) = start_traffic(up, stop.clone());
    let watched = watch_fault(up, browser, http).await;
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(15), traffic).await;
    println!(
        "traffic: {} PUTs certified, {} failed",
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    watched
}

/// What kv's chart shows: its markers, its points and its newest second.
const KV_CHART_JS: &str = r#"
const svg = document.querySelector('svg.chart[data-app="kv"]');
if (!svg) return null;
const d = svg.dataset;
return {
  markers: Array.from(svg.querySelectorAll("g.marker")).map(m => ({ kind: m.dataset.kind, at: Number(m.dataset.at), replica: m.dataset.replica })),
  points: Array.from(svg.querySelectorAll("rect.pt")).map(p => ({ t: Number(p.dataset.t), answers: Number(p.dataset.answers), errors: Number(p.dataset.errors), p99: p.dataset.p99 })),
  last: { t: Number(d.lastT), answers: Number(d.lastAnswers), errors: Number(d.lastErrors), p50: d.lastP50, p99: d.lastP99 },
};
"#;

/// The episode's markers.
const EPISODE: [&str; 6] = ["fault", "incident", "woken", "certified", "fenced", "replaced"];

async fn watch_fault(up: &ZzUp, browser: &Browser, http: &reqwest::Client) -> Result<(), String> {
    // A level to dip from: the first second of traffic is partial, so wait
    // for BASELINE_SECONDS whole ones after it.
    poll(Duration::from_secs(30), || async {
        let chart = browser.exec(KV_CHART_JS).await?;
        let answered = points(&chart).iter().filter(|p| p.answers > 0).count();
        (answered > BASELINE_SECONDS)
            .then_some(())
            .ok_or_else(|| format!("kv's chart shows {answered} seconds with answers: {}", chart["last"]))
    })
    .await
    .map_err(|e| format!("the live chart never showed the traffic: {e}"))?;

    // The table is re-rendered every second, so a found button can go stale
    // before the click lands: find and click again.
    poll(Duration::from_secs(10), || async {
        let b = browser.find(KV_E1_FAULT).await?;
        browser.click(&b).await
    })
    .await
    .map_err(|e| format!("clicking kv-e1's {FAULT} button: {e}"))?;
    let fault = poll(Duration::from_secs(10), || async {
        let r = http
            .get(up.admin_url("/v1/faults"))
            .bearer_auth(up.token())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let faults: Vec<Value> = r.json().await.map_err(|e| e.to_string())?;
        faults
            .into_iter()
            .find(|f| f["target"] == "kv-e1" && f["kind"] == FAULT)
            .ok_or_else(|| format!("no kv-e1 {FAULT} fault registered"))
    })
    .await;
    let fault = match fault {
        Ok(f) => f,
        Err(e) => {
            let msg = browser.find_text("#msg").await.unwrap_or_default();
            return Err(format!("the click injected nothing ({e}); page message: {msg:?}"));
        }
    };
    println!("fault injected through the page: {fault}");

    let start = Instant::now();
    let row = poll(INCIDENT_LIMIT, || async {
        match browser.find_text(INCIDENT_ROW).await {
            Ok(row) => Ok(row),
            // The header summary shows render errors ("admin API unreachable: ...").
            Err(e) => {
                let summary = browser.find_text("#summary").await.unwrap_or_default();
                Err(format!("no incident row ({e}); page summary: {summary:?}"))
            }
        }
    })
    .await
    .map_err(|e| format!("no incident on the dashboard: {e}"))?;
    println!("incident row after {:?}: {row}", start.elapsed());
    if !row.contains("kv") {
        return Err(format!("the incident row does not name the kv app: {row:?}"));
    }

    // The dip and the recovery: every marker of the episode, in order, and
    // answers again in a whole second after the first certified answer.
    let chart = poll(INCIDENT_LIMIT, || async {
        let chart = browser.exec(KV_CHART_JS).await?;
        let markers: Vec<(String, u64)> = chart["markers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["kind"].as_str().unwrap_or("").to_string(),
                    m["at"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let first = |kind: &str| markers.iter().find(|(k, _)| k == kind).map(|(_, at)| *at);
        let missing: Vec<&str> = EPISODE.iter().copied().filter(|k| first(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(format!("kv's chart lacks markers {missing:?}; has {markers:?}"));
        }
        // The answers may be certified before or after the liar is fenced.
        for (before, after) in [
            ("fault", "incident"),
            ("incident", "woken"),
            ("incident", "certified"),
            ("incident", "fenced"),
            ("fenced", "replaced"),
        ] {
            if first(before) > first(after) {
                return Err(format!("{before} is marked after {after}: {markers:?}"));
            }
        }
        let certified = first("certified").unwrap_or(u64::MAX);
        let pts = points(&chart);
        let recovered = pts.iter().any(|p| p.t > certified && p.answers > 0);
        if !recovered {
            return Err("no answers on the chart in a whole second after the certified marker yet".into());
        }
        let dip = find_dip(&pts, first("fault").unwrap_or(0), certified)?;
        Ok((chart, dip))
    })
    .await
    .map_err(|e| format!("the chart never showed the episode: {e}"))?;
    let (chart, dip) = chart;
    println!("kv chart dip: {dip}");
    let per_second: Vec<u64> = chart["points"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["answers"].as_u64().unwrap_or(0))
        .collect();
    println!(
        "kv chart: markers {}; answers per second {per_second:?}",
        chart["markers"]
    );

    // What the chart shows is what /metrics exports: the same second (the
    // two are read a moment apart, so retry until they name the same one).
    let agreed = poll(Duration::from_secs(20), || async {
        let chart = browser.exec(KV_CHART_JS).await?;
        let metrics = http
            .get(up.admin_url("/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        match compare_with_metrics(&chart["last"], &metrics) {
            Compared::Same(s) => Ok(Ok(s)),
            Compared::Differ(s) => Ok(Err(s)),
            Compared::Apart(s) => Err(s),
        }
    })
    .await
    .map_err(|e| format!("the chart and /metrics never showed the same second: {e}"))?
    .map_err(|e| format!("the chart disagrees with /metrics: {e}"))?;
    println!("chart and /metrics agree on {agreed}");

    // The incident's timeline, opened from its row.
    poll(Duration::from_secs(10), || async {
        let r = browser.find(INCIDENT_ROW).await?;
        browser.click(&r).await
    })
    .await
    .map_err(|e| format!("clicking the incident row: {e}"))?;
    let phases = poll(Duration::from_secs(20), || async {
        let v = browser
            .exec(r#"return Array.from(document.querySelectorAll("svg.incident-timeline g.phase")).map(g => g.dataset.phase);"#)
            .await?;
        let phases: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        let need = ["fault-injected", "detected", "woken", "certified", "fenced", "replaced"];
        match need.iter().find(|p| !phases.iter().any(|x| x == *p)) {
            None => Ok(phases),
            Some(p) => Err(format!("the timeline lacks {p}: {phases:?}")),
        }
    })
    .await
    .map_err(|e| format!("the incident timeline: {e}"))?;
    println!("incident timeline phases: {phases:?}");

    // The whole page in one picture: charts, tables and the timeline.
    let height = browser
        .exec("return document.documentElement.scrollHeight;")
        .await?
        .as_u64()
        .unwrap_or(1000)
        .clamp(1000, 4000);
    browser
        .session_cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 1400, "height": height + 140 })),
        )
        .await?;
    browser.exec("window.scrollTo(0, 0); return null;").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-chromium.png");
    browser.screenshot(&shot).await?;
    println!("dashboard screenshot: {}", shot.display());
    Ok(())
}

/// Whole seconds of traffic before the fault that set the level a dip is
/// measured against.
const BASELINE_SECONDS: usize = 3;

/// One second of kv's chart, as its SVG shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    t: u64,
    answers: u64,
    errors: u64,
    p99: Option<f64>,
}

fn points(chart: &Value) -> Vec<Point> {
    chart["points"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Point {
            t: p["t"].as_u64().unwrap_or(0),
            answers: p["answers"].as_u64().unwrap_or(0),
            errors: p["errors"].as_u64().unwrap_or(0),
            p99: p["p99"].as_str().and_then(|s| s.parse().ok()),
        })
        .collect()
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> Option<T> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

/// The dip: a second from the fault's to the one after the first certified
/// answer that is worse than the level before the fault (the median of the
/// whole seconds of traffic before it, its first partial second left out):
/// fewer answers, any error, or a p99 latency over twice the level's. The
/// client sends one request at a time, so the request that waits out the
/// incident shows in its second's latency and count. Err says why none is.
fn find_dip(pts: &[Point], fault_ms: u64, certified_ms: u64) -> Result<String, String> {
    let before: Vec<&Point> = pts
        .iter()
        .filter(|p| p.answers > 0 && p.t + 1000 <= fault_ms)
        .skip(1)
        .collect();
    if before.len() < BASELINE_SECONDS - 1 {
        return Err(format!(
            "only {} whole seconds of traffic before the fault: {pts:?}",
            before.len()
        ));
    }
    let answers = median(before.iter().map(|p| p.answers).collect()).unwrap_or(0);
    let p99 = median(before.iter().filter_map(|p| p.p99).collect());
    let episode = pts
        .iter()
        .filter(|p| p.t + 1000 > fault_ms && p.t <= certified_ms + 1000);
    for p in episode {
        let slow = matches!((p.p99, p99), (Some(now), Some(level)) if now > 2.0 * level);
        if p.answers < answers || p.errors > 0 || slow {
            return Ok(format!(
                "second {}: {} answers, {} errors, p99 {:?} ms against {answers} answers/s, p99 {p99:?} ms before the fault",
                p.t, p.answers, p.errors, p.p99
            ));
        }
    }
    Err(format!(
        "no second from the fault to the recovery is worse than the level before it ({answers} answers/s, p99 {p99:?} ms): {pts:?}"
    ))
}

#[test]
fn a_dip_is_a_worse_second_between_the_fault_and_the_recovery() {
    let pt = |t: u64, answers, errors, p99| Point {
        t: t * 1000,
        answers,
        errors,
        p99,
    };
    // Traffic from second 10 (partial), level 9/s at 8 ms; fault at 14.5 s,
    // certified at 15.2 s.
    let level = [
        pt(10, 3, 0, Some(8.0)),
        pt(11, 9, 0, Some(8.0)),
        pt(12, 9, 0, Some(7.0)),
        pt(13, 9, 0, Some(9.0)),
    ];
    let with = |episode: &[Point]| -> Vec<Point> { level.iter().chain(episode).copied().collect() };
    let fewer = with(&[
        pt(14, 9, 0, Some(8.0)),
        pt(15, 5, 0, Some(8.0)),
        pt(16, 9, 0, Some(8.0)),
    ]);
    assert!(find_dip(&fewer, 14_500, 15_200).is_ok());
    let slower = with(&[pt(14, 9, 0, Some(8.0)), pt(15, 9, 0, Some(400.0))]);
    assert!(find_dip(&slower, 14_500, 15_200).is_ok());
    let failed = with(&[pt(14, 9, 1, Some(8.0))]);
    assert!(find_dip(&failed, 14_500, 15_200).is_ok());
    // No worse second in the episode; a bad one long after does not count.
    let flat = with(&[
        pt(14, 9, 0, Some(8.0)),
        pt(15, 9, 0, Some(9.0)),
        pt(16, 9, 0, Some(8.0)),
        pt(20, 1, 0, None),
    ]);
    assert!(find_dip(&flat, 14_500, 15_200).is_err());
    // Too little traffic before the fault to tell.
    assert!(find_dip(&fewer[3..], 14_500, 15_200).is_err());
}

/// The value of `name{app="kv"}` in Prometheus text; NaN is `None`.
fn metric(text: &str, name: &str) -> Result<Option<f64>, String> {
    let prefix = format!("{name}{{app=\"kv\"}} ");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .ok_or_else(|| format!("/metrics has no {prefix:?}"))?;
    let v: f64 = line.trim().parse().map_err(|e| format!("{name}: {line:?}: {e}"))?;
    Ok((!v.is_nan()).then_some(v))
}

#[derive(Debug)]
enum Compared {
    /// The same second with the same figures.
    Same(String),
    /// The same second with other figures: a bug.
    Differ(String),
    /// Read a moment apart (different seconds), or unreadable: try again.
    Apart(String),
}

/// Whether the chart's newest second (`last`) is the one `/metrics`
/// exports, with the same figures (latencies to the 0.01 ms served).
fn compare_with_metrics(last: &Value, metrics: &str) -> Compared {
    match compare(last, metrics) {
        Ok(Ok(s)) => Compared::Same(s),
        Ok(Err(s)) => Compared::Differ(s),
        Err(s) => Compared::Apart(s),
    }
}

fn compare(last: &Value, metrics: &str) -> Result<Result<String, String>, String> {
    let num = |k: &str| -> Option<f64> {
        match &last[k] {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => s.parse().ok(),
            v => v.as_f64(),
        }
    };
    let t = num("t").ok_or_else(|| format!("no newest second on the chart: {last}"))?;
    let second = metric(metrics, "zz_gateway_second")?.unwrap_or(0.0);
    if (second * 1000.0 - t).abs() > 0.5 {
        return Err(format!(
            "read a moment apart: chart second {t} ms, /metrics second {second} s"
        ));
    }
    let pairs = [
        ("answers", "zz_gateway_answers_per_second", 0.0),
        ("errors", "zz_gateway_errors_per_second", 0.0),
        ("p50", "zz_gateway_latency_p50_ms", 0.005),
        ("p99", "zz_gateway_latency_p99_ms", 0.005),
    ];
    let mut shown = Vec::new();
    for (k, name, tolerance) in pairs {
        let (c, m) = (num(k), metric(metrics, name)?);
        let same = match (c, m) {
            (Some(c), Some(m)) => (c - m).abs() <= tolerance + 1e-9,
            (None, None) => true,
            _ => false,
        };
        if !same {
            return Ok(Err(format!(
                "kv second {t}: the chart shows {k} = {c:?}, /metrics {name} = {m:?}; chart: {last}"
            )));
        }
        shown.push(format!("{k} {c:?}"));
    }
    Ok(Ok(format!("second {t}: {}", shown.join(", "))))
}

#[test]
fn the_chart_and_metrics_are_compared_by_second_and_figure() {
    let metrics = "zz_gateway_second{app=\"kv\"} 1800000001\n\
                   zz_gateway_answers_per_second{app=\"kv\"} 12\n\
                   zz_gateway_errors_per_second{app=\"kv\"} 0\n\
                   zz_gateway_latency_p50_ms{app=\"kv\"} 4.08\n\
                   zz_gateway_latency_p99_ms{app=\"kv\"} NaN\n";
    let last = json!({"t": 1_800_000_001_000u64, "answers": 12, "errors": 0, "p50": "4.08", "p99": ""});
    assert!(matches!(compare_with_metrics(&last, metrics), Compared::Same(_)));
    // Another second: retried, not a disagreement.
    let earlier = json!({"t": 1_800_000_000_000u64, "answers": 3, "errors": 0, "p50": "4.08", "p99": ""});
    assert!(matches!(compare_with_metrics(&earlier, metrics), Compared::Apart(_)));
    for wrong in [
        json!({"t": 1_800_000_001_000u64, "answers": 12, "errors": 0, "p50": "4.2", "p99": ""}),
        json!({"t": 1_800_000_001_000u64, "answers": 11, "errors": 0, "p50": "4.08", "p99": ""}),
        json!({"t": 1_800_000_001_000u64, "answers": 12, "errors": 0, "p50": "4.08", "p99": "9"}),
    ] {
        assert!(
            matches!(compare_with_metrics(&wrong, metrics), Compared::Differ(_)),
            "{wrong}"
        );
    }
}
