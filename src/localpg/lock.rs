//! Serializing concurrent starts of one cluster.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Serializes `start` calls on one data directory, across threads and processes.
///
/// An exclusive `flock` on `<data_dir>.lock`, beside the data directory (`initdb` wants the
/// directory itself empty). The kernel drops a flock when its file is closed, also when the
/// holder crashes or is killed, so a dead start never blocks a later one. The file stays and
/// is reused: removing it while another process waits on it would let a third lock a new file.
pub(super) struct StartLock {
    /// Held, never read: dropping it releases the lock.
    _lock: Flock<File>,
}

impl StartLock {
    pub(super) async fn acquire(data_dir: &Path, timeout: Duration) -> Result<StartLock> {
        let path = lock_path(data_dir)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        let deadline = Instant::now() + timeout;
        let mut waiting_logged = false;
        loop {
            // Non-blocking: a blocking flock would hold a runtime worker thread while it waits.
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(StartLock { _lock: lock }),
                Err((unlocked, errno)) if errno == Errno::EWOULDBLOCK || errno == Errno::EINTR => {
                    file = unlocked;
                }
                Err((_, errno)) => {
                    return Err(errno).with_context(|| format!("locking {}", path.display()))
                }
            }
            if !waiting_logged {
                tracing::info!(data_dir = %data_dir.display(), "waiting for another start of this cluster to finish");
                waiting_logged = true;
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {}s waiting for another process to finish starting \
                     PostgreSQL in {} (lock file: {})",
                    timeout.as_secs(),
                    data_dir.display(),
                    path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl StartLock {
    /// Like [`StartLock::acquire`], waiting without a runtime (for `Drop`, which may run
    /// while this very process holds the lock: a start cancelled midway), so it gives up
    /// after `timeout` instead of waiting for ever.
    pub(super) fn acquire_sync(data_dir: &Path, timeout: Duration) -> Result<StartLock> {
        let path = lock_path(data_dir)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        let deadline = Instant::now() + timeout;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(StartLock { _lock: lock }),
                Err((unlocked, errno)) if errno == Errno::EWOULDBLOCK || errno == Errno::EINTR => {
                    file = unlocked;
                }
                Err((_, errno)) => {
                    return Err(errno).with_context(|| format!("locking {}", path.display()))
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} stayed locked for {}s",
                    path.display(),
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn lock_path(data_dir: &Path) -> Result<PathBuf> {
    let file_name = data_dir
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", data_dir.display()))?;
    let mut lock_name = file_name.to_owned();
    lock_name.push(".lock");
    Ok(data_dir.with_file_name(lock_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localpg::bins::find_on_path;
    use crate::localpg::temp_dir::TempDir;

    #[tokio::test]
    async fn start_lock_serializes() -> Result<()> {
        let tmp = TempDir::new("lockfile")?;
        let dir = tmp.0.join("pg");
        let first = StartLock::acquire(&dir, Duration::from_secs(5)).await?;
        assert!(StartLock::acquire(&dir, Duration::from_millis(300))
            .await
            .is_err());
        drop(first);
        let _second = StartLock::acquire(&dir, Duration::from_secs(1)).await?;
        Ok(())
    }

    /// Another process holding the lock makes a start wait; once that process is killed, the
    /// start proceeds (no stale lock).
    #[tokio::test]
    async fn start_lock_released_when_holder_dies() -> Result<()> {
        let Some(flock) = find_on_path("flock", &["/usr/bin", "/bin"]) else {
            return Ok(());
        };
        let tmp = TempDir::new("lockdies")?;
        let dir = tmp.0.join("pg");
        let path = lock_path(&dir)?;
        // One process (sh replaced by sleep) holds the lock on fd 9; flock(1) only takes it.
        let mut holder = std::process::Command::new("sh")
            .args(["-c", "exec 9>\"$1\" && \"$2\" -x 9 && exec sleep 60", "sh"])
            .arg(&path)
            .arg(&flock)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match StartLock::acquire(&dir, Duration::ZERO).await {
                Ok(lock) => drop(lock),
                Err(_) => break,
            }
            assert!(Instant::now() < deadline, "the holder never took the lock");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(StartLock::acquire(&dir, Duration::from_millis(300))
            .await
            .is_err());
        holder.kill()?;
        holder.wait()?;
        let _lock = StartLock::acquire(&dir, Duration::from_secs(1)).await?;
        Ok(())
    }
}
