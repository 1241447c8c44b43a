//! Files of a replica VM on the local disk.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// An empty directory, mode 0711: it holds the replica's key (inside the
/// 0600 initrd) but qemu, running as another user, must traverse it.
pub fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

pub fn ensure_traversable(dir: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o111 != 0o111 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o111))?;
    }
    Ok(())
}

/// Writes a 0600 file atomically (a crash leaves the old one or none).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}
