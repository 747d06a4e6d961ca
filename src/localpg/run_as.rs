//! Running `initdb`/`pg_ctl` as the `postgres` user when the caller is root
//! (PostgreSQL refuses to run as root).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{anyhow, bail, Context, Result};
use nix::unistd::{geteuid, User};

use super::bins::find_on_path;
use super::tail;

#[derive(Debug, Clone)]
pub(super) enum RunAs {
    /// Not root: run the binaries directly.
    CurrentUser,
    /// Root: run them as the `postgres` system user.
    Postgres { uid: u32, gid: u32, via: Switch },
}

#[derive(Debug, Clone)]
pub(super) enum Switch {
    Runuser(PathBuf),
    Setpriv(PathBuf),
    Su(PathBuf),
}

impl RunAs {
    pub(super) async fn detect() -> Result<RunAs> {
        if !geteuid().is_root() {
            return Ok(RunAs::CurrentUser);
        }
        let (uid, gid) = lookup_user("postgres")?.ok_or_else(|| {
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
    pub(super) fn argv(&self, program: &Path, args: &[OsString]) -> (OsString, Vec<OsString>) {
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

/// (uid, gid) of a user, from the system's user database (NSS).
pub(super) fn lookup_user(name: &str) -> Result<Option<(u32, u32)>> {
    let user = User::from_name(name).with_context(|| format!("looking up the user `{name}`"))?;
    Ok(user.map(|u| (u.uid.as_raw(), u.gid.as_raw())))
}

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

pub(super) async fn run(run_as: &RunAs, program: &Path, args: &[OsString]) -> Result<Output> {
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

pub(super) async fn run_checked(
    run_as: &RunAs,
    program: &Path,
    args: &[OsString],
) -> Result<Output> {
    let out = run(run_as, program, args).await?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_error(run_as, program, args, &out))
    }
}

pub(super) fn command_error(
    run_as: &RunAs,
    program: &Path,
    args: &[OsString],
    out: &Output,
) -> anyhow::Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn su_quoting() {
        assert_eq!(
            shell_quote(OsStr::new("it's")),
            OsString::from("'it'\\''s'")
        );
    }

    /// As root: every way of switching to `postgres` that is installed works
    /// and passes arguments through unchanged.
    #[tokio::test]
    async fn switch_user_methods() -> Result<()> {
        if !geteuid().is_root() {
            return Ok(());
        }
        let Some((uid, gid)) = lookup_user("postgres")? else {
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
}
