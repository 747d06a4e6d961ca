//! Creating the data directory and, as root, handing it to `postgres`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::run_as::{run, RunAs};
use super::{LOG_FILE, PORT_FILE};

/// Makes `data_dir` absolute, creates its parents (and itself, mode 0700).
/// Returns the canonical path.
pub(super) fn prepare_dirs(data_dir: &Path, run_as: &RunAs) -> Result<PathBuf> {
    let abs = std::path::absolute(data_dir)
        .with_context(|| format!("making {} absolute", data_dir.display()))?;
    let parent = abs
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", abs.display()))?;
    let mut missing: Vec<&Path> = parent.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    if matches!(run_as, RunAs::Postgres { .. }) {
        // Parents created here must be traversable by `postgres`, whatever the umask.
        missing.reverse();
        for dir in missing {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod 755 {}", dir.display()))?;
        }
    }
    if !abs.exists() {
        match std::fs::DirBuilder::new().mode(0o700).create(&abs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", abs.display())),
        }
    }
    std::fs::canonicalize(&abs).with_context(|| format!("resolving {}", abs.display()))
}

/// When root: the data directory (and, if it is not owned by postgres yet,
/// everything in it) must belong to postgres.
pub(super) fn ensure_owned_by(data_dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let meta =
        std::fs::metadata(data_dir).with_context(|| format!("stat {}", data_dir.display()))?;
    if meta.uid() == uid {
        return Ok(());
    }
    tracing::info!(data_dir = %data_dir.display(), "chown -R postgres");
    chown_recursive(data_dir, uid, gid)
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown postgres {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// When root: `postgres` must be able to reach and write the data directory.
pub(super) async fn check_accessible(
    data_dir: &Path,
    run_as: &RunAs,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let d: OsString = data_dir.into();
    let args: Vec<OsString> = vec![
        "-r".into(),
        d.clone(),
        "-a".into(),
        "-w".into(),
        d.clone(),
        "-a".into(),
        "-x".into(),
        d,
    ];
    let out = run(run_as, Path::new("test"), &args).await?;
    if out.status.success() {
        return Ok(());
    }
    // Find the culprit for the message.
    let mut culprit = None;
    let mut ancestors: Vec<&Path> = data_dir.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.mode();
            let bit = if meta.uid() == uid {
                0o100
            } else if meta.gid() == gid {
                0o010
            } else {
                0o001
            };
            if mode & bit == 0 {
                culprit = Some(format!(
                    "{} (mode {:o}, owner uid {}) is not traversable by it; \
                     e.g. `chmod o+x {}` fixes that",
                    dir.display(),
                    mode & 0o7777,
                    meta.uid(),
                    dir.display()
                ));
                break;
            }
        }
    }
    bail!(
        "running as root, so PostgreSQL must run as the `postgres` user, but that user cannot \
         access the data directory {}: {}. Alternatively use a data directory under a \
         world-traversable folder (e.g. {}), run as a non-root user, or set DATABASE_URL",
        data_dir.display(),
        culprit.unwrap_or_else(|| "permission denied".to_string()),
        std::env::temp_dir().display()
    )
}

/// Removes `.s.PGSQL.*` entries from the data directory (server not running).
pub(super) fn remove_stale_sockets(data_dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(data_dir).with_context(|| format!("reading {}", data_dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().as_bytes().starts_with(b".s.PGSQL.") {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing stale socket file");
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Before initdb: remove files this module may have left in a data directory
/// without a cluster (initdb wants an empty directory).
pub(super) fn remove_own_leftovers(data_dir: &Path) -> Result<()> {
    for name in [PORT_FILE, LOG_FILE] {
        let path = data_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
