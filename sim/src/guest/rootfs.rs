//! Writes files inside a (stopped) guest's root without ever following the guest's symlinks.
//!
//! A guest is root inside its overlay and could plant `/root/.ssh -> /etc` so that the
//! host, writing through the overlay mount, would clobber its own files. Every path
//! component is therefore checked with `lstat`, and files are opened with `O_NOFOLLOW`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// A guest root directory on the host.
#[derive(Debug, Clone)]
pub struct GuestRoot {
    root: PathBuf,
}

impl GuestRoot {
    pub fn new(root: impl Into<PathBuf>) -> GuestRoot {
        GuestRoot { root: root.into() }
    }

    /// Ensures directory `rel` (absolute inside the guest, e.g. `/root/.ssh`) exists with
    /// `mode` for its last component; missing parents are created 0755.
    pub fn ensure_dir(&self, rel: &str, mode: u32) -> io::Result<PathBuf> {
        let parts = components(rel)?;
        let mut cur = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            let last = i + 1 == parts.len();
            match std::fs::symlink_metadata(&cur) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(refuse(&cur, "is a symlink"));
                }
                Ok(md) if !md.is_dir() => return Err(refuse(&cur, "is not a directory")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir(&cur)?;
                    if !last {
                        std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))?;
                    }
                }
                Err(e) => return Err(e),
            }
            if last {
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(cur)
    }

    /// Writes `content` to file `rel` with `mode`, owned by root; parents must not be
    /// symlinks. A symlink at the file's own place is replaced by a regular file.
    pub fn write_file(&self, rel: &str, content: &[u8], mode: u32) -> io::Result<()> {
        let parts = components(rel)?;
        let (name, parents) = parts
            .split_last()
            .ok_or_else(|| refuse(&self.root, "empty path"))?;
        let dir = if parents.is_empty() {
            self.root.clone()
        } else {
            let parent_rel = format!("/{}", parents.join("/"));
            let existing_mode = self.existing_dir_mode(&parent_rel)?.unwrap_or(0o755);
            self.ensure_dir(&parent_rel, existing_mode)?
        };
        let path = dir.join(name);
        if let Ok(md) = std::fs::symlink_metadata(&path) {
            if md.file_type().is_symlink() || !md.is_file() {
                if md.is_dir() {
                    return Err(refuse(&path, "is a directory"));
                }
                std::fs::remove_file(&path)?;
            }
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        f.write_all(content)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::fchown(&f, Some(0), Some(0))?;
        Ok(())
    }

    /// Creates an empty file (like `touch`).
    pub fn touch(&self, rel: &str) -> io::Result<()> {
        if self.exists_no_follow(rel)? {
            return Ok(());
        }
        self.write_file(rel, b"", 0o644)
    }

    /// Removes file `rel` if present (never following symlinks in the path).
    pub fn remove_file(&self, rel: &str) -> io::Result<()> {
        let parts = components(rel)?;
        let mut cur = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            match std::fs::symlink_metadata(&cur) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
                Ok(md) if i + 1 < parts.len() && !md.is_dir() => return Ok(()),
                Ok(_) => {}
            }
        }
        std::fs::remove_file(&cur)
    }

    fn exists_no_follow(&self, rel: &str) -> io::Result<bool> {
        let parts = components(rel)?;
        let mut cur = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            match std::fs::symlink_metadata(&cur) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
                Ok(md) if md.file_type().is_symlink() => return Err(refuse(&cur, "is a symlink")),
                Ok(md) if i + 1 < parts.len() && !md.is_dir() => return Ok(false),
                Ok(_) => {}
            }
        }
        Ok(true)
    }

    fn existing_dir_mode(&self, rel: &str) -> io::Result<Option<u32>> {
        if !self.exists_no_follow(rel)? {
            return Ok(None);
        }
        let p = self.root.join(rel.trim_start_matches('/'));
        Ok(Some(
            std::fs::symlink_metadata(p)?.permissions().mode() & 0o7777,
        ))
    }
}

/// Splits an absolute in-guest path into plain components, rejecting `..`.
fn components(rel: &str) -> io::Result<Vec<String>> {
    let p = Path::new(rel);
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad guest path {rel:?}"),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("empty guest path {rel:?}"),
        ));
    }
    Ok(out)
}

fn refuse(p: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refusing to write into guest: {} {why}", p.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_files_with_modes_and_refuses_symlinked_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = GuestRoot::new(tmp.path());
        root.ensure_dir("/root/.ssh", 0o700).unwrap();
        root.write_file("/root/.ssh/authorized_keys", b"k\n", 0o600)
            .unwrap();
        let md = std::fs::metadata(tmp.path().join("root/.ssh")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o700);
        let md = std::fs::metadata(tmp.path().join("root/.ssh/authorized_keys")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);

        std::os::unix::fs::symlink(outside.path(), tmp.path().join("etc")).unwrap();
        let err = root.write_file("/etc/hostname", b"x", 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(!outside.path().join("hostname").exists());
        assert!(root.write_file("/../x", b"x", 0o644).is_err());
    }

    #[test]
    fn replaces_a_symlink_at_the_file_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("etc/hostname")).unwrap();
        GuestRoot::new(tmp.path())
            .write_file("/etc/hostname", b"guest\n", 0o644)
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(
            std::fs::read(tmp.path().join("etc/hostname")).unwrap(),
            b"guest\n"
        );
    }
}
