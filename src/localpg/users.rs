//! Who still uses a cluster, so the last process out stops it and no other.
//!
//! Every process that started or reused a cluster holds a shared `flock` on
//! `<data_dir>.users` (beside the data directory, like the start lock) for as long as it uses
//! it. Stopping takes the start lock (so no start can take a lease meanwhile), gives up its own
//! lease and tries an exclusive lock: granted means nobody else holds a lease. The kernel drops
//! a flock when its holder dies, also by SIGKILL, so a killed `serve` never keeps a cluster
//! alive forever: the next one out stops it. Files are opened close-on-exec, so the postmaster
//! (started through `pg_ctl`) does not inherit a lease.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A shared lock on the users file: this process uses the cluster.
pub(super) struct UserLease {
    /// Held, never read: dropping it gives the lease up.
    _lock: Flock<File>,
}

impl UserLease {
    /// Takes a lease. Called with the start lock held, so it never waits on a stopper's
    /// exclusive check (which also holds the start lock).
    pub(super) fn take(data_dir: &Path) -> Result<UserLease> {
        let path = users_path(data_dir)?;
        let file = open(&path)?;
        match Flock::lock(file, FlockArg::LockShared) {
            Ok(lock) => Ok(UserLease { _lock: lock }),
            Err((_, errno)) => Err(errno).with_context(|| format!("locking {}", path.display())),
        }
    }
}

/// Whether another process (or another value of this one) still holds a lease once `own`
/// (this value's lease, if any) is given up. Call with the start lock held.
pub(super) fn others_remain(data_dir: &Path, own: Option<UserLease>) -> Result<bool> {
    drop(own);
    let path = users_path(data_dir)?;
    let file = open(&path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        // Dropped at once: the lock only asked whether anyone else holds one.
        Ok(_exclusive) => Ok(false),
        Err((_, errno)) if errno == Errno::EWOULDBLOCK => Ok(true),
        Err((_, errno)) => Err(errno).with_context(|| format!("locking {}", path.display())),
    }
}

fn open(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn users_path(data_dir: &Path) -> Result<PathBuf> {
    let file_name = data_dir
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", data_dir.display()))?;
    let mut name = file_name.to_owned();
    name.push(".users");
    Ok(data_dir.with_file_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localpg::temp_dir::TempDir;

    #[test]
    fn the_last_lease_is_the_only_one() -> Result<()> {
        let tmp = TempDir::new("users")?;
        let dir = tmp.0.join("pg");
        let a = UserLease::take(&dir)?;
        let b = UserLease::take(&dir)?;
        assert!(others_remain(&dir, Some(a))?, "b still holds one");
        assert!(!others_remain(&dir, Some(b))?, "nobody else");
        assert!(!others_remain(&dir, None)?);
        Ok(())
    }

    /// A process that dies (SIGKILL) holds no lease any more.
    #[test]
    fn a_killed_holder_holds_no_lease() -> Result<()> {
        let Some(flock) = crate::localpg::bins::find_on_path("flock", &["/usr/bin", "/bin"]) else {
            return Ok(());
        };
        let tmp = TempDir::new("usersdie")?;
        let dir = tmp.0.join("pg");
        let path = users_path(&dir)?;
        let mut holder = std::process::Command::new("sh")
            .args(["-c", "exec 9>\"$1\" && \"$2\" -s 9 && exec sleep 60", "sh"])
            .arg(&path)
            .arg(&flock)
            .spawn()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !others_remain(&dir, None)? {
            assert!(
                std::time::Instant::now() < deadline,
                "the holder never took its lease"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        holder.kill()?;
        holder.wait()?;
        assert!(!others_remain(&dir, None)?);
        Ok(())
    }
}
