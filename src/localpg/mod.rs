//! Start (or reuse) a local PostgreSQL cluster for development and tests.
//!
//! [`LocalPostgres::start`] makes sure a cluster lives in a given data
//! directory (running `initdb` the first time), starts it on a free port on
//! 127.0.0.1 (or reuses it when it is already running) and returns once it
//! answers `SELECT 1`.
//!
//! * Binaries are looked up on `PATH`, then in `pg_config --bindir`, then in
//!   the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
//! * PostgreSQL refuses to run as root. When the current user is root, every
//!   `initdb`/`pg_ctl` invocation runs as the `postgres` system user
//!   (`runuser`, else `setpriv`, else `su`), and the data directory is owned
//!   by that user. Every parent directory of the data directory must then be
//!   traversable by `postgres`; this is checked up front with a clear error.
//! * The cluster listens on 127.0.0.1 only. Its unix socket lives in the data
//!   directory itself (or is disabled when that path is too long for a unix
//!   socket), so `/var/run/postgresql` is not needed.
//! * The chosen port is remembered in `<data_dir>/memberledger.port` and
//!   reused on the next start when it is still free.
//! * Concurrent callers (threads of one test binary, or several test
//!   binaries) are serialized per data directory, see [`StartLock`].
//! * Several processes may use one cluster (two `serve`s on one `DATA_DIR`):
//!   each holds a lease while it uses it, and [`LocalPostgres::stop`] stops
//!   the cluster only when no other lease remains, see [`users`].

mod bins;
mod data_dir;
mod lock;
mod ports;
mod ready;
mod run_as;
#[cfg(test)]
mod temp_dir;
mod users;

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use bins::PgBins;
use data_dir::{
    check_accessible, ensure_owned_by, prepare_dirs, remove_own_leftovers, remove_stale_sockets,
};
use lock::StartLock;
use ports::{choose_port, pick_free_port, read_port_file};
use ready::{url_for_port, wait_ready};
use run_as::{command_error, run, run_checked, RunAs};
use users::UserLease;

/// Name of the file (inside the data directory) remembering the port.
const PORT_FILE: &str = "memberledger.port";
/// Server log written by `pg_ctl -l` (inside the data directory).
const LOG_FILE: &str = "server.log";
/// How long to wait for `SELECT 1` after `pg_ctl start` returned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for another process that is starting the same cluster.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a drop waits for the start lock before leaving the cluster running.
const DROP_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest data directory path used as unix socket directory
/// (`<dir>/.s.PGSQL.<port>` must fit in `sun_path`, 108 bytes).
const MAX_SOCKET_DIR_LEN: usize = 90;

/// Options for [`LocalPostgres::start_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Trade durability for speed: `fsync=off`, `synchronous_commit=off`,
    /// `full_page_writes=off` (and `initdb --no-sync`). Only for throwaway
    /// test clusters: a crash of the machine may corrupt the cluster. The
    /// settings apply to the server process started by this call; a cluster
    /// that is already running is reused as it is.
    pub fast_unsafe: bool,
}

/// A local PostgreSQL cluster started (or found running) by
/// [`LocalPostgres::start`].
///
/// Dropping it stops the cluster if this value started it and no other
/// process uses it, unless [`LocalPostgres::detach`] was called.
pub struct LocalPostgres {
    data_dir: PathBuf,
    port: u16,
    url: String,
    pg_ctl: PathBuf,
    run_as: RunAs,
    /// This value ran `pg_ctl start` (as opposed to finding it running).
    started_here: bool,
    /// `stop()` ran, or `detach()` was called: nothing to do on drop.
    done: bool,
    /// This value uses the cluster (see [`users`]); given up on stop, detach or drop.
    lease: Option<UserLease>,
}

impl fmt::Debug for LocalPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPostgres")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("started_here", &self.started_here)
            .finish_non_exhaustive()
    }
}

impl LocalPostgres {
    /// Starts (or reuses) a cluster under `data_dir` (e.g. ./.memberledger/pg).
    /// Returns once it accepts connections.
    pub async fn start(data_dir: &Path) -> Result<LocalPostgres> {
        Self::start_with(data_dir, StartOptions::default()).await
    }

