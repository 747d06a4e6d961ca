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
