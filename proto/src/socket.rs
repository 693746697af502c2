//! Where the control socket lives, for both ends: the daemon binds what
//! these functions say and `syncctl` connects to the same thing, so the two
//! cannot drift apart.
//!
//! On Unix the socket is a file; on Windows it is a named pipe, and a path
//! that is not already a pipe name (`\\.\pipe\…`) is mapped to one.

use interprocess::local_socket::Name;
use std::path::{Path, PathBuf};

/// The socket used when neither the command line nor the configuration
/// names one: `$XDG_RUNTIME_DIR/syncd/syncd.sock` (a per-user directory the
/// login manager creates with mode 0700), else `/tmp/syncd-$UID/syncd.sock`.
/// On Windows: the named pipe `\\.\pipe\syncd-<user>`.
pub fn default_socket_path() -> PathBuf {
    #[cfg(unix)]
    {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("syncd").join("syncd.sock");
        }
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        // `/tmp` rather than `$TMPDIR`: a daemon started by the service
        // manager and a shell may see different `$TMPDIR`s, and both must
        // find the same socket.
        PathBuf::from(format!("/tmp/syncd-{uid}")).join("syncd.sock")
    }
    #[cfg(not(unix))]
    {
        let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".into());
        // A backslash is the one character a pipe name cannot hold.
        PathBuf::from(format!(r"\\.\pipe\syncd-{}", user.replace('\\', "_")))
    }
}

/// The local-socket name for a socket path: the file itself on Unix. On
/// Windows a pipe path (`\\.\pipe\…`) is used as is, and any other path (a
/// configuration written with a Unix path in mind) becomes a pipe named
/// after the whole path, so two different paths never share a pipe.
pub fn socket_name(path: &Path) -> std::io::Result<Name<'static>> {
    #[cfg(unix)]
    {
        use interprocess::local_socket::{GenericFilePath, ToFsName};
        path.to_path_buf().to_fs_name::<GenericFilePath>()
    }
    #[cfg(not(unix))]
    {
        use interprocess::local_socket::{GenericFilePath, GenericNamespaced, ToFsName, ToNsName};
        let text = path.to_string_lossy();
        if text.to_ascii_lowercase().starts_with(r"\\.\pipe\") {
            return path.to_path_buf().to_fs_name::<GenericFilePath>();
        }
        text.replace('\\', "/").to_ns_name::<GenericNamespaced>()
    }
}
