//! Mounts a guest's overlay root and finds and removes mounts below a directory.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mounts `overlay` on `target` with the given lower, upper and work directories.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    for p in [lower, upper, work] {
        let s = p.as_os_str().as_bytes();
        if s.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("overlay path contains ',', ':' or '\\': {}", p.display()),
            ));
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let src = CString::new("overlay").expect("static");
    let fstype = CString::new("overlay").expect("static");
    let tgt = cstring(target)?;
    let data = CString::new(opts).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts `target`; if it stays busy, detaches it lazily.
pub fn unmount(target: &Path) -> io::Result<()> {
    let tgt = cstring(target)?;
    // SAFETY: `tgt` is a valid NUL-terminated path.
    if unsafe { libc::umount2(tgt.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()), // not a mount point (any more)
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            if unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        _ => Err(err),
    }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Mount points of filesystems of type `fstype` (e.g. `overlay`) in this mount namespace.
pub fn mounts_of_type(fstype: &str) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let mount_point = fields.get(4)?;
            (fields.get(sep + 1) == Some(&fstype))
                .then(|| PathBuf::from(unescape_mountinfo(mount_point)))
        })
        .collect())
}

/// Whether `path` itself is a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    mounts_under(path)
        .map(|m| m.iter().any(|p| p == path))
        .unwrap_or(false)
}

/// Unmounts everything at or below `dir`, deepest first.
pub fn unmount_all_under(dir: &Path) -> io::Result<()> {
    for _ in 0..3 {
        let found = mounts_under(dir)?;
        if found.is_empty() {
            return Ok(());
        }
        for m in found {
            unmount(&m)?;
        }
    }
    let left = mounts_under(dir)?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "mounts remain under {}: {left:?}",
            dir.display()
        )))
    }
}

/// Removes a directory tree, refusing if anything is still mounted inside it
/// (so a stray bind mount of a host directory is never emptied).
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_all_under(dir)?;
    std::fs::remove_dir_all(dir)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    }
}
