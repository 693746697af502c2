//! The folder hub: a directory that OneDrive, Dropbox, Syncthing or a network
//! share keeps in sync between machines.
//!
//! Every write goes to a temporary name with a leading dot (which readers
//! ignore), is flushed to disk, then renamed into place, so no reader ever
//! sees half a file under its final name. This module never writes outside
//! the hub root, never creates the root itself (a missing root is an
//! unmounted share, not an empty hub), and never replaces a file through
//! [`Hub::put_new`].

use super::{Hub, HubEntry, HubError};
use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

/// A hub in a local (or locally mounted) folder. See the module doc.
pub struct FolderHub {
    url: String,
    root: PathBuf,
}

impl FolderHub {
    /// Opens a folder hub; the root must exist (a missing root is usually
    /// an unmounted share or a cloud folder not synced yet).
    pub fn open(url: &str, root: &Path) -> Result<FolderHub, HubError> {
        let hub = FolderHub { url: url.to_string(), root: native_root(root) };
        hub.check_root()?;
        Ok(hub)
    }

    fn check_root(&self) -> Result<(), HubError> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(self.unreachable("it is a file, not a folder: point the hub URL at a folder")),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(self.unreachable("the folder does not exist: create the folder or mount the share"))
            }
            Err(e) => Err(self.unreachable(&format!("{e}: check the folder, or mount the share again"))),
        }
    }

    fn unreachable(&self, reason: &str) -> HubError {
        HubError::Unreachable { url: self.url.clone(), reason: format!("{}: {reason}", self.root.display()) }
    }

    /// The local path of a hub path.
    fn path(&self, rel: &str) -> Result<PathBuf, HubError> {
        check_hub_path(rel)?;
        Ok(self.root.join(rel))
    }

    /// A local path of a hub file, with its folder (which must exist to write).
    fn file_path(&self, rel: &str) -> Result<(PathBuf, PathBuf), HubError> {
        let path = self.path(rel)?;
        match (rel.is_empty(), path.parent()) {
            (false, Some(dir)) => Ok((dir.to_path_buf(), path.clone())),
            _ => Err(HubError::Io { path: rel.into(), reason: "a hub file needs a name".into() }),
        }
    }

    /// Maps an I/O error on `rel`. Any error while the root is gone means
    /// the share is offline (transient), not that the file is missing.
    fn io(&self, rel: &str, e: io::Error) -> HubError {
        if let Err(offline) = self.check_root() {
            return offline;
        }
        match e.kind() {
            ErrorKind::NotFound => HubError::NotFound(rel.to_string()),
            // A network share that stopped answering while its mount point
            // is still there.
            ErrorKind::TimedOut
            | ErrorKind::NotConnected
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::StaleNetworkFileHandle => self.unreachable(&e.to_string()),
            _ => HubError::Io { path: rel.to_string(), reason: e.to_string() },
        }
    }

    /// Creates the folders of a file below the (existing) root.
    fn create_parent(&self, rel: &str, dir: &Path) -> Result<(), HubError> {
        // Checked first so that an unmounted share's empty mount point is not
        // filled with folders that would hide the real hub once mounted.
        self.check_root()?;
        fs::create_dir_all(dir).map_err(|e| self.io(rel, e))
    }

    /// Writes a synced temporary file beside `dest` with `fill`, and returns
    /// its path; nothing is left behind on failure.
    fn write_temp(
        &self,
        rel: &str,
        dir: &Path,
        dest: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<PathBuf, HubError> {
        self.create_parent(rel, dir)?;
        let tmp = temp_path_beside(dest);
        let mut file = File::create(&tmp).map_err(|e| self.io(rel, e))?;
        if let Err(e) = fill(&mut file).and_then(|()| file.sync_all()) {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(self.io(rel, e));
        }
        Ok(tmp)
    }

    /// Moves a finished temporary file onto `dest`, replacing it.
    fn commit(&self, rel: &str, tmp: &Path, dir: &Path, dest: &Path) -> Result<(), HubError> {
        if let Err(e) = rename_replacing(tmp, dest) {
            let _ = fs::remove_file(tmp);
            return Err(self.io(rel, e));
        }
        sync_dir(dir);
        Ok(())
    }
}

/// Refuses a hub path that could leave the hub root: hub paths come from
/// our own code, but one that climbs out (or names a drive or a stream on
/// Windows) must never be used. The empty path is the root.
pub(super) fn check_hub_path(rel: &str) -> Result<(), HubError> {
    let is_bad_component = |c: &str| c.is_empty() || c == "." || c == ".." || c.contains(['\\', ':', '\0']);
    if !rel.is_empty() && rel.split('/').any(is_bad_component) {
        return Err(HubError::Io { path: rel.into(), reason: "invalid hub path".into() });
    }
    Ok(())
}

/// A temporary name beside `dest` that every reader skips (a leading dot)
/// and that no other writer picks (a random part).
pub(super) fn temp_path_beside(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()))
}

/// `file:///C:/hub` reaches us as `/C:/hub`; Windows needs `C:/hub`.
fn native_root(root: &Path) -> PathBuf {
    #[cfg(windows)]
    if let Some(s) = root.to_str() {
        let b = s.as_bytes();
        if b.len() >= 3 && b[0] == b'/' && b[1].is_ascii_alphabetic() && b[2] == b':' {
            return PathBuf::from(&s[1..]);
        }
    }
    root.to_path_buf()
}

