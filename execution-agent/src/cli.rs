//! The `zz-agent` command line, and the same settings read from a kernel
//! command line (`zz.deployment=PATH zz.key=PATH zz.replica=NAME
//! zz.host_alias=IP`) so a VM image needs no configuration of its own.

use crate::replica::{Config, Replica};
use clap::{Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use zz_wire::{Deployment, Identity, Keyring, Principal, ReplicaId};

#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "zz-agent",
    about = "zz execution agent: runs one execution replica of one app",
    long_about = "Runs one execution replica: executes the ordered requests of its app, \
                  signs replies and checkpoints, serves checkpoint state to peers, and \
                  catches up on demand after a pause. It dials out to every agreement \
                  node and to the orchestrator. `zz-agent serve` instead runs one app \
                  alone, unreplicated, for benchmarks.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// The deployment file (deployment.toml).
    #[arg(long, required_unless_present = "cmdline")]
    pub deployment: Option<PathBuf>,
    /// This replica's secret key file (hex).
    #[arg(long, required_unless_present = "cmdline")]
    pub key: Option<PathBuf>,
    /// Which replica this is, e.g. kv-e1.
    #[arg(long, required_unless_present = "cmdline")]
    pub replica: Option<String>,
    /// Replace the IP of every address in the deployment (inside a VM the
    /// host's loopback is 10.0.2.2).
    #[arg(long)]
    pub host_alias: Option<IpAddr>,
    /// Read the settings from a kernel command line file, e.g. /proc/cmdline.
    #[arg(long)]
    pub cmdline: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// Execute one app alone: no agreement, no signatures, no voting (the
    /// ceiling of `zz bench --mode unreplicated`).
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ServeArgs {
    /// The app kind: kv or bank.
    #[arg(long)]
    pub app: String,
    /// The app's path prefix (its name in a deployment); defaults to the kind.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Executed batches between two state snapshots (as a replica's
    /// checkpoint interval, in sequence numbers).
    #[arg(long, default_value_t = 128)]
    pub checkpoint_interval: u64,
}

impl ServeArgs {
    pub fn build_app(&self) -> Result<Box<dyn crate::app::App>, CliError> {
        let name = self.name.as_deref().unwrap_or(&self.app);
        crate::app::build(&self.app, name).ok_or_else(|| CliError::UnknownApp(name.to_string(), self.app.clone()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("kernel command line lacks {0}")]
    Missing(&'static str),
    #[error("{0} is not a valid IP address")]
    BadAlias(String),
    #[error(transparent)]
    Config(#[from] zz_wire::config::ConfigError),
    #[error("{0} is not an execution replica of this deployment")]
    UnknownReplica(String),
    #[error("key file {0}: {1}")]
    Key(PathBuf, String),
    #[error("app {0:?} has unknown kind {1:?}")]
    UnknownApp(String, String),
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub deployment: PathBuf,
    pub key: PathBuf,
    pub replica: String,
    pub host_alias: Option<IpAddr>,
}

/// Parses `zz.*` words of a kernel command line; other words are ignored.
pub fn parse_cmdline(text: &str) -> Result<Settings, CliError> {
    let mut d = None;
    let mut k = None;
    let mut r = None;
    let mut alias = None;
    for word in text.split_whitespace() {
        match word.split_once('=') {
            Some(("zz.deployment", v)) => d = Some(PathBuf::from(v)),
            Some(("zz.key", v)) => k = Some(PathBuf::from(v)),
            Some(("zz.replica", v)) => r = Some(v.to_string()),
            Some(("zz.host_alias", v)) => alias = Some(v.parse().map_err(|_| CliError::BadAlias(v.to_string()))?),
            _ => {}
        }
    }
    Ok(Settings {
        deployment: d.ok_or(CliError::Missing("zz.deployment"))?,
        key: k.ok_or(CliError::Missing("zz.key"))?,
        replica: r.ok_or(CliError::Missing("zz.replica"))?,
        host_alias: alias,
    })
}

impl Args {
    /// Flags win over the kernel command line.
    pub fn settings(&self) -> Result<Settings, CliError> {
        let base = match &self.cmdline {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| CliError::Read(p.clone(), e))?;
                Some(parse_cmdline(&text)?)
            }
            None => None,
        };
        let pick =
            |flag: &Option<PathBuf>, from: Option<PathBuf>, what| flag.clone().or(from).ok_or(CliError::Missing(what));
        Ok(Settings {
            deployment: pick(
                &self.deployment,
                base.as_ref().map(|b| b.deployment.clone()),
                "--deployment",
            )?,
            key: pick(&self.key, base.as_ref().map(|b| b.key.clone()), "--key")?,
            replica: self
                .replica
                .clone()
                .or(base.as_ref().map(|b| b.replica.clone()))
                .ok_or(CliError::Missing("--replica"))?,
            host_alias: self.host_alias.or(base.and_then(|b| b.host_alias)),
        })
    }
}

/// Everything the agent needs, loaded and checked.
pub struct Loaded {
    pub deployment: Deployment,
    pub identity: Identity,
    pub me: ReplicaId,
    pub replica: Replica,
    /// Where the replica's fetches of tenants' components go (a Wasm slot's
    /// replica that does not share the orchestrator's disk needs it).
    pub components: crate::components::ComponentLink,
}

pub fn load(s: &Settings) -> Result<Loaded, CliError> {
    let d = Deployment::load(&s.deployment)?;
    let me = match d.parse_principal(&s.replica) {
        Some(Principal::Replica(r)) => r,
        _ => return Err(CliError::UnknownReplica(s.replica.clone())),
    };
    let keys = d.keyring();
    let identity = load_key(&d, &keys, &s.key, me)?;
    let entry = d
        .app(me.app)
        .ok_or_else(|| CliError::UnknownReplica(s.replica.clone()))?;
    let components = crate::components::ComponentLink::default();
    let app: Box<dyn crate::app::App> = if entry.kind == crate::app::tenant::KIND {
        // Components deployed at run time sit next to the deployment file
        // where the orchestrator's disk is shared; otherwise they come over
        // the link.
        let dir = s.deployment.parent().unwrap_or(Path::new(".")).join("components");
        Box::new(crate::app::tenant::Tenant::new(Box::new(
            crate::components::LinkComponents {
                dir,
                link: components.clone(),
            },
        )))
    } else {
        crate::app::build(&entry.kind, &entry.name)
            .ok_or_else(|| CliError::UnknownApp(entry.name.clone(), entry.kind.clone()))?
    };
    let replica = Replica::new(Config::from_deployment(&d, me), identity.clone(), keys, app);
    Ok(Loaded {
        deployment: d,
        identity,
        me,
        replica,
        components,
    })
}

/// The replica's key: the deployment's (generation 1), or a replacement's,
/// which must come with the orchestrator's announcement of it
/// (`<key file>.cert`); that announcement is made current in `keys`.
fn load_key(d: &Deployment, keys: &Keyring, path: &Path, me: ReplicaId) -> Result<Identity, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Read(path.into(), e))?;
    let id = Identity::from_secret_hex(Principal::Replica(me), &text).map_err(|e| CliError::Key(path.into(), e))?;
    if d.public_key(id.who) == Some(id.public()) {
        return Ok(id);
    }
    let cert_path = zz_wire::config::key_cert_path(path);
    let not_ours = |why: String| CliError::Key(path.into(), format!("is not the key of {}: {why}", d.replica_name(me)));
    let cert_text = std::fs::read_to_string(&cert_path).map_err(|e| {
        not_ours(format!(
            "not the deployment's, and no announcement {}: {e}",
            cert_path.display()
        ))
    })?;
    let cert =
        zz_wire::config::parse_key_cert(&cert_text).map_err(|e| not_ours(format!("{}: {e}", cert_path.display())))?;
    if cert.body.replica != me || cert.body.public_key != id.public() {
        return Err(not_ours(format!("{} announces another key", cert_path.display())));
    }
    cert.apply(keys)
        .map_err(|e| not_ours(format!("{}: {e}", cert_path.display())))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_command_line_is_parsed() {
        let s = parse_cmdline(
            "console=ttyS0 quiet zz.deployment=/mnt/cfg/deployment.toml zz.key=/mnt/cfg/kv-e1.key \
             zz.replica=kv-e1 zz.host_alias=10.0.2.2\n",
        )
        .unwrap();
        assert_eq!(s.deployment, PathBuf::from("/mnt/cfg/deployment.toml"));
        assert_eq!(s.key, PathBuf::from("/mnt/cfg/kv-e1.key"));
        assert_eq!(s.replica, "kv-e1");
        assert_eq!(s.host_alias, Some("10.0.2.2".parse().unwrap()));
        assert!(parse_cmdline("zz.key=a zz.replica=b").is_err());
        assert!(parse_cmdline("zz.deployment=a zz.key=b zz.replica=c zz.host_alias=nope").is_err());
    }

    #[test]
    fn flags_override_the_kernel_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cmdline");
        std::fs::write(&p, "zz.deployment=/d zz.key=/k zz.replica=kv-e0").unwrap();
        let a = Args::try_parse_from(["zz-agent", "--cmdline", p.to_str().unwrap(), "--replica", "kv-e2"]).unwrap();
        let s = a.settings().unwrap();
        assert_eq!((s.deployment.to_str(), s.replica.as_str()), (Some("/d"), "kv-e2"));
        assert!(Args::try_parse_from(["zz-agent", "--replica", "kv-e0"]).is_err());
    }

    #[test]
    fn serve_is_a_subcommand_and_the_replica_flags_still_parse() {
        let a = Args::try_parse_from(["zz-agent", "serve", "--app", "bank", "--listen", "127.0.0.1:9"]).unwrap();
        let Some(Cmd::Serve(s)) = a.cmd else {
            panic!("not serve: {a:?}")
        };
        assert_eq!(
            (s.app.as_str(), s.listen.port(), s.checkpoint_interval),
            ("bank", 9, 128)
        );
        assert!(s.build_app().is_ok());
        let a = Args::try_parse_from(["zz-agent", "serve", "--app", "nope"]).unwrap();
        let Some(Cmd::Serve(s)) = a.cmd else {
            panic!("not serve")
        };
        assert!(s.build_app().is_err());
        let a = Args::try_parse_from(["zz-agent", "--deployment", "d", "--key", "k", "--replica", "kv-e0"]).unwrap();
        assert_eq!((&a.cmd, a.settings().unwrap().replica.as_str()), (&None, "kv-e0"));
        assert!(Args::try_parse_from(["zz-agent", "serve"]).is_err());
    }
}