    /// Like [`LocalPostgres::start`], with options.
    pub async fn start_with(data_dir: &Path, opts: StartOptions) -> Result<LocalPostgres> {
        let bins = PgBins::find().await?;
        let run_as = RunAs::detect().await?;
        let data_dir = prepare_dirs(data_dir, &run_as)?;
        tracing::debug!(data_dir = %data_dir.display(), bindir = %bins.bindir.display(), ?run_as, "local PostgreSQL");

        let _lock = StartLock::acquire(&data_dir, LOCK_TIMEOUT).await?;

        if let RunAs::Postgres { uid, gid, .. } = &run_as {
            ensure_owned_by(&data_dir, *uid, *gid)?;
            check_accessible(&data_dir, &run_as, *uid, *gid).await?;
        }

        let mut pg = LocalPostgres {
            url: String::new(),
            port: 0,
            data_dir,
            pg_ctl: bins.pg_ctl.clone(),
            run_as,
            started_here: false,
            done: true,
            lease: None,
        };
        let has_cluster = pg.data_dir.join("PG_VERSION").is_file();

        if has_cluster && pg.is_running().await? {
            let port = pg.running_port().with_context(|| {
                format!(
                    "PostgreSQL is running in {} but its port could not be determined",
                    pg.data_dir.display()
                )
            })?;
            pg.port = port;
            pg.url = url_for_port(port, "postgres");
            tracing::info!(port, data_dir = %pg.data_dir.display(), "reusing running local PostgreSQL");
            if let Err(err) = wait_ready(&pg.url, READY_TIMEOUT).await {
                return Err(pg.with_log_tail(
                    "the running PostgreSQL cluster does not answer",
                    err,
                    0,
                ));
            }
            pg.lease = Some(UserLease::take(&pg.data_dir)?);
            pg.done = false;
            return Ok(pg);
        }

        let pid_file = pg.data_dir.join("postmaster.pid");
        if pid_file.exists() {
            // No server is running: the pid file is stale (the postmaster was
            // killed, or the machine restarted). The postmaster would refuse
            // to start if that pid now belongs to another process (or is a
            // not yet reaped zombie), so remove it. Safe: if processes of the
            // old server were still attached to its shared memory, the new
            // postmaster refuses to start ("pre-existing shared memory block
            // is still in use"), which is retried below.
            tracing::warn!(path = %pid_file.display(), "removing stale postmaster.pid");
            std::fs::remove_file(&pid_file)
                .with_context(|| format!("removing stale {}", pid_file.display()))?;
        }
        // Likewise the socket and its lock file (`.s.PGSQL.<port>.lock`, also
        // holding the old pid) in the data directory, which is used only as
        // this cluster's socket directory.
        remove_stale_sockets(&pg.data_dir)?;

        if !has_cluster {
            pg.initdb(&bins, opts).await?;
        }

        let mut port = choose_port(&pg.data_dir)?;
        let mut attempt = 1;
        loop {
            match pg.pg_ctl_start(port, opts).await? {
                StartOutcome::Started => break,
                StartOutcome::Failed { err, .. } if attempt >= 3 => return Err(err),
                StartOutcome::Failed {
                    retry: Retry::OtherPort,
                    ..
                } => {
                    tracing::warn!(port, "port was taken meanwhile; retrying with another one");
                    port = pick_free_port()?;
                }
                StartOutcome::Failed {
                    retry: Retry::Later,
                    ..
                } => {
                    tracing::warn!("processes of a killed server are still exiting; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                StartOutcome::Failed {
                    retry: Retry::No,
                    err,
                } => return Err(err),
            }
            attempt += 1;
        }

        pg.port = port;
        pg.url = url_for_port(port, "postgres");
        pg.started_here = true;
        pg.done = false;
        if let Err(err) = pg.write_port_file() {
            tracing::warn!("could not remember the port: {err:#}");
        }
        if let Err(err) = wait_ready(&pg.url, READY_TIMEOUT).await {
            let err = pg.with_log_tail(
                &format!("PostgreSQL started on port {port} but does not accept connections"),
                err,
                0,
            );
            pg.done = true;
            let _ = pg.pg_ctl_stop().await;
            return Err(err);
        }
        // Not with `?`: dropping `pg` here would wait for the start lock this call holds.
        match UserLease::take(&pg.data_dir) {
            Ok(lease) => pg.lease = Some(lease),
            Err(err) => {
                pg.done = true;
                let _ = pg.pg_ctl_stop().await;
                return Err(err);
            }
        }
        tracing::info!(port, data_dir = %pg.data_dir.display(), "started local PostgreSQL");
        Ok(pg)
    }

    /// Connection URL of the `postgres` database, e.g.
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// URL for another database name on the same cluster.
    pub fn url_for(&self, database: &str) -> String {
        url_for_port(self.port, database)
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops using the cluster, and stops it (`pg_ctl stop -m fast`) when no
    /// other process uses it any more, whoever started it: the last one out
    /// stops it, also after the one that started it was killed.
    pub async fn stop(mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let _lock = StartLock::acquire(&self.data_dir, LOCK_TIMEOUT).await?;
        if users::others_remain(&self.data_dir, self.lease.take())? {
            tracing::info!(port = self.port, data_dir = %self.data_dir.display(), "leaving local PostgreSQL running: another process still uses it");
            return Ok(());
        }
        if !self.is_running().await? {
            return Ok(());
        }
        self.pg_ctl_stop().await
    }

    /// `pg_ctl stop -m immediate`: the server processes exit at once, without a checkpoint,
    /// as in a crash; the next [`LocalPostgres::start`] on the directory runs crash recovery
    /// (on the same port, if it is still free). For tests of what survives a database crash.
    pub async fn crash(mut self) -> Result<()> {
        self.done = true;
        let mut args = self.stop_args();
        if let Some(mode) = args.iter_mut().find(|a| *a == "fast") {
            *mode = "immediate".into();
        }
        tracing::info!(port = self.port, data_dir = %self.data_dir.display(), "pg_ctl stop -m immediate");
        run_checked(&self.run_as, &self.pg_ctl, &args).await?;
        Ok(())
    }

    /// Leave the cluster running when dropped, and stop counting as one of
    /// its users (the test helper shares one cluster between test processes).
    pub fn detach(mut self) {
        self.done = true;
        self.lease = None;
    }

    // ----- internals -------------------------------------------------------

    async fn initdb(&self, bins: &PgBins, opts: StartOptions) -> Result<()> {
        remove_own_leftovers(&self.data_dir)?;
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-A".into(),
            "trust".into(),
            "-U".into(),
            "postgres".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
        ];
        if opts.fast_unsafe {
            args.push("--no-sync".into());
        }
        tracing::info!(data_dir = %self.data_dir.display(), "initdb");
        run_checked(&self.run_as, &bins.initdb, &args).await?;
        Ok(())
    }

    async fn is_running(&self) -> Result<bool> {
        let args: Vec<OsString> = vec!["status".into(), "-D".into(), self.data_dir.clone().into()];
        let out = run(&self.run_as, &self.pg_ctl, &args).await?;
        // 0: running, 3: not running, 4: no (accessible) data directory.
        match out.status.code() {
            // pg_ctl only checks kill(pid, 0), which also succeeds for a
            // killed postmaster that its parent has not reaped yet.
            Some(0) => Ok(!self.postmaster_is_zombie()),
            Some(3) => Ok(false),
            _ => Err(command_error(&self.run_as, &self.pg_ctl, &args, &out)),
        }
    }

    /// The pid in postmaster.pid is a zombie or gone (Linux /proc; false when unknown).
    fn postmaster_is_zombie(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return false;
        };
        if !Path::new("/proc/self/stat").exists() {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // "pid (comm) STATE ...": the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
                .unwrap_or(false),
            Err(_) => true,
        }
    }

