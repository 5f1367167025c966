//! The few sysctls the node needs. `/proc/sys/net` is the writer's own network
//! namespace, so under `nsenter --net` these affect that node only.

use std::{io, path::PathBuf};

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

pub fn read(key: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(path(key))?.trim().to_owned())
}

/// Writes `value` unless it is already set; returns whether it changed.
pub fn ensure(key: &str, value: &str) -> io::Result<bool> {
    if read(key)? == value {
        return Ok(false);
    }
    std::fs::write(path(key), value)?;
    Ok(true)
}
