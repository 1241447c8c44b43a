//! Guest images in a libvirt storage pool. qemu opens its kernel and initrd
//! on the host that runs it, as its own user: a path in the orchestrator's
//! checkout is unreadable there when any directory above it is 0700 (a home
//! directory, `mktemp -d`), and does not exist at all on a remote host. So
//! the images go through libvirt into a directory it owns, and domains boot
//! from the volumes' paths on their host.
//!
//! The shared kernel and initramfs are volumes named by content hash, sent
//! once per host and image. A replica's initrd (the initramfs followed by its
//! identity archive, see `initrd`) is cloned from the initramfs volume on the
//! host; only the small identity archive crosses the connection.

use super::hv::fail;
use crate::backend::BackendError;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

/// Where libvirt keeps its own images; a pool's directory is created in it.
pub const POOL_PARENT: &str = "/var/lib/libvirt/images";

/// How long to wait for another process's upload of the same volume.
const UPLOAD_WAIT: Duration = Duration::from_secs(120);

/// The shared image on one host.
pub struct Shared {
    pub kernel: String,
    pub initramfs: StorageVol,
    pub initramfs_path: String,
    pub initramfs_len: u64,
}

/// `zz-vmlinuz-<first 16 hex digits of the sha256>`: the name changes
/// exactly when the content does (`vm-images/out/manifest.txt` lists the
/// same hashes).
pub fn content_name(what: &str, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("zz-{what}-{}", hex::encode(&digest[..8]))
}

/// The volume holding a replica's initrd: named after its domain, so it
/// goes when the domain does.
pub fn replica_volume(domain: &str) -> String {
    format!("{domain}.initrd")
}

/// The pool named `name`, defined, built, started and marked autostart if
/// it is not (it survives a libvirtd restart).
pub fn ensure_pool(conn: &Connect, name: &str) -> Result<StoragePool, BackendError> {
    let pool = match lookup_pool(conn, name)? {
        Some(p) => p,
        None => {
            let xml = pool_xml(name);
            match conn.define_storage_pool_xml(&xml, 0) {
                Ok(p) => {
                    p.build(0).map_err(|e| fail("pool-build", name, &e))?;
                    p.set_autostart(true).map_err(|e| fail("pool-autostart", name, &e))?;
                    p
                }
                // Another orchestrator defined it meanwhile.
                Err(e) => lookup_pool(conn, name)?.ok_or_else(|| fail("pool-define", name, &e))?,
            }
        }
    };
    if !pool.is_active().map_err(|e| fail("pool-state", name, &e))? {
        if let Err(e) = pool.create(0) {
            // Started by someone else since we asked.
            if !pool.is_active().unwrap_or(false) {
                return Err(fail("pool-start", name, &e));
            }
        }
    }
    Ok(pool)
}

/// A `dir` pool in [`POOL_PARENT`]; 0711 like its parent, so qemu can open
/// a volume it was given but nobody can list the replicas' initrds.
fn pool_xml(name: &str) -> String {
    format!(
        "<pool type='dir'><name>{name}</name><target><path>{POOL_PARENT}/{name}</path>\
         <permissions><mode>0711</mode></permissions></target></pool>"
    )
}

/// The pool if this host has it.
pub fn lookup_pool(conn: &Connect, name: &str) -> Result<Option<StoragePool>, BackendError> {
    match conn.lookup_storage_pool_by_name(name) {
        Ok(p) => Ok(Some(p)),
        Err(e) if is(&e, ErrorNumber::NoStoragePool) => Ok(None),
        Err(e) => Err(fail("pool-lookup", name, &e)),
    }
}

/// Kernel and initramfs on this host, uploaded unless a volume of the same
/// content is there already.
pub fn shared(pool: &StoragePool, kernel: &[u8], initramfs: &[u8]) -> Result<Shared, BackendError> {
    let kernel = ensure_volume(pool, &content_name("vmlinuz", kernel), kernel)?;
    let initramfs_vol = ensure_volume(pool, &content_name("initramfs", initramfs), initramfs)?;
    Ok(Shared {
        kernel: vol_path(&kernel)?,
        initramfs_path: vol_path(&initramfs_vol)?,
        initramfs: initramfs_vol,
        initramfs_len: initramfs.len() as u64,
    })
}

/// A fresh `name` volume (0600: it holds the replica's key) holding the
/// shared initramfs then `identity`; returns its path.
pub fn replica_initrd(
    pool: &StoragePool,
    name: &str,
    shared: &Shared,
    identity: &[u8],
) -> Result<String, BackendError> {
    delete_volume(pool, name)?;
    let xml = volume_xml(name, shared.initramfs_len, 0o600);
    let vol = StorageVol::create_xml_from(pool, &xml, &shared.initramfs, 0).map_err(|e| fail("vol-clone", name, &e))?;
    upload_or_delete(&vol, name, shared.initramfs_len, identity)?;
    vol_path(&vol)
}

/// Deletes volume `name` if it exists.
pub fn delete_volume(pool: &StoragePool, name: &str) -> Result<(), BackendError> {
    match lookup_vol(pool, name)? {
        Some(v) => match v.delete(0) {
            Ok(()) => Ok(()),
            Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Ok(()),
            Err(e) => Err(fail("vol-delete", name, &e)),
        },
        None => Ok(()),
    }
}

