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

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};

/// Name of the file (inside the data directory) remembering the port.
const PORT_FILE: &str = "memberledger.port";
/// Server log written by `pg_ctl -l` (inside the data directory).
const LOG_FILE: &str = "server.log";
/// How long to wait for `SELECT 1` after `pg_ctl start` returned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for another process that is starting the same cluster.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// A lock file (fallback lock only) older than this is considered stale.
const STALE_LOCK_AGE: Duration = Duration::from_secs(120);
/// Longest data directory path used as unix socket directory
/// (`<dir>/.s.PGSQL.<port>` must fit in `sun_path`, 108 bytes).
const MAX_SOCKET_DIR_LEN: usize = 90;

const NOT_FOUND_MSG: &str =
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL \
     (e.g. `apt-get install postgresql`) or set DATABASE_URL";

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
/// Dropping it stops the cluster if this value started it, unless
/// [`LocalPostgres::detach`] was called.
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

    /// `pg_ctl stop -m fast`, if this value started the cluster; a cluster
    /// that was found running is left alone.
    pub async fn stop(mut self) -> Result<()> {
        if self.done || !self.started_here {
            self.done = true;
            return Ok(());
        }
        self.done = true;
        self.pg_ctl_stop().await
    }

    /// Leave the cluster running when dropped (the test helper shares one
    /// cluster between test processes).
    pub fn detach(mut self) {
        self.done = true;
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

fn url_for_port(port: u16, database: &str) -> String {
    let mut db = String::with_capacity(database.len());
    for b in database.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            db.push(char::from(b));
        } else {
            db.push_str(&format!("%{b:02X}"));
        }
    }
    format!("postgres://postgres@127.0.0.1:{port}/{db}")
}

/// Value for `unix_socket_directories`: the data directory when its path is
/// short and shell-safe, else empty (TCP only; `pg_ctl -w` does not need the
/// socket since it watches postmaster.pid).
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

// ----- binaries --------------------------------------------------------------

