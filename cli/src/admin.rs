//! `zz status` and `zz inject`: thin clients of the admin REST API.

use anyhow::Context;
use clap::Args;
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

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.admin_url.trim_end_matches('/'), path)
    }
}

async fn get(a: &AdminArgs, path: &str) -> anyhow::Result<serde_json::Value> {
    let resp = reqwest::Client::new()
        .get(a.url(path))
        .bearer_auth(a.token()?)
        .send()
        .await
        .with_context(|| format!("contacting the admin API at {}", a.admin_url))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        anyhow::bail!("{path}: {status}: {body}");
    }
    Ok(body)
}

fn s(v: &serde_json::Value, k: &str) -> String {
    match &v[k] {
        serde_json::Value::String(x) => x.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn status(a: &AdminArgs) -> anyhow::Result<()> {
    let cluster = get(a, "/v1/cluster").await?;
    let replicas = get(a, "/v1/replicas").await?;
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

pub async fn inject(a: &AdminArgs, target: &str, kind: &str, duration_ms: Option<u64>) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "target": target, "kind": kind });
    if let Some(d) = duration_ms {
        body["duration_ms"] = d.into();
    }
    let resp = reqwest::Client::new()
        .post(a.url("/v1/faults"))
        .bearer_auth(a.token()?)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("contacting the admin API at {}", a.admin_url))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        anyhow::bail!("inject failed: {status}: {}", s(&v, "error"));
    }
    println!("injected {kind} into {target}: fault id {}", s(&v, "id"));
    Ok(())
}
