//! A blocking client of the control socket: connect, send a request, read
//! its response. `syncctl` uses it, and so can tests.
//!
//! It only moves messages: it never retries, never asks the user anything
//! and never interprets a response beyond the protocol check.

use crate::{
    ClientMessage, ProtoError, Request, Response, ServerMessage, decode, encode, peek_header, read_frame, socket_name,
    write_frame,
};
use interprocess::local_socket::Stream;
use interprocess::local_socket::traits::Stream as _;
use std::path::{Path, PathBuf};

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: it is missing, or a file left by a
    /// daemon that is gone.
    #[error("no daemon answers at {}: {source}", socket.display())]
    NotRunning { socket: PathBuf, source: std::io::Error },
    /// Something is there but we may not connect (permissions, a path that
    /// is not a socket).
    #[error("cannot connect to {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: std::io::Error },
    /// The daemon answered in another protocol version.
    #[error("{}", crate::version_mismatch_message(crate::PROTOCOL_VERSION, crate::VERSION, *daemon_protocol, daemon_version))]
    VersionMismatch { daemon_protocol: u32, daemon_version: String },
    /// The connection broke or the answer was malformed.
    #[error("talking to syncd: {0}")]
    Protocol(#[from] ProtoError),
}

impl ClientError {
    /// Whether the daemon is simply not running (as opposed to broken).
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }
}

/// One connection to the daemon; it can carry several requests in turn.
pub struct Client {
    stream: Stream,
}

impl Client {
    /// Connects to the socket at `socket`.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let connect_error = |source: std::io::Error| {
            use std::io::ErrorKind::{ConnectionRefused, NotFound};
            let socket = socket.to_path_buf();
            if matches!(source.kind(), NotFound | ConnectionRefused) {
                ClientError::NotRunning { socket, source }
            } else {
                ClientError::Connect { socket, source }
            }
        };
        let name = socket_name(socket).map_err(connect_error)?;
        let stream = Stream::connect(name).map_err(connect_error)?;
        Ok(Client { stream })
    }

    /// Sends one request and waits for its response, however long the
    /// daemon takes (a sync or a restore answers when it is done).
    pub fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, &encode(&ClientMessage::new(request)))?;
        let frame = read_frame(&mut self.stream)?;
        let mismatch =
            |protocol, version| ClientError::VersionMismatch { daemon_protocol: protocol, daemon_version: version };
        match decode::<ServerMessage>(&frame) {
            Ok(answer) if answer.protocol == crate::PROTOCOL_VERSION => Ok(answer.response),
            Ok(answer) => Err(mismatch(answer.protocol, answer.daemon_version)),
            // Undecodable: another protocol if its header says so, else garbage.
            Err(e) => match peek_header(&frame) {
                Some(header) if !header.is_compatible() => Err(mismatch(header.protocol, header.version)),
                _ => Err(e.into()),
            },
        }
    }
}

/// Connects, sends one request and returns its response.
pub fn request(socket: &Path, request: Request) -> Result<Response, ClientError> {
    Client::connect(socket)?.request(request)
}
