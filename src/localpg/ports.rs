//! Choosing the TCP port, and remembering it in the data directory.

use std::path::Path;

use anyhow::{Context, Result};

use super::PORT_FILE;

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub(super) fn pick_free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

pub(super) fn read_port_file(data_dir: &Path) -> Option<u16> {
    std::fs::read_to_string(data_dir.join(PORT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The remembered port if it is free, else a new free one.
pub(super) fn choose_port(data_dir: &Path) -> Result<u16> {
    match read_port_file(data_dir) {
        Some(port) if port != 0 && port_is_free(port) => Ok(port),
        _ => pick_free_port(),
    }
}
