//! The folder hub: a directory that OneDrive, Dropbox, Syncthing or a network
//! share keeps in sync between machines.
//!
//! Every write goes to a temporary name with a leading dot (which readers
//! and cloud clients' conflict handling ignore), is flushed to disk, then
//! renamed into place, so no reader ever sees half a file under its final
//! name. This module never writes outside the hub root.

use super::{Hub, HubEntry, HubError};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

pub struct FolderHub {
    url: String,
    root: PathBuf,
}

impl FolderHub {
    /// Opens a folder hub; the root must exist (a missing root is usually
    /// an unmounted share or a cloud folder not synced yet).
    pub fn open(url: &str, root: &Path) -> Result<FolderHub, HubError> {
        let hub = FolderHub { url: url.to_string(), root: root.to_path_buf() };
        hub.check_root()?;
        Ok(hub)
    }

    fn check_root(&self) -> Result<(), HubError> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(self.unreachable("it is a file, not a folder")),
            Err(e) => Err(self.unreachable(&format!("{e}: create the folder or mount the share"))),
        }
    }

    fn unreachable(&self, reason: &str) -> HubError {
        HubError::Unreachable { url: self.url.clone(), reason: format!("{}: {reason}", self.root.display()) }
    }

    fn path(&self, rel: &str) -> Result<PathBuf, HubError> {
        // Hub paths come from our own code, but a path that climbs out of the
        // root must never be followed.
        if rel.split('/').any(|c| c == ".." || c.is_empty()) && !rel.is_empty() {
            return Err(HubError::Io { path: rel.into(), reason: "invalid hub path".into() });
        }
        Ok(self.root.join(rel))
    }

    fn io(&self, rel: &str, e: std::io::Error) -> HubError {
        if e.kind() == ErrorKind::NotFound {
            if self.check_root().is_err() {
                return self.unreachable("the hub folder vanished");
            }
            return HubError::NotFound(rel.to_string());
        }
        HubError::Io { path: rel.to_string(), reason: e.to_string() }
    }

    /// Writes `bytes` to a temporary file beside `final_path`, synced.
    fn write_temp(&self, rel: &str, final_path: &Path, bytes: &[u8]) -> Result<PathBuf, HubError> {
        let dir = final_path.parent().expect("hub paths have a folder");
        self.check_root()?;
        fs::create_dir_all(dir).map_err(|e| self.io(rel, e))?;
        let name = final_path.file_name().expect("hub paths have a name").to_string_lossy();
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let mut f = File::create(&tmp).map_err(|e| self.io(rel, e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io(rel, e)
        })?;
        Ok(tmp)
    }
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; not possible (nor needed) on every platform.
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

impl Hub for FolderHub {
    fn url(&self) -> &str {
        &self.url
    }

    fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<HubEntry>, HubError> {
        let path = self.path(dir)?;
        let read = match fs::read_dir(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.check_root()?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.io(dir, e)),
        };
        let mut out = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| self.io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || after.is_some_and(|a| name.as_str() <= a) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(HubEntry { name, size: meta.len(), modified: meta.modified().ok() });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, HubError> {
        let path = self.path(dir)?;
        let read = match fs::read_dir(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.check_root()?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.io(dir, e)),
        };
        let mut out: Vec<String> = read
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        out.sort();
        Ok(out)
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, HubError> {
        fs::read(self.path(path)?).map_err(|e| self.io(path, e))
    }

    fn get_to_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        let src = self.path(path)?;
        let tmp = local.with_extension("part");
        fs::copy(&src, &tmp).map_err(|e| self.io(path, e))?;
        fs::rename(&tmp, local).map_err(|e| HubError::Io { path: local.display().to_string(), reason: e.to_string() })
    }

    fn put_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), HubError> {
        let dest = self.path(path)?;
        let tmp = self.write_temp(path, &dest, bytes)?;
        fs::rename(&tmp, &dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io(path, e)
        })?;
        sync_dir(dest.parent().expect("hub paths have a folder"));
        Ok(())
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<(), HubError> {
        let dest = self.path(path)?;
        let tmp = self.write_temp(path, &dest, bytes)?;
        // A hard link fails if the name exists: no check-then-write race.
        let linked = fs::hard_link(&tmp, &dest);
        let result = match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(HubError::AlreadyExists(path.to_string())),
            // Filesystems without hard links (some network shares, FAT).
            Err(_) if dest.exists() => Err(HubError::AlreadyExists(path.to_string())),
            Err(_) => fs::rename(&tmp, &dest).map_err(|e| self.io(path, e)),
        };
        let _ = fs::remove_file(&tmp);
        if result.is_ok() {
            sync_dir(dest.parent().expect("hub paths have a folder"));
        }
        result
    }

    fn put_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        let dest = self.path(path)?;
        let dir = dest.parent().expect("hub paths have a folder");
        self.check_root()?;
        fs::create_dir_all(dir).map_err(|e| self.io(path, e))?;
        let name = dest.file_name().expect("hub paths have a name").to_string_lossy();
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let copied = fs::copy(local, &tmp).and_then(|_| File::open(&tmp)?.sync_all());
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(path, e));
        }
        fs::rename(&tmp, &dest).map_err(|e| self.io(path, e))?;
        sync_dir(dir);
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<(), HubError> {
        match fs::remove_file(self.path(path)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(path, e)),
        }
    }
}