/// Names of the replica initrd volumes whose domain starts with `prefix`.
pub fn initrds_with(pool: &StoragePool, prefix: &str) -> Result<Vec<String>, BackendError> {
    // Files added or removed behind libvirt's back (another pool object on
    // the same directory) are only seen after a refresh.
    let _ = pool.refresh(0);
    let names = pool.list_volumes().map_err(|e| fail("vol-list", prefix, &e))?;
    Ok(names
        .into_iter()
        .filter(|n| n.starts_with(prefix) && n.ends_with(".initrd"))
        .collect())
}

/// Volume `name` with exactly `bytes`, uploaded if missing. A volume of the
/// right name but the wrong size is an upload that died (deleted and sent
/// again) or one that another process is doing right now (libvirt refuses
/// to delete it then, and we wait for it to complete).
fn ensure_volume(pool: &StoragePool, name: &str, bytes: &[u8]) -> Result<StorageVol, BackendError> {
    let len = bytes.len() as u64;
    let deadline = Instant::now() + UPLOAD_WAIT;
    loop {
        match lookup_vol(pool, name)? {
            Some(v) if size(&v, name)? == len => return Ok(v),
            Some(v) => {
                if v.delete(0).is_ok() {
                    continue;
                }
            }
            None => match StorageVol::create_xml(pool, &volume_xml(name, 0, 0o644), 0) {
                Ok(v) => {
                    tracing::info!(volume = name, bytes = len, "uploading a guest image volume");
                    match upload(&v, name, 0, bytes) {
                        Ok(()) => return Ok(v),
                        // Deleted before our upload began, by a process that
                        // took the empty volume for a dead upload: again.
                        Err(_) if Instant::now() < deadline && lookup_vol(pool, name)?.is_none() => continue,
                        Err(e) => {
                            let _ = v.delete(0);
                            return Err(e);
                        }
                    }
                }
                Err(e) if is(&e, ErrorNumber::StorageVolExist) => {}
                Err(e) => return Err(fail("vol-create", name, &e)),
            },
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Config(format!(
                "storage volume {name} stayed incomplete for {} s (an upload elsewhere stalled?)",
                UPLOAD_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A raw volume; `capacity` 0 makes an empty file that an upload extends,
/// so its size tells whether the upload completed.
fn volume_xml(name: &str, capacity: u64, mode: u32) -> String {
    format!(
        "<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>\
         <target><format type='raw'/><permissions><mode>{mode:04o}</mode></permissions></target></volume>"
    )
}

/// Sends `bytes` to `vol` at `offset` (virStorageVolUpload); a failed upload
/// leaves no volume behind.
fn upload_or_delete(vol: &StorageVol, name: &str, offset: u64, bytes: &[u8]) -> Result<(), BackendError> {
    let sent = upload(vol, name, offset, bytes);
    if sent.is_err() {
        let _ = vol.delete(0);
    }
    sent
}

fn upload(vol: &StorageVol, name: &str, offset: u64, bytes: &[u8]) -> Result<(), BackendError> {
    let conn = vol.connect().map_err(|e| fail("vol-upload", name, &e))?;
    let stream = Stream::new(&conn, 0).map_err(|e| fail("vol-upload", name, &e))?;
    vol.upload(&stream, offset, bytes.len() as u64, 0)
        .map_err(|e| fail("vol-upload", name, &e))?;
    let mut rest = bytes;
    while !rest.is_empty() {
        match stream.send(&rest[..rest.len().min(1 << 20)]) {
            Ok(n) if n > 0 => rest = &rest[n.unsigned_abs()..],
            Ok(_) => {
                let _ = stream.abort();
                return Err(BackendError::Config(format!(
                    "uploading {name}: the stream took no data"
                )));
            }
            Err(e) => {
                let _ = stream.abort();
                return Err(fail("vol-upload", name, &e));
            }
        }
    }
    stream.finish().map_err(|e| fail("vol-upload", name, &e))
}

fn lookup_vol(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>, BackendError> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Ok(None),
        Err(e) => Err(fail("vol-lookup", name, &e)),
    }
}

fn size(vol: &StorageVol, name: &str) -> Result<u64, BackendError> {
    Ok(vol.info().map_err(|e| fail("vol-info", name, &e))?.capacity)
}

fn vol_path(vol: &StorageVol) -> Result<String, BackendError> {
    vol.path().map_err(|e| fail("vol-path", "", &e))
}

fn is(e: &virt::error::Error, code: ErrorNumber) -> bool {
    e.code().is_known_and(|c| c == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_content() {
        let a = content_name("vmlinuz", b"kernel one");
        assert!(
            a.starts_with("zz-vmlinuz-") && a.len() == "zz-vmlinuz-".len() + 16,
            "{a}"
        );
        assert_eq!(a, content_name("vmlinuz", b"kernel one"));
        assert_ne!(a, content_name("vmlinuz", b"kernel two"));
    }

    #[test]
    fn volume_xml_is_raw_with_the_mode_asked_for() {
        let xml = volume_xml("zz-t-kv-e0-g1.initrd", 4096, 0o600);
        assert!(xml.contains("<capacity unit='bytes'>4096</capacity>"), "{xml}");
        assert!(xml.contains("<mode>0600</mode>"), "{xml}");
        assert!(xml.contains("<format type='raw'/>"), "{xml}");
    }
}
