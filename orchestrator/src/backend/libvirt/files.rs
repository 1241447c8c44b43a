//! Files of a replica VM on the local disk.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// An empty directory, mode 0711: qemu, running as another user, writes
/// the serial log in it.
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
