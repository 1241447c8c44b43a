//! `zz status`, `zz inject` and `zz app`: thin clients of the admin REST API.

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(long, default_value = "http://127.0.0.1:7070", env = "ZZ_ADMIN_URL")]
    pub admin_url: String,
    /// Bearer token; defaults to ZZ_ADMIN_TOKEN or the token file.
    #[arg(long, env = "ZZ_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token (written by `zz up`).
    #[arg(long, default_value = "zz-data/admin.token")]
    pub token_file: PathBuf,
}

impl AdminArgs {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let t = std::fs::read_to_string(&self.token_file).with_context(|| {
            format!(
                "reading the admin token from {} (or pass --token)",
                self.token_file.display()
            )
        })?;
        Ok(t.trim().to_string())
    }

    fn client(&self) -> anyhow::Result<AdminClient> {
        Ok(AdminClient::new(&self.admin_url, self.token()?))
    }
}

/// A client of the admin REST API: bearer token, JSON bodies; an answer
/// that is not 2xx is an error naming the route, the status and the body.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// `base` like `http://127.0.0.1:7070`.
    pub fn new(base: &str, token: String) -> Self {
        AdminClient {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)), "GET", path)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body), "POST", path)
            .await
    }

    /// Prints the replicas and the orchestrator's last events to stderr, to
    /// show where a failed benchmark round stopped.
    pub async fn print_recent_events(&self) {
        if let Ok(r) = self.get("/v1/replicas").await {
            eprintln!("replicas:");
            for r in r.as_array().into_iter().flatten() {
                eprintln!(
                    "  {:<8} {:<12} last_executed {} last_checkpoint {}",
                    r["id"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    r["last_executed"],
                    r["last_checkpoint"]
                );
            }
        }
        let Ok(v) = self.get("/v1/events").await else {
            return;
        };
        let events = v.as_array().cloned().unwrap_or_default();
        eprintln!("last orchestrator events:");
        for e in events.iter().rev().take(30).rev() {
            eprintln!(
                "  {} {:<8} {:<20} {}",
                e["at_ms"],
                e["replica"].as_str().unwrap_or(""),
                e["kind"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            );
        }
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body), "PUT", path)
            .await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)), "DELETE", path)
            .await
    }

    async fn send(&self, req: reqwest::RequestBuilder, method: &str, path: &str) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("contacting the admin API at {}", self.base))?;
        let status = resp.status();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {body}");
        Ok(body)
    }
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn status(a: &AdminArgs) -> anyhow::Result<()> {
    let admin = a.client()?;
    let cluster = admin.get("/v1/cluster").await?;
    let replicas = admin.get("/v1/replicas").await?;
    println!("f = {}", cluster["f"]);
    println!(
        "{:<6} {:<22} {:>6} {:>14} {:>10}",
        "node", "addr", "view", "last_committed", "stable"
    );
    for n in cluster["agreement"].as_array().into_iter().flatten() {
        println!(
            "{:<6} {:<22} {:>6} {:>14} {:>10}",
            s(n, "id"),
            s(n, "addr"),
            s(n, "view"),
            s(n, "last_committed"),
            s(n, "stable_checkpoint")
        );
    }
    println!();
    println!(
        "{:<10} {:<6} {:<13} {:<9} {:>13} {:>15}",
        "replica", "app", "state", "backend", "last_executed", "last_checkpoint"
    );
    for r in replicas.as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<6} {:<13} {:<9} {:>13} {:>15}",
            s(r, "id"),
            s(r, "app"),
            s(r, "state"),
            s(r, "backend"),
            s(r, "last_executed"),
            s(r, "last_checkpoint")
        );
    }
    Ok(())
}

pub async fn inject(
    a: &AdminArgs,
    target: &str,
    kind: &str,
    duration_ms: Option<u64>,
    force: bool,
) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "target": target, "kind": kind });
    if let Some(d) = duration_ms {
        body["duration_ms"] = d.into();
    }
    if force {
        body["force"] = true.into();
    }
    let v = a.client()?.post("/v1/faults", body).await.context("inject failed")?;
    println!("injected {kind} into {target}: fault id {}", s(&v, "id"));
    Ok(())
}

/// `zz app`: tenants' Wasm apps.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AppCmd {
    /// Deploy a WebAssembly component (a wasi:http handler) as app NAME,
    /// served by the gateway under /NAME/.
    Deploy { name: String, file: PathBuf },
    /// Replace NAME's component at an ordered point; its state is kept.
    Upgrade { name: String, file: PathBuf },
    /// Remove NAME and stop its replicas.
    Rm { name: String },
    /// List the apps: built-in and Wasm, with hash, version and replicas.
    Ls,
}

fn component_body(name: &str, file: &std::path::Path) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(serde_json::json!({
        "name": name,
        "component": base64::engine::general_purpose::STANDARD.encode(bytes),
    }))
}

pub async fn app(a: &AdminArgs, cmd: &AppCmd) -> anyhow::Result<()> {
    let admin = a.client()?;
    match cmd {
        AppCmd::Deploy { name, file } => {
            let v = admin
                .post("/v1/apps", component_body(name, file)?)
                .await
                .context("deploy failed")?;
            println!(
                "deployed {} version {} ({}): served under /{}/",
                s(&v, "name"),
                s(&v, "version"),
                s(&v, "hash"),
                s(&v, "name")
            );
        }
        AppCmd::Upgrade { name, file } => {
            let v = admin
                .put(&format!("/v1/apps/{name}"), component_body(name, file)?)
                .await
                .context("upgrade failed")?;
            println!(
                "upgraded {} to version {} ({})",
                s(&v, "name"),
                s(&v, "version"),
                s(&v, "hash")
            );
        }
        AppCmd::Rm { name } => {
            admin
                .delete(&format!("/v1/apps/{name}"))
                .await
                .context("remove failed")?;
            println!("removed {name}");
        }
        AppCmd::Ls => {
            let v = admin.get("/v1/apps").await?;
            println!("{:<20} {:<8} {:>7} {:<16} replicas", "name", "kind", "version", "hash");
            for a in v.as_array().into_iter().flatten() {
                let hash = s(a, "hash");
                let replicas: Vec<String> = a["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect();
                println!(
                    "{:<20} {:<8} {:>7} {:<16} {}",
                    s(a, "name"),
                    s(a, "kind"),
                    s(a, "version"),
                    hash.get(..16).unwrap_or(&hash),
                    replicas.join(",")
                );
            }
        }
    }
    Ok(())
}
