//! The admin API's bearer token: given, from `ZZ_ADMIN_TOKEN`, or kept in
//! `<data_dir>/admin.token` (generated on first run, mode 0600; refused on
//! load if group or others may access it, as ssh refuses such keys).

use anyhow::Context as _;
use rand::RngCore;
use std::io::Write;
use std::path::Path;

pub fn admin_token(given: Option<String>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(t) = given.filter(|t| !t.trim().is_empty()) {
        return Ok(t.trim().to_string());
    }
    if let Ok(t) = std::env::var("ZZ_ADMIN_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let path = data_dir.join("admin.token");
    if path.exists() {
        check_private(&path)?;
    }
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies only on creation; an empty file may have been there.
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    f.write_all(format!("{token}\n").as_bytes())?;
    Ok(token)
}

fn check_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{}: mode {mode:o} lets group or others at the admin token; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::admin_token;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", admin_token(None, dir.path()).unwrap_err());
        assert!(err.contains("admin.token") && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(admin_token(None, dir.path()).unwrap(), "secret");
    }

    #[test]
    fn a_generated_token_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let t = admin_token(None, dir.path()).unwrap();
        let path = dir.path().join("admin.token");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), t);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
