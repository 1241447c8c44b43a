//! Roles of a deployment run as processes on network-namespace hosts
//! (`netns`), and the HTTP view a test has of them: the admin API and the
//! gateway.

use crate::netns::Host;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// One role's process, its log, and the host it runs on.
pub struct Role {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

/// The roles; dropping it kills them (the lab then kills whatever they
/// started) and, if the test is failing, prints each role's log tail.
pub struct Roles(pub Vec<Role>);

impl Roles {
    /// Waits for `path` to exist (an orchestrator's admin token), failing
    /// if a role exits first or it does not appear within `limit` of `since`.
    pub async fn wait_for_file(&mut self, path: &Path, since: std::time::Instant, limit: std::time::Duration) {
        while !path.exists() {
            self.check_alive();
            assert!(since.elapsed() < limit, "no {} within {limit:?}", path.display());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Panics, with the log tail, if a role exited.
    pub fn check_alive(&mut self) {
        for r in &mut self.0 {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("{} exited with {status}:\n{}", r.name, tail(&r.log, 30));
            }
        }
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        for r in &mut self.0 {
            let _ = r.child.kill();
            let _ = r.child.wait();
            if std::thread::panicking() {
                eprintln!("---- {} ({}):\n{}", r.name, r.log.display(), tail(&r.log, 40));
            }
        }
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts `words` on `host`, its output into `<logs>/<name>.log`.
pub fn spawn(host: &Host, name: &str, words: &[String], logs: &Path) -> Role {
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    println!("{name} on {} ({}): {}", host.ns, host.addr, words.join(" "));
    let child = host
        .command(&words[0])
        .args(&words[1..])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Role {
        name: name.into(),
        child,
        log,
    }
}

pub struct Api {
    pub http: reqwest::Client,
    /// `http://ADDR:PORT` of the admin API and of the gateway.
    pub admin: String,
    pub gateway: String,
    pub token: String,
}

impl Api {
    /// `GET <admin><path>` with the token, as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.admin))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("GET {path}: {}", r.status()));
        }
        r.json().await.map_err(|e| e.to_string())
    }

    pub async fn replicas(&self) -> Result<Vec<Value>, String> {
        serde_json::from_value(self.get_json("/v1/replicas").await?).map_err(|e| e.to_string())
    }

    /// Status and body, or the transport error as text.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), String> {
        let r = req.send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.unwrap_or_default()))
    }

    pub async fn expect(&self, req: reqwest::RequestBuilder, what: &str, want: u16) -> String {
        match self.send(req).await {
            Ok((s, body)) if s == want => body,
            Ok((s, body)) => panic!("{what}: expected {want}, got {s} {body:?}"),
            Err(e) => panic!("{what}: {e}"),
        }
    }

    pub fn gw(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }
}

pub fn count(replicas: &[Value], app: &str, state: &str) -> usize {
    replicas
        .iter()
        .filter(|r| r["app"] == app && r["state"] == state)
        .count()
}

pub fn summary(replicas: &[Value]) -> String {
    replicas
        .iter()
        .map(|r| {
            format!(
                "{}={}/g{}",
                r["id"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?"),
                r["generation"]
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `app` is healed after replica `id` (generation `lost`) was lost: `id`
/// runs a newer generation and the app is back to 2 active + 1 paused (f=1).
pub fn healed(replicas: &[Value], app: &str, id: &str, lost: u64) -> bool {
    let replaced = replicas
        .iter()
        .any(|r| r["id"] == id && r["generation"].as_u64().is_some_and(|g| g > lost));
    replaced && count(replicas, app, "active") == 2 && count(replicas, app, "paused") == 1
}
