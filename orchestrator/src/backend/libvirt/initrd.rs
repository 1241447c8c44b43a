//! The per-VM initrd: the shared image's `initramfs.cpio.gz` followed by a
//! small gzipped newc archive with the replica's identity. The kernel unpacks
//! concatenated archives in order, so the shared image stays identity-free
//! (and is joined to the identity on the VM's host, see `images`).

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;

/// Where the guest's `/init` and `zz-agent --cmdline` look for them.
pub const DEPLOYMENT_PATH: &str = "etc/zz/deployment.toml";
pub const KEY_PATH: &str = "etc/zz/replica.key";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

/// A newc (`070701`) cpio archive, written in order; owner root, mtime 0, so
/// the same inputs give the same bytes.
#[derive(Default)]
pub struct Newc {
    buf: Vec<u8>,
    ino: u32,
}

impl Newc {
    pub fn dir(&mut self, name: &str, perm: u32) -> std::io::Result<()> {
        self.entry(name, S_IFDIR | perm, 2, &[])
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, S_IFREG | perm, 1, data)
    }

    pub fn finish(mut self) -> std::io::Result<Vec<u8>> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, 1, &[])?;
        Ok(self.buf)
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> std::io::Result<()> {
        let too_big = |what: &str| std::io::Error::other(format!("cpio {what} too large: {name}"));
        let size = u32::try_from(data.len()).map_err(|_| too_big("file"))?;
        let namesize = u32::try_from(name.len() + 1).map_err(|_| too_big("name"))?;
        if name != "TRAILER!!!" {
            self.ino += 1;
        }
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [self.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            write!(self.buf, "{f:08x}")?;
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// Header+name and data each end on a 4-byte boundary; the archive starts
    /// at 0, so the buffer length is the offset.
    fn pad(&mut self) {
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }
}

/// The gzipped identity archive: `/etc/zz/deployment.toml` (0644) and
/// `/etc/zz/replica.key` (0600, in a 0700 directory), with a replacement's
/// key announcement `/etc/zz/replica.key.cert` beside it.
pub fn identity_archive(deployment: &[u8], key: &[u8], cert: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
    let mut cpio = Newc::default();
    cpio.dir("etc", 0o755)?;
    cpio.dir("etc/zz", 0o700)?;
    cpio.file(DEPLOYMENT_PATH, 0o644, deployment)?;
    cpio.file(KEY_PATH, 0o600, key)?;
    if let Some(cert) = cert {
        cpio.file(&format!("{KEY_PATH}.cert"), 0o644, cert)?;
    }
    let raw = cpio.finish()?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&raw)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn headers_are_110_bytes_and_everything_is_4_aligned() {
        let mut c = Newc::default();
        c.file("abc", 0o644, b"hello").unwrap();
        let raw = c.finish().unwrap();
        assert_eq!(&raw[..6], b"070701");
        // header 110 + "abc\0" = 114 -> 116; data 5 -> 8; trailer header at 124.
        assert_eq!(&raw[110..114], b"abc\0");
        assert_eq!(&raw[116..121], b"hello");
        assert_eq!(&raw[124..130], b"070701");
        assert_eq!(raw.len() % 4, 0);
        // filesize field (7th) of the first header.
        assert_eq!(&raw[6 + 6 * 8..6 + 7 * 8], b"00000005");
    }

    /// GNU cpio reads back what we wrote, with the modes we asked for.
    #[test]
    fn gnu_cpio_extracts_the_identity_archive() {
        if Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("skipping: no cpio binary");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = gunzip(&identity_archive(b"f = 1\n", b"secret\n", None).unwrap());
        let mut child = Command::new("cpio")
            .args(["-i", "-d", "--no-absolute-filenames", "--quiet"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success());
        let toml = dir.path().join(DEPLOYMENT_PATH);
        let key = dir.path().join(KEY_PATH);
        assert_eq!(std::fs::read(&toml).unwrap(), b"f = 1\n");
        assert_eq!(std::fs::read(&key).unwrap(), b"secret\n");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&toml), 0o644);
        assert_eq!(mode(&dir.path().join("etc/zz")), 0o700);
    }

    #[test]
    fn identity_archive_is_one_gzipped_newc_archive() {
        let tail = gunzip(&identity_archive(b"d", b"k", None).unwrap());
        let text = String::from_utf8_lossy(&tail);
        assert!(text.contains(DEPLOYMENT_PATH) && text.contains(KEY_PATH));
        assert!(text.contains("TRAILER!!!"));
    }
}
