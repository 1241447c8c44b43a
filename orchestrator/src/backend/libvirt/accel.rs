//! Which domain type a host can really run. Nested KVM may accept a `kvm`
//! domain and then hang its kernel silently, so "the domain started" proves
//! nothing: only the guest's boot marker on the serial log does.

use super::domain::{self, DomainSpec, BOOT_MARKER};
use super::{blocking, hv, Inner};
use crate::backend::BackendError;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A domain type libvirt runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (TCG): slow, works everywhere.
    Qemu,
}

impl Accel {
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Qemu => "qemu",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.domain_type())
    }
}

/// What the configuration asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    Kvm,
    Qemu,
    /// `kvm` if a probe boot reaches the guest's userland in time, else `qemu`.
    #[default]
    Auto,
}

impl std::str::FromStr for AccelMode {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(AccelMode::Kvm),
            "qemu" => Ok(AccelMode::Qemu),
            "auto" => Ok(AccelMode::Auto),
            other => Err(BackendError::Config(format!(
                "accelerator {other:?}: expected kvm, qemu or auto"
            ))),
        }
    }
}

/// Boots the shared image once as a transient `kvm` domain and answers `kvm`
/// only if the boot marker reaches its serial log within the probe timeout.
/// A remote host's console log is on that machine, out of our sight: there
/// the host's word that it offers kvm is taken, unprobed.
pub async fn probe(inner: &Arc<Inner>, uri: &str) -> Result<Accel, BackendError> {
    if super::remote_host(uri).is_some() {
        let (conns, u) = (inner.clone(), uri.to_string());
        let kvm = blocking(move || Ok(hv::offers_kvm(&*conns.hosts.conn(&u)?))).await?;
        let accel = if kvm { Accel::Kvm } else { Accel::Qemu };
        tracing::info!(host = %uri, ?accel, "accelerator of a remote host: from its capabilities, not probed");
        return Ok(accel);
    }
    let name = format!("{}accel-probe", domain::prefix(&inner.cfg.tag));
    let dir = inner.cfg.state_dir.join(format!("{name}-{}", host_slug(uri)));
    let log = dir.join("serial.log");
    let started = {
        let (inner, uri, name, dir, log) = (inner.clone(), uri.to_string(), name.clone(), dir.clone(), log.clone());
        blocking(move || {
            let conn = inner.hosts.conn(&uri)?;
            if !hv::offers_kvm(&conn) {
                return Ok(false);
            }

            super::files::fresh_dir(&dir)?;
            let cmdline = domain::cmdline("accel-probe", &[]);
            let (_, image) = inner.shared_image(&conn)?;
            // The shared initramfs alone: /init prints the marker before it
            // needs the identity the probe does not have.
            let xml = domain::render(&DomainSpec {
                name: &name,
                memory_mib: inner.cfg.memory_mib,
                vcpus: 1,
                accel: Accel::Kvm,
                kernel: Path::new(&image.kernel),
                initrd: Path::new(&image.initramfs_path),
                cmdline: &cmdline,
                serial_log: &log,
            })?;
            hv::remove(&conn, &name)?;
            match hv::boot_transient(&conn, &name, &xml) {
                Ok(_) => Ok(true),
                Err(e) => {
                    tracing::warn!(host = %uri, "accelerator probe: the kvm domain did not start: {e}");
                    Ok(false)
                }
            }
        })
        .await?
    };
    let booted = started && wait_for_marker(&log, inner.cfg.probe_timeout).await;
    let (inner2, uri2) = (inner.clone(), uri.to_string());
    blocking(move || {
        let conn = inner2.hosts.conn(&uri2)?;
        hv::remove(&conn, &name)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await?;
    if booted {
        tracing::info!(host = uri, "accelerator probe: kvm guest booted; using kvm");
        Ok(Accel::Kvm)
    } else if started {
        tracing::warn!(
            host = uri,
            secs = inner.cfg.probe_timeout.as_secs(),
            "accelerator probe: kvm guest did not reach its userland in time \
             (nested virtualisation?); falling back to qemu software emulation"
        );
        Ok(Accel::Qemu)
    } else {
        tracing::warn!(host = uri, "kvm is not available; using qemu software emulation");
        Ok(Accel::Qemu)
    }
}

/// Polls a serial log for the boot marker.
pub async fn wait_for_marker(log: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = tokio::fs::read(log).await {
            if contains(&text, BOOT_MARKER.as_bytes()) {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A file-name-safe rendering of a URI, to keep per-host probe dirs apart.
fn host_slug(uri: &str) -> String {
    uri.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