#[derive(Debug, Clone)]
struct PgBins {
    bindir: PathBuf,
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl PgBins {
    async fn find() -> Result<PgBins> {
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

fn find_on_path(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

// ----- running as the postgres user when root ----------------------------------

#[derive(Debug, Clone)]
enum RunAs {
    /// Not root: run the binaries directly.
    CurrentUser,
    /// Root: run them as the `postgres` system user.
    Postgres { uid: u32, gid: u32, via: Switch },
}

#[derive(Debug, Clone)]
enum Switch {
    Runuser(PathBuf),
    Setpriv(PathBuf),
    Su(PathBuf),
}

impl RunAs {
    async fn detect() -> Result<RunAs> {
        if current_euid().await? != 0 {
            return Ok(RunAs::CurrentUser);
        }
        let (uid, gid) = lookup_user("postgres").ok_or_else(|| {
            anyhow!(
                "running as root, and PostgreSQL refuses to run as root, but there is no \
                 `postgres` system user to run it as: install PostgreSQL from the distribution \
                 (e.g. `apt-get install postgresql`, which creates that user), run as a \
                 non-root user, or set DATABASE_URL"
            )
        })?;
        let mut tried = Vec::new();
        let candidates = [
            find_on_path("runuser", &["/usr/sbin", "/sbin"]).map(Switch::Runuser),
            find_on_path("setpriv", &["/usr/bin", "/bin"]).map(Switch::Setpriv),
            find_on_path("su", &["/usr/bin", "/bin"]).map(Switch::Su),
        ];
        for via in candidates.into_iter().flatten() {
            let run_as = RunAs::Postgres { uid, gid, via };
            // Probe it: PAM may refuse runuser/su in some containers.
            match run(&run_as, Path::new("true"), &[]).await {
                Ok(out) if out.status.success() => return Ok(run_as),
                Ok(out) => tried.push(format!(
                    "{:?}: {}",
                    run_as,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(err) => tried.push(format!("{run_as:?}: {err:#}")),
            }
        }
        bail!(
            "running as root: PostgreSQL must run as the `postgres` user, but no way to switch \
             to it worked (runuser, setpriv, su): {}",
            if tried.is_empty() {
                "none of them is installed".to_string()
            } else {
                tried.join("; ")
            }
        )
    }

    /// Program and arguments that run `program args` as this user.
    fn argv(&self, program: &Path, args: &[OsString]) -> (OsString, Vec<OsString>) {
        match self {
            RunAs::CurrentUser => (program.as_os_str().to_owned(), args.to_vec()),
            RunAs::Postgres { via, .. } => match via {
                Switch::Runuser(runuser) => {
                    let mut all: Vec<OsString> =
                        vec!["-u".into(), "postgres".into(), "--".into(), program.into()];
                    all.extend(args.iter().cloned());
                    (runuser.clone().into(), all)
                }
                Switch::Setpriv(setpriv) => {
                    let mut all: Vec<OsString> = vec![
                        "--reuid=postgres".into(),
                        "--regid=postgres".into(),
                        "--init-groups".into(),
                        "--".into(),
                        program.into(),
                    ];
                    all.extend(args.iter().cloned());
                    (setpriv.clone().into(), all)
                }
                Switch::Su(su) => {
                    let mut script = OsString::from("exec ");
                    script.push(shell_quote(program.as_os_str()));
                    for arg in args {
                        script.push(" ");
                        script.push(shell_quote(arg));
                    }
                    let all: Vec<OsString> = vec![
                        "-s".into(),
                        "/bin/sh".into(),
                        "postgres".into(),
                        "-c".into(),
                        script,
                    ];
                    (su.clone().into(), all)
                }
            },
        }
    }
}

fn shell_quote(s: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    OsStr::from_bytes(&out).to_owned()
}

/// Effective uid, from /proc/self/status (no libc), else `id -u`.
async fn current_euid() -> Result<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // Uid: real effective saved fs
            if let Some(euid) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                return Ok(euid);
            }
        }
    }
    let out = tokio::process::Command::new("id")
        .arg("-u")
        .output()
        .await
        .context("running `id -u`")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing the output of `id -u`")
}

/// (uid, gid) of a user, from /etc/passwd, else `id`.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == name {
                return Some((fields[2].parse().ok()?, fields[3].parse().ok()?));
            }
        }
    }
    let id = |flag: &str| -> Option<u32> {
        let out = std::process::Command::new("id")
            .args([flag, name])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Makes `data_dir` absolute, creates its parents (and itself, mode 0700).
/// Returns the canonical path.
fn prepare_dirs(data_dir: &Path, run_as: &RunAs) -> Result<PathBuf> {
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
fn ensure_owned_by(data_dir: &Path, uid: u32, gid: u32) -> Result<()> {
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
async fn check_accessible(data_dir: &Path, run_as: &RunAs, uid: u32, gid: u32) -> Result<()> {
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
fn remove_stale_sockets(data_dir: &Path) -> Result<()> {
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
fn remove_own_leftovers(data_dir: &Path) -> Result<()> {
    for name in [PORT_FILE, LOG_FILE] {
        let path = data_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

// ----- ports ------------------------------------------------------------------

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn pick_free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn read_port_file(data_dir: &Path) -> Option<u16> {
    std::fs::read_to_string(data_dir.join(PORT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The remembered port if it is free, else a new free one.
fn choose_port(data_dir: &Path) -> Result<u16> {
    match read_port_file(data_dir) {
        Some(port) if port != 0 && port_is_free(port) => Ok(port),
        _ => pick_free_port(),
    }
}

// ----- readiness ----------------------------------------------------------------

async fn select_one(url: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    conn.close().await?;
    if one != 1 {
        bail!("SELECT 1 returned {one}");
    }
    Ok(())
}

/// Waits until a TCP connection and `SELECT 1` succeed.
async fn wait_ready(url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let err = match tokio::time::timeout(Duration::from_secs(5), select_one(url)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => format!("{err:#}"),
            Err(_) => "connection attempt timed out".to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "`SELECT 1` on {url} did not succeed within {}s: {err}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ----- commands ---------------------------------------------------------------

fn display_cmd(run_as: &RunAs, program: &Path, args: &[OsString]) -> String {
    let (program, args) = run_as.argv(program, args);
    let mut s = program.to_string_lossy().into_owned();
    for arg in args {
        s.push(' ');
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '"', '\'']) {
            s.push_str(&format!("{arg:?}"));
        } else {
            s.push_str(&arg);
        }
    }
    s
}

async fn run(run_as: &RunAs, program: &Path, args: &[OsString]) -> Result<Output> {
    let (prog, all) = run_as.argv(program, args);
    tokio::process::Command::new(&prog)
        .args(&all)
        // `postgres` may not be able to enter the caller's working directory.
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST")
        .env_remove("PGOPTIONS")
        .output()
        .await
        .with_context(|| format!("running `{}`", display_cmd(run_as, program, args)))
}

async fn run_checked(run_as: &RunAs, program: &Path, args: &[OsString]) -> Result<Output> {
    let out = run(run_as, program, args).await?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_error(run_as, program, args, &out))
    }
}

fn command_error(run_as: &RunAs, program: &Path, args: &[OsString], out: &Output) -> anyhow::Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let detail = if stderr.trim().is_empty() {
        stdout.trim().to_string()
    } else {
        stderr.trim().to_string()
    };
    anyhow!(
        "`{}` failed ({}): {}",
        display_cmd(run_as, program, args),
        out.status,
        tail(&detail, 30)
    )
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

// ----- serializing concurrent starts ------------------------------------------------

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
enum StartLock {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Socket {
        /// Held, never read: closing it releases the lock.
        _listener: std::os::unix::net::UnixListener,
    },
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    File(PathBuf),
}

impl StartLock {
    async fn acquire(data_dir: &Path, timeout: Duration) -> Result<StartLock> {
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
    use sqlx::Connection;

    /// A fresh directory under the system temp dir (world-traversable, so
    /// this also works as root), removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Result<TempDir> {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)?
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "memberledger-localpg-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            Ok(TempDir(dir))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const FAST: StartOptions = StartOptions { fast_unsafe: true };

    #[test]
    fn url_encoding() {
        assert_eq!(
            url_for_port(5432, "postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            url_for_port(1, "a b/c"),
            "postgres://postgres@127.0.0.1:1/a%20b%2Fc"
        );
    }

    #[test]
    fn su_quoting() {
        assert_eq!(
            shell_quote(OsStr::new("it's")),
            OsString::from("'it'\\''s'")
        );
    }

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

    /// As root: every way of switching to `postgres` that is installed works
    /// and passes arguments through unchanged.
    #[tokio::test]
    async fn switch_user_methods() -> Result<()> {
        if current_euid().await? != 0 {
            return Ok(());
        }
        let Some((uid, gid)) = lookup_user("postgres") else {
            return Ok(());
        };
        let switches = [
            find_on_path("runuser", &["/usr/sbin", "/sbin"]).map(Switch::Runuser),
            find_on_path("setpriv", &["/usr/bin", "/bin"]).map(Switch::Setpriv),
            find_on_path("su", &["/usr/bin", "/bin"]).map(Switch::Su),
        ];
        for via in switches.into_iter().flatten() {
            let run_as = RunAs::Postgres { uid, gid, via };
            let args: Vec<OsString> = vec![
                "-c".into(),
                "id -un; echo \"$1\"".into(),
                "sh".into(),
                "it's a \"test\"".into(),
            ];
            let out = run_checked(&run_as, Path::new("/bin/sh"), &args).await?;
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "postgres\nit's a \"test\"\n",
                "{run_as:?}"
            );
        }
        Ok(())
    }

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