    /// Port of the running postmaster: line 4 of postmaster.pid, else the
    /// port file.
    fn running_port(&self) -> Result<u16> {
        let pid_file = self.data_dir.join("postmaster.pid");
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Some(port) = text.lines().nth(3).and_then(|l| l.trim().parse().ok()) {
                return Ok(port);
            }
        }
        read_port_file(&self.data_dir)
            .ok_or_else(|| anyhow!("no port in {} nor in {PORT_FILE}", pid_file.display()))
    }

    async fn pg_ctl_start(&self, port: u16, opts: StartOptions) -> Result<StartOutcome> {
        let log = self.data_dir.join(LOG_FILE);
        let log_offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        // The -o string goes through /bin/sh (pg_ctl runs `exec postgres ...`
        // with it), so only shell-safe values are put into it.
        let socket_dir = socket_dir_setting(&self.data_dir);
        let mut server_opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={socket_dir} \
             -c max_connections=200"
        );
        if opts.fast_unsafe {
            server_opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-l".into(),
            log.clone().into(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "-o".into(),
            server_opts.into(),
            "start".into(),
        ];
        tracing::info!(port, data_dir = %self.data_dir.display(), "pg_ctl start");
        let out = run(&self.run_as, &self.pg_ctl, &args).await?;
        if out.status.success() {
            return Ok(StartOutcome::Started);
        }
        let new_log = read_log_from(&log, log_offset);
        let retry = if new_log.contains("could not bind")
            || new_log.contains("could not create any TCP/IP sockets")
        {
            Retry::OtherPort
        } else if new_log.contains("is still in use") {
            Retry::Later
        } else {
            Retry::No
        };
        let err = command_error(&self.run_as, &self.pg_ctl, &args, &out);
        let err = self.with_log_tail("could not start PostgreSQL", err, log_offset);
        Ok(StartOutcome::Failed { err, retry })
    }

    async fn pg_ctl_stop(&self) -> Result<()> {
        let args = self.stop_args();
        tracing::info!(port = self.port, data_dir = %self.data_dir.display(), "pg_ctl stop");
        run_checked(&self.run_as, &self.pg_ctl, &args).await?;
        Ok(())
    }

    fn stop_args(&self) -> Vec<OsString> {
        vec![
            "stop".into(),
            "-D".into(),
            self.data_dir.clone().into(),
            "-m".into(),
            "fast".into(),
            "-w".into(),
            "-t".into(),
            "60".into(),
        ]
    }

    fn write_port_file(&self) -> Result<()> {
        let path = self.data_dir.join(PORT_FILE);
        std::fs::write(&path, format!("{}\n", self.port))
            .with_context(|| format!("writing {}", path.display()))?;
        if let RunAs::Postgres { uid, gid, .. } = &self.run_as {
            std::os::unix::fs::chown(&path, Some(*uid), Some(*gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    /// `what: err`, followed by the last lines of server.log (from `offset`).
    fn with_log_tail(&self, what: &str, err: anyhow::Error, offset: u64) -> anyhow::Error {
        let log = self.data_dir.join(LOG_FILE);
        let text = read_log_from(&log, offset);
        anyhow!(
            "{what}: {err:#}\n--- last lines of {} ---\n{}",
            log.display(),
            tail(&text, 30)
        )
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if self.done || !self.started_here {
            return;
        }
        self.done = true;
        // Blocking briefly is acceptable: a drop without `stop()` is the unusual path. When the
        // lock stays taken, the cluster is left running (the next one out stops it).
        let others = StartLock::acquire_sync(&self.data_dir, DROP_LOCK_TIMEOUT).and_then(|lock| {
            let others = users::others_remain(&self.data_dir, self.lease.take());
            drop(lock);
            others
        });
        match others {
            Ok(false) => {}
            Ok(true) => return,
            Err(err) => {
                tracing::warn!("leaving local PostgreSQL running: {err:#}");
                return;
            }
        }
        let (program, args) = self.run_as.argv(&self.pg_ctl, &self.stop_args());
        let result = std::process::Command::new(&program)
            .args(&args)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .output();
        match result {
            Ok(out) if out.status.success() => {}
            Ok(out) => tracing::warn!(
                "stopping local PostgreSQL in {} failed: {}",
                self.data_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(err) => tracing::warn!(
                "stopping local PostgreSQL in {} failed: {err}",
                self.data_dir.display()
            ),
        }
    }
}

enum StartOutcome {
    Started,
    Failed { err: anyhow::Error, retry: Retry },
}

enum Retry {
    No,
    /// The port was taken between choosing and binding it.
    OtherPort,
    /// Processes of a killed server are still attached to its shared memory.
    Later,
}

fn socket_dir_setting(data_dir: &Path) -> String {
    let bytes = data_dir.as_os_str().as_bytes();
    let safe = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+'));
    if safe && bytes.len() <= MAX_SOCKET_DIR_LEN {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        "''".to_string()
    }
}

fn read_log_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        // At most the last 64 KiB.
        let start = offset.max(len.saturating_sub(64 * 1024));
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    if all.is_empty() {
        "(empty)".to_string()
    } else {
        all[from..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::ready::select_one;
    use super::temp_dir::TempDir;
    use super::*;
    use sqlx::Connection;

    const FAST: StartOptions = StartOptions { fast_unsafe: true };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_stop_restart_keeps_data() -> Result<()> {
        let tmp = TempDir::new("restart")?;
        let dir = tmp.0.join("nested").join("pg");

        let pg = LocalPostgres::start_with(&dir, FAST).await?;
        assert!(pg.started_here);
        assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
        assert_eq!(
            pg.url_for("other"),
            format!("postgres://postgres@127.0.0.1:{}/other", pg.port())
        );
        let first_port = pg.port();
        let mut conn = sqlx::PgConnection::connect(pg.url()).await?;
        sqlx::query("CREATE TABLE kept (v text)")
            .execute(&mut conn)
            .await?;
        sqlx::query("INSERT INTO kept VALUES ('hello')")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        pg.stop().await?;
        assert!(!dir.join("postmaster.pid").exists(), "stopped");

        // Default (durable) options on restart.
        let pg = LocalPostgres::start(&dir).await?;
        assert!(pg.started_here);
        assert_eq!(pg.port(), first_port, "remembered port is reused");
        let mut conn = sqlx::PgConnection::connect(pg.url()).await?;
        let v: String = sqlx::query_scalar("SELECT v FROM kept")
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(v, "hello");
        conn.close().await?;
        pg.stop().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_starts_yield_one_cluster() -> Result<()> {
        let tmp = TempDir::new("concurrent")?;
        let dir = tmp.0.join("pg");
        let (a, b) = tokio::join!(
            tokio::spawn({
                let dir = dir.clone();
                async move { LocalPostgres::start_with(&dir, FAST).await }
            }),
            tokio::spawn({
                let dir = dir.clone();
                async move { LocalPostgres::start_with(&dir, FAST).await }
            }),
        );
        let (a, b) = (a??, b??);
        assert_eq!(a.port(), b.port());
        assert!(a.started_here ^ b.started_here, "exactly one started it");
        let (owner, other) = if a.started_here { (a, b) } else { (b, a) };

        // Stopping the non-owner leaves the cluster running.
        let url = other.url().to_string();
        other.stop().await?;
        select_one(&url).await?;
        // So does dropping a detached owner; a later start reuses it.
        owner.detach();
        let again = LocalPostgres::start(&dir).await?;
        assert!(!again.started_here);
        select_one(again.url()).await?;
        drop(again);
        select_one(&url).await?;

        // Clean up: a new value cannot stop it (not started here), so stop via pg_ctl.
        let bins = PgBins::find().await?;
        let run_as = RunAs::detect().await?;
        let pg = LocalPostgres {
            data_dir: std::fs::canonicalize(&dir)?,
            port: 0,
            url: String::new(),
            pg_ctl: bins.pg_ctl,
            run_as,
            started_here: true,
            done: false,
            lease: None,
        };
        pg.stop().await?;
        assert!(select_one(&url).await.is_err());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_postmaster_pid_does_not_block_start() -> Result<()> {
        let tmp = TempDir::new("stale")?;
        let dir = tmp.0.join("pg");
        let pg = LocalPostgres::start_with(&dir, FAST).await?;
        pg.stop().await?;

        // A pid that is (almost certainly) gone.
        let mut child = std::process::Command::new("true").spawn()?;
        let dead_pid = child.id();
        child.wait()?;
        let canonical = std::fs::canonicalize(&dir)?;
        std::fs::write(
            canonical.join("postmaster.pid"),
            format!(
                "{dead_pid}\n{}\n1700000000\n5432\n\n127.0.0.1\n  1234567     32768\nready   \n",
                canonical.display()
            ),
        )?;

        let pg = LocalPostgres::start_with(&dir, FAST).await?;
        assert!(pg.started_here);
        select_one(pg.url()).await?;

        // A postmaster killed with SIGKILL (its pid may stay a zombie for a
        // while, and its socket lock file stays behind).
        pg.detach();
        let pid = std::fs::read_to_string(canonical.join("postmaster.pid"))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()?;
        assert!(status.success());
        // SIGKILL is delivered asynchronously: wait until the process is gone or a zombie,
        // as it is when a crashed server is restarted.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let pg = LocalPostgres::start_with(&dir, FAST).await?;
        assert!(pg.started_here);
        select_one(pg.url()).await?;
        pg.stop().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_stops_cluster_started_here() -> Result<()> {
        let tmp = TempDir::new("drop")?;
        let dir = tmp.0.join("pg");
        let pg = LocalPostgres::start_with(&dir, FAST).await?;
        let url = pg.url().to_string();
        drop(pg);
        assert!(select_one(&url).await.is_err());
        assert!(!std::fs::canonicalize(&dir)?.join("postmaster.pid").exists());
        Ok(())
    }
}
