//! Finding the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

const NOT_FOUND_MSG: &str =
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL \
     (e.g. `apt-get install postgresql`) or set DATABASE_URL";

#[derive(Debug, Clone)]
pub(super) struct PgBins {
    pub(super) bindir: PathBuf,
    pub(super) initdb: PathBuf,
    pub(super) pg_ctl: PathBuf,
}

impl PgBins {
    pub(super) async fn find() -> Result<PgBins> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path));
        }
        if let Ok(out) = tokio::process::Command::new("pg_config")
            .arg("--bindir")
            .stdin(std::process::Stdio::null())
            .output()
            .await
        {
            if out.status.success() {
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !dir.is_empty() {
                    candidates.push(PathBuf::from(dir));
                }
            }
        }
        candidates.extend(debian_bindirs());

        for dir in candidates {
            let (initdb, pg_ctl) = (dir.join("initdb"), dir.join("pg_ctl"));
            if !is_executable(&initdb) || !is_executable(&pg_ctl) {
                continue;
            }
            // Resolve symlinks (e.g. /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin):
            // pg_ctl finds `postgres` next to its own real location.
            let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
            let pg_ctl = std::fs::canonicalize(&pg_ctl).unwrap_or(pg_ctl);
            let bindir = pg_ctl.parent().map(Path::to_path_buf).unwrap_or(dir);
            if !is_executable(&bindir.join("postgres")) {
                bail!(
                    "found {} but no `postgres` server binary next to it: install the \
                     PostgreSQL server (e.g. `apt-get install postgresql`) or set DATABASE_URL",
                    pg_ctl.display()
                );
            }
            return Ok(PgBins {
                bindir,
                initdb,
                pg_ctl,
            });
        }
        bail!(NOT_FOUND_MSG)
    }
}

/// `/usr/lib/postgresql/*/bin`, newest version first.
fn debian_bindirs() -> Vec<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Vec<u64> = name.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            found.push((version, entry.path().join("bin")));
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(super) fn find_on_path(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}
