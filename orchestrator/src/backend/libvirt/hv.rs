//! Blocking calls into libvirt (the `virt` crate). Everything here runs on
//! tokio's blocking pool, never on the runtime's worker threads.

use crate::backend::{BackendError, BackendState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::ErrorNumber;

/// One connection per libvirt URI, opened on first use and reopened when it
/// died (libvirtd restarted, ssh dropped).
#[derive(Default)]
pub struct Hosts {
    conns: Mutex<HashMap<String, Arc<Connect>>>,
}

impl Hosts {
    pub fn conn(&self, uri: &str) -> Result<Arc<Connect>, BackendError> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conns.get(uri) {
            if c.is_alive().unwrap_or(false) {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(Connect::open(Some(uri)).map_err(|e| fail("connect", uri, &e))?);
        conns.insert(uri.to_string(), c.clone());
        Ok(c)
    }
}

pub fn fail(op: &'static str, target: &str, e: &virt::error::Error) -> BackendError {
    BackendError::Hypervisor {
        op,
        target: target.to_string(),
        message: e.message().to_string(),
    }
}

fn is(e: &virt::error::Error, code: ErrorNumber) -> bool {
    e.code().is_known_and(|c| c == code)
}

/// The domain named `name`, or `None` if the host has no such domain.
pub fn lookup(conn: &Connect, name: &str) -> Result<Option<Domain>, BackendError> {
    match conn.lookup_domain_by_name(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(None),
        Err(e) => Err(fail("lookup", name, &e)),
    }
}

/// What a domain is doing, in libvirt's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Running,
    Paused,
    /// Defined but not running; `saved`: it has a managed save image.
    ShutOff {
        saved: bool,
    },
    Crashed,
    Gone,
}

impl Seen {
    pub fn backend_state(self) -> BackendState {
        match self {
            Seen::Running => BackendState::Running,
            Seen::Paused => BackendState::Paused,
            Seen::ShutOff { .. } | Seen::Crashed | Seen::Gone => BackendState::Stopped,
        }
    }
}

pub fn seen(conn: &Connect, name: &str) -> Result<Seen, BackendError> {
    let Some(d) = lookup(conn, name)? else {
        return Ok(Seen::Gone);
    };
    let (state, _reason) = match d.state() {
        Ok(s) => s,
        // Undefined between the lookup and now.
        Err(e) if is(&e, ErrorNumber::NoDomain) => return Ok(Seen::Gone),
        Err(e) => return Err(fail("state", name, &e)),
    };
    Ok(match state.unwrap_or(DomainState::NoState) {
        // Shutdown = shutting down: still running until it reaches shut off.
        DomainState::Running | DomainState::Blocked | DomainState::Shutdown => Seen::Running,
        DomainState::Paused | DomainState::PMSuspended => Seen::Paused,
        DomainState::Crashed => Seen::Crashed,
        DomainState::Shutoff | DomainState::NoState => Seen::ShutOff {
            saved: d.has_managed_save(0).unwrap_or(false),
        },
    })
}

/// Defines `xml` and boots it from scratch: any running instance or managed
/// save of the same name is discarded first (never two of one name).
pub fn define_and_boot(conn: &Connect, name: &str, xml: &str) -> Result<(), BackendError> {
    if let Some(old) = lookup(conn, name)? {
        stop(&old, name)?;
        if old.has_managed_save(0).unwrap_or(false) {
            old.managed_save_remove(0)
                .map_err(|e| fail("managedsave-remove", name, &e))?;
        }
    }
    let d = conn.define_domain_xml(xml).map_err(|e| fail("define", name, &e))?;
    d.create().map_err(|e| fail("start", name, &e))?;
    Ok(())
}

/// Starts a defined domain; libvirt restores it from its managed save if it
/// has one. A domain already running is left alone.
pub fn start_defined(d: &Domain, name: &str) -> Result<(), BackendError> {
    if d.is_active().map_err(|e| fail("state", name, &e))? {
        return Ok(());
    }
    d.create().map_err(|e| fail("start", name, &e))
}

pub fn suspend(conn: &Connect, name: &str) -> Result<(), BackendError> {
    let d = running(conn, name)?;
    d.suspend().map_err(|e| not_running_or(e, "suspend", name))
}

pub fn resume(conn: &Connect, name: &str) -> Result<(), BackendError> {
    let d = running(conn, name)?;
    d.resume().map_err(|e| not_running_or(e, "resume", name))
}

pub fn managed_save(conn: &Connect, name: &str) -> Result<(), BackendError> {
    let d = running(conn, name)?;
    // A standby is paused when it is hibernated; restore it running, so
    // waking a hibernated standby is one call.
    d.managed_save(virt::sys::VIR_DOMAIN_SAVE_RUNNING)
        .map_err(|e| not_running_or(e, "managedsave", name))
}

/// Removes a domain whatever its state (running, paused, saved, shut off);
/// a domain that does not exist is already removed.
pub fn remove(conn: &Connect, name: &str) -> Result<(), BackendError> {
    let Some(d) = lookup(conn, name)? else {
        return Ok(());
    };
    stop(&d, name)?;
    let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE;
    match d.undefine_flags(flags) {
        Ok(()) => Ok(()),
        // A transient domain vanishes when destroyed.
        Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(()),
        Err(e) => Err(fail("undefine", name, &e)),
    }
}

/// Names of every domain on the host (defined or running) starting with `prefix`.
pub fn list_prefixed(conn: &Connect, prefix: &str) -> Result<Vec<String>, BackendError> {
    let all = conn.list_all_domains(0).map_err(|e| fail("list", prefix, &e))?;
    Ok(all
        .iter()
        .filter_map(|d| d.name().ok())
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// Boots a throwaway (transient) domain: it is gone once destroyed.
pub fn boot_transient(conn: &Connect, name: &str, xml: &str) -> Result<Domain, BackendError> {
    conn.create_domain_xml(xml, 0).map_err(|e| fail("create", name, &e))
}

/// Whether the host's hypervisor offers domain type `kvm` at all.
pub fn offers_kvm(conn: &Connect) -> bool {
    conn.domain_capabilities(None, None, None, Some("kvm"), 0).is_ok()
}

/// Destroys a running or paused instance; one that is not running is fine.
pub fn stop(d: &Domain, name: &str) -> Result<(), BackendError> {
    match d.destroy() {
        Ok(()) => Ok(()),
        Err(e) if is(&e, ErrorNumber::OperationInvalid) || is(&e, ErrorNumber::NoDomain) => Ok(()),
        Err(e) => Err(fail("destroy", name, &e)),
    }
}

fn running(conn: &Connect, name: &str) -> Result<Domain, BackendError> {
    lookup(conn, name)?.ok_or_else(|| BackendError::NotRunning(name.to_string()))
}

fn not_running_or(e: virt::error::Error, op: &'static str, name: &str) -> BackendError {
    if is(&e, ErrorNumber::OperationInvalid) {
        BackendError::NotRunning(name.to_string())
    } else {
        fail(op, name, &e)
    }
}
