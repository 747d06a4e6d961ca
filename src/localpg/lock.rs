//! Serializing concurrent starts of one cluster.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};

/// A lock file (fallback lock only) older than this is considered stale.
const STALE_LOCK_AGE: Duration = Duration::from_secs(120);

/// Serializes `start` calls on one data directory, across threads and processes.
///
/// On Linux this binds an abstract unix socket whose name is derived from the
/// data directory's canonical path. The kernel allows one binder per name and
/// releases it when the socket is closed, including when the process dies (a
/// killed test run leaves no stale lock to clean up, and no file in the
/// repository). Abstract sockets are per network namespace, which matches what
/// is shared: a cluster on 127.0.0.1 is only reachable from the same network
/// namespace anyway. `std::fs::File::lock` (flock) would do too, but needs Rust
/// 1.89 while the workspace's MSRV is 1.85.
///
/// Elsewhere a lock file `<data_dir>.lock` created with `create_new` is used;
/// one older than two minutes is considered stale (left by a killed process)
/// and removed.
pub(super) enum StartLock {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Socket {
        /// Held, never read: closing it releases the lock.
        _listener: std::os::unix::net::UnixListener,
    },
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    File(PathBuf),
}

impl StartLock {
    pub(super) async fn acquire(data_dir: &Path, timeout: Duration) -> Result<StartLock> {
        #[cfg(target_os = "linux")]
        {
            Self::acquire_socket(data_dir, timeout).await
        }
        #[cfg(not(target_os = "linux"))]
        {
            Self::acquire_file(data_dir, timeout).await
        }
    }

    #[cfg(target_os = "linux")]
    async fn acquire_socket(data_dir: &Path, timeout: Duration) -> Result<StartLock> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener};
        let name = format!(
            "memberledger-localpg-{:016x}",
            fnv1a(data_dir.as_os_str().as_bytes())
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes())
            .context("creating an abstract unix socket address")?;
        let deadline = Instant::now() + timeout;
        let mut waiting_logged = false;
        loop {
            match UnixListener::bind_addr(&addr) {
                Ok(listener) => {
                    return Ok(StartLock::Socket {
                        _listener: listener,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if !waiting_logged {
                        tracing::info!(data_dir = %data_dir.display(), "waiting for another start of this cluster to finish");
                        waiting_logged = true;
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "timed out after {}s waiting for another process to finish starting \
                             PostgreSQL in {} (lock: abstract unix socket @{name})",
                            timeout.as_secs(),
                            data_dir.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("binding abstract unix socket @{name}"))
                }
            }
        }
    }

    #[cfg_attr(target_os = "linux", allow(dead_code))]
    async fn acquire_file(data_dir: &Path, timeout: Duration) -> Result<StartLock> {
        let file_name = data_dir
            .file_name()
            .ok_or_else(|| anyhow!("{} has no file name", data_dir.display()))?;
        let mut lock_name = file_name.to_owned();
        lock_name.push(".lock");
        let path = data_dir.with_file_name(lock_name);
        let deadline = Instant::now() + timeout;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(StartLock::File(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_some_and(|a| a > STALE_LOCK_AGE) {
                        tracing::warn!(path = %path.display(), "removing stale lock file");
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "timed out after {}s waiting for the lock file {}",
                            timeout.as_secs(),
                            path.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
    }
}

impl Drop for StartLock {
    fn drop(&mut self) {
        if let StartLock::File(path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localpg::temp_dir::TempDir;

    #[tokio::test]
    async fn file_lock_fallback_serializes() -> Result<()> {
        let tmp = TempDir::new("lockfile")?;
        let dir = tmp.0.join("pg");
        let first = StartLock::acquire_file(&dir, Duration::from_secs(5)).await?;
        assert!(StartLock::acquire_file(&dir, Duration::from_millis(300))
            .await
            .is_err());
        drop(first);
        let _second = StartLock::acquire_file(&dir, Duration::from_secs(1)).await?;
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn socket_lock_serializes() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("memberledger-lock-{}", std::process::id()));
        let first = StartLock::acquire_socket(&dir, Duration::from_secs(5)).await?;
        assert!(StartLock::acquire_socket(&dir, Duration::from_millis(300))
            .await
            .is_err());
        drop(first);
        let _second = StartLock::acquire_socket(&dir, Duration::from_secs(1)).await?;
        Ok(())
    }
}
