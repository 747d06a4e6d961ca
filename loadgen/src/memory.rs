//! `loadgen rss`: a process's peak and current resident memory.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::RssArgs;
use crate::results::write_result;

/// (VmHWM, VmRSS) in kB.
pub fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// A command that ran to its end: its output, wall time and peak resident memory.
pub struct Measured {
    pub stdout: String,
    pub wall_s: f64,
    /// Peak resident memory (VmHWM), sampled every 100 ms; 0 when never read.
    pub peak_rss_kb: u64,
}

/// Runs `command` to its end, sampling its peak resident memory every 100 ms; fails when it
/// fails (with what it printed) or outlasts `timeout`. `what` names it in errors.
pub async fn run_measured(
    mut command: tokio::process::Command,
    timeout: std::time::Duration,
    what: &str,
) -> Result<Measured> {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let output = tokio::spawn(async move {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
        (out, err)
    });
    let mut peak = 0u64;
    let status = loop {
        if let Some((hwm, _)) = pid.and_then(proc_memory) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill().await;
            anyhow::bail!("{what} did not finish within {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall_s = started.elapsed().as_secs_f64();
    let (out, err) = output.await.unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out).into_owned();
    if !status.success() {
        anyhow::bail!(
            "{what} failed ({status}):\n{stdout}\n{}",
            String::from_utf8_lossy(&err)
        );
    }
    Ok(Measured {
        stdout,
        wall_s,
        peak_rss_kb: peak,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssResult {
    pub pid: u32,
    pub vm_hwm_kb: u64,
    pub vm_rss_kb: u64,
}

pub fn rss(args: &RssArgs) -> Result<()> {
    let (hwm, rss) = proc_memory(args.pid)
        .with_context(|| format!("no memory figures in /proc/{}/status", args.pid))?;
    println!(
        "pid {}: peak RSS (VmHWM) {:.1} MB, current {:.1} MB",
        args.pid,
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    write_result(
        &args.common,
        &args.name,
        &RssResult {
            pid: args.pid,
            vm_hwm_kb: hwm,
            vm_rss_kb: rss,
        },
    )
}
