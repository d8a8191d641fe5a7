//! File upload over SFTP (works on SFTP-only servers, e.g. a Proxmox node with `ForceCommand internal-sftp`): write a temporary file beside the target with the mode, then rename it into place.

use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use super::connection::Connection;
use super::error::SshError;

/// Bytes per SFTP write request (well under OpenSSH's 255 KiB limit).
const CHUNK: usize = 32 * 1024;
const POSIX_RENAME: &str = "posix-rename@openssh.com";
const FSYNC: &str = "fsync@openssh.com";

impl Connection {
    /// Removes `remote_path`; a file that does not exist is fine.
    pub async fn remove(&self, remote_path: &str) -> Result<(), SshError> {
        let err = |message: String| SshError::Sftp { addr: self.addr(), path: remote_path.to_string(), message };
        let _permit = self.permit().await;
        let channel = self.open_channel().await?;
        channel.request_subsystem(true, "sftp").await.map_err(|e| self.channel_err(e))?;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(self.command_timeout().as_secs().max(1));
        sftp.init().await.map_err(|e| err(format!("starting SFTP: {e}")))?;
        let r = match sftp.remove(remote_path).await {
            Ok(_) => Ok(()),
            Err(russh_sftp::client::error::Error::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(()),
            Err(e) => Err(err(e.to_string())),
        };
        let _ = sftp.close_session();
        r
    }

    /// Writes `bytes` to `remote_path` with permission bits `mode` (e.g. `0o600`), atomically: readers
    /// see the old file or the whole new one, never a part. Missing parent directories are created
    /// (mode 0755). Each SFTP request is bounded by the command timeout.
    pub async fn upload(&self, remote_path: &str, bytes: &[u8], mode: u32) -> Result<(), SshError> {
        let err = |path: &str, message: String| SshError::Sftp { addr: self.addr(), path: path.to_string(), message };
        let (dir, name) = split_path(remote_path).map_err(|m| err(remote_path, m.to_string()))?;
        let _permit = self.permit().await;
        let channel = self.open_channel().await?;
        channel.request_subsystem(true, "sftp").await.map_err(|e| self.channel_err(e))?;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(self.command_timeout().as_secs().max(1));
        let version = sftp.init().await.map_err(|e| err(remote_path, format!("starting SFTP: {e}")))?;
        let has = |ext: &str| version.extensions.contains_key(ext);

        if !dir.is_empty() {
            make_dirs(&sftp, dir).await.map_err(|(p, m)| err(&p, m))?;
        }
        let tmp_name = format!(".{name}.{}.tmp", hex::encode(rand::random::<[u8; 6]>()));
        let tmp = if dir.is_empty() { tmp_name } else { format!("{dir}/{tmp_name}") };
        let result = async {
            let attrs = FileAttributes { permissions: Some(mode & 0o7777), ..FileAttributes::empty() };
            let handle = sftp.open(&tmp, OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE, attrs).await.map_err(|e| (tmp.clone(), e.to_string()))?.handle;
            let written = async {
                for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
                    sftp.write(handle.as_str(), (i * CHUNK) as u64, chunk.to_vec()).await?;
                }
                // The server's umask may have cleared bits at creation; set the mode exactly.
                sftp.fsetstat(handle.as_str(), FileAttributes { permissions: Some(mode & 0o7777), ..FileAttributes::empty() }).await?;
                if has(FSYNC) {
                    sftp.fsync(handle.as_str()).await?;
                }
                Ok::<_, russh_sftp::client::error::Error>(())
            }
            .await;
            let closed = sftp.close(handle.as_str()).await;
            written.map_err(|e| (tmp.clone(), e.to_string()))?;
            closed.map_err(|e| (tmp.clone(), e.to_string()))?;
            rename_over(&sftp, &tmp, remote_path, has(POSIX_RENAME)).await.map_err(|e| (remote_path.to_string(), e))
        }
        .await;
        if result.is_err() {
            let _ = sftp.remove(&tmp).await;
        }
        let _ = sftp.close_session();
        result.map_err(|(p, m)| err(&p, m))
    }
}

/// `(parent, file name)`; the parent is `""` for a bare name and `"/"`-less for a file in `/`.
fn split_path(path: &str) -> Result<(&str, &str), &'static str> {
    if path.is_empty() || path.ends_with('/') || path.contains('\0') {
        return Err("the path must name a file (non-empty, not ending in `/`, no NUL)");
    }
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if name == "." || name == ".." {
        return Err("the path must name a file, not `.` or `..`");
    }
    if dir.is_empty() && path.starts_with('/') {
        return Err("refusing to write directly into `/`");
    }
    Ok((dir, name))
}

/// Creates each missing directory of `dir`, outermost first.
async fn make_dirs(sftp: &RawSftpSession, dir: &str) -> Result<(), (String, String)> {
    let mut prefix = String::new();
    for (i, part) in dir.split('/').enumerate() {
        if i > 0 {
            prefix.push('/');
        }
        prefix.push_str(part);
        if part.is_empty() {
            continue;
        }
        match sftp.stat(prefix.as_str()).await {
            Ok(_) => {}
            Err(russh_sftp::client::error::Error::Status(s)) if s.status_code == StatusCode::NoSuchFile => {
                let attrs = FileAttributes { permissions: Some(0o755), ..FileAttributes::empty() };
                sftp.mkdir(prefix.as_str(), attrs).await.map_err(|e| (prefix.clone(), format!("creating the directory: {e}")))?;
            }
            Err(e) => return Err((prefix.clone(), e.to_string())),
        }
    }
    Ok(())
}

/// Renames `from` over `to`. OpenSSH's plain SFTP rename refuses an existing target, so its
/// `posix-rename@openssh.com` (rename(2), atomic) is used when offered; otherwise the target is
/// removed first (a short window where it is missing, never partial).
async fn rename_over(sftp: &RawSftpSession, from: &str, to: &str, posix: bool) -> Result<(), String> {
    if posix {
        let mut data = Vec::with_capacity(8 + from.len() + to.len());
        for s in [from, to] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        return match sftp.extended(POSIX_RENAME, data).await.map_err(|e| e.to_string())? {
            russh_sftp::protocol::Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
            russh_sftp::protocol::Packet::Status(s) => Err(format!("rename: {}: {}", s.status_code, s.error_message)),
            other => Err(format!("rename: unexpected answer {other:?}")),
        };
    }
    if sftp.rename(from, to).await.is_ok() {
        return Ok(());
    }
    let _ = sftp.remove(to).await;
    sftp.rename(from, to).await.map(|_| ()).map_err(|e| format!("rename: {e}"))
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths_must_name_a_file() {
        assert_eq!(split_path("/var/lib/vz/snippets/a.yaml"), Ok(("/var/lib/vz/snippets", "a.yaml")));
        assert_eq!(split_path("rel.txt"), Ok(("", "rel.txt")));
        assert_eq!(split_path("d/rel.txt"), Ok(("d", "rel.txt")));
        for bad in ["", "/", "/tmp/", "/x", "a/..", "a\0b"] {
            assert!(split_path(bad).is_err(), "{bad:?}");
        }
    }
}
