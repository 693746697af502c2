//! Who this peer is: a random 128-bit peer id made on first start and kept in
//! the state directory, and the name shown to other peers.

use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Identity {
    /// 32 lowercase hex characters.
    pub peer_id: String,
    pub name: String,
    pub host: String,
}

impl Identity {
    /// Loads the peer id from `<state_dir>/peer_id`, creating it on first use.
    pub fn load_or_create(state_dir: &Path, name: String) -> std::io::Result<Identity> {
        std::fs::create_dir_all(state_dir)?;
        let file = state_dir.join("peer_id");
        let peer_id = match std::fs::read_to_string(&file) {
            Ok(s) if is_peer_id(s.trim()) => s.trim().to_string(),
            Ok(s) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} holds {:?}, not a peer id: delete it to make a new one", file.display(), s.trim()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id: String = rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect();
                let tmp = state_dir.join(".peer_id.tmp");
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(id.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &file)?;
                id
            }
            Err(e) => return Err(e),
        };
        Ok(Identity { peer_id, name, host: crate::config::host_name() })
    }
}

pub fn is_peer_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