/// Renames over an existing file.
fn rename_replacing(from: &Path, to: &Path) -> io::Result<()> {
    // On Windows a cloud client or a virus scanner often holds the target
    // open for a moment, which makes the rename fail with "access denied";
    // a few short retries ride that out.
    #[cfg(windows)]
    for wait_ms in [20u64, 50, 100, 200, 400] {
        match fs::rename(from, to) {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                std::thread::sleep(std::time::Duration::from_millis(wait_ms))
            }
            other => return other,
        }
    }
    fs::rename(from, to)
}

/// Makes a rename durable where the platform allows syncing a folder.
fn sync_dir(dir: &Path) {
    // Best effort: the file itself is already synced, and a lost rename only
    // means the write is redone (batches stay in the outbox until listed).
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Copies `from` into `file` and returns nothing; `fs::copy` would not let us
/// sync the same handle (Windows needs write access to flush).
fn copy_into(from: &Path, file: &mut File) -> io::Result<()> {
    let mut src = File::open(from)?;
    io::copy(&mut src, file)?;
    Ok(())
}

impl FolderHub {
    /// The entries of a hub folder; `None` when the folder does not exist
    /// (yet) while the hub root does.
    fn read_dir(&self, dir: &str) -> Result<Option<fs::ReadDir>, HubError> {
        match fs::read_dir(self.path(dir)?) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.check_root()?;
                Ok(None)
            }
            Err(e) => Err(self.io(dir, e)),
        }
    }
}

impl Hub for FolderHub {
    fn url(&self) -> &str {
        &self.url
    }

    fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<HubEntry>, HubError> {
        let Some(read) = self.read_dir(dir)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| self.io(dir, e))?;
            // A name that is not UTF-8 was not written by syncd.
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.starts_with('.') || after.is_some_and(|a| name.as_str() <= a) {
                continue;
            }
            // Deleted between the listing and now, or not a plain file.
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
        let Some(read) = self.read_dir(dir)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| self.io(dir, e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if !name.starts_with('.') && entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, HubError> {
        fs::read(self.path(path)?).map_err(|e| self.io(path, e))
    }

    fn get_to_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        let src = self.path(path)?;
        let local_err = |e: io::Error| HubError::Io { path: local.display().to_string(), reason: e.to_string() };
        // Opened first so that a missing hub file is NotFound, not a local error.
        let mut from = File::open(&src).map_err(|e| self.io(path, e))?;
        let tmp = temp_path_beside(local);
        let mut to = File::create(&tmp).map_err(local_err)?;
        let copied = io::copy(&mut from, &mut to).map_err(|e| self.io(path, e)).and_then(|_| {
            to.sync_all().map_err(local_err)?;
            drop(to);
            fs::rename(&tmp, local).map_err(local_err)
        });
        if copied.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        copied
    }

    fn put_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), HubError> {
        let (dir, dest) = self.file_path(path)?;
        let tmp = self.write_temp(path, &dir, &dest, |f| f.write_all(bytes))?;
        self.commit(path, &tmp, &dir, &dest)
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<(), HubError> {
        let (dir, dest) = self.file_path(path)?;
        let tmp = self.write_temp(path, &dir, &dest, |f| f.write_all(bytes))?;
        // A hard link fails if the name exists, so there is no window
        // between the check and the write; the temporary name goes after.
        let result = match fs::hard_link(&tmp, &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(HubError::AlreadyExists(path.to_string())),
            // Filesystems without hard links (FAT, some network shares and
            // FUSE mounts): check, then rename. The race this leaves needs
            // two writers of one file, which the hub layout rules out.
            Err(_) => match fs::symlink_metadata(&dest) {
                Ok(_) => Err(HubError::AlreadyExists(path.to_string())),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return self.commit(path, &tmp, &dir, &dest);
                }
                Err(e) => Err(self.io(path, e)),
            },
        };
        let _ = fs::remove_file(&tmp);
        if result.is_ok() {
            sync_dir(&dir);
        }
        result
    }

    fn put_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        let (dir, dest) = self.file_path(path)?;
        // A missing local file is our caller's problem, not a missing hub file.
        if let Err(e) = fs::metadata(local) {
            return Err(HubError::Io { path: local.display().to_string(), reason: e.to_string() });
        }
        let tmp = self.write_temp(path, &dir, &dest, |f| copy_into(local, f))?;
        self.commit(path, &tmp, &dir, &dest)
    }

    fn delete(&self, path: &str) -> Result<(), HubError> {
        match fs::remove_file(self.path(path)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => self.check_root(),
            Err(e) => Err(self.io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hub = FolderHub::open("file://x", dir.path()).unwrap();
        for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "C:/x", "a\\..\\b"] {
            assert!(matches!(hub.path(bad), Err(HubError::Io { .. })), "{bad}");
        }
        assert!(hub.path("db/peer/changes/1.chg").is_ok());
    }

    #[test]
    fn a_write_into_an_unmounted_share_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        fs::create_dir(&root).unwrap();
        let hub = FolderHub::open("file://share", &root).unwrap();
        fs::remove_dir(&root).unwrap();
        let err = hub.put_atomic("db/p/peer.json", b"{}").unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(!root.exists());
        assert!(hub.list("db/p", None).unwrap_err().is_transient());
        assert!(hub.get("db/p/peer.json").unwrap_err().is_transient());
    }

    #[test]
    fn a_failed_put_new_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let hub = FolderHub::open("file://x", dir.path()).unwrap();
        hub.put_new("db/p/changes/1.chg", b"a").unwrap();
        assert!(matches!(hub.put_new("db/p/changes/1.chg", b"b"), Err(HubError::AlreadyExists(_))));
        let names: Vec<_> =
            fs::read_dir(dir.path().join("db/p/changes")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["1.chg"]);
    }
}
