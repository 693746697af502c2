//! One daemon per state directory: a second one would publish under the same
//! peer id and apply batches twice.

use crate::once::RunError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// Held for the daemon's lifetime; the operating system releases it when the
/// process ends, however it ends, so a crash leaves no stale lock.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<StateLock, RunError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| RunError::usage(format!("cannot create the state directory {}: {e}", state_dir.display())))?;
        let path = state_dir.join("syncd.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| RunError::usage(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(RunError::usage(format!(
                    "another syncd (pid {}) is already running on the state directory {}: stop it first, \
                     or give this one its own state_dir",
                    pid.trim(),
                    state_dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(RunError::usage(format!("cannot lock {}: {e}", path.display())));
            }
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(StateLock { _file: file })
    }
}
