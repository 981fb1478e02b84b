//! The admin socket: a Unix domain socket at `admin.socket` (default
//! `state_dir/admin.sock`) where the `patgate` command reaches the running service (the
//! service holds the vault's lock, so the command cannot open the vault itself then):
//! - mode 0600, owned by the service user, from the moment its path exists: it is bound in a
//!   private (0700) directory, given its mode there, then renamed into place;
//! - every connection's peer is checked with `SO_PEERCRED`: only the service's own uid and
//!   root may talk, whatever the file's mode later becomes;
//! - a stale socket left by a crash is removed at start when nothing answers on it; when a
//!   live service answers, start is refused;
//! - removed at shutdown.
//!
//! The requests it answers are [`crate::adminsock`]'s.

use std::fs;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand_core::{OsRng, RngCore as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::adminsock::BODY_LIMIT;
use crate::error::{AdminError, Problem};
use crate::runtime::Current;

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    #[error(
        "another patgate answers on the admin socket {path}: it is serving (two services on one \
         vault are refused by the vault's lock; this one has another state directory but the \
         same admin.socket, so give each its own)",
        path = .path.display()
    )]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it with the admin socket", path = .path.display())]
    NotASocket { path: PathBuf },
    #[error("admin socket: cannot {action} {path}: {source}", path = .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> AdminSocketError + 'p {
    move |source| AdminSocketError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The bound admin socket. Dropping it removes the socket file (when it is still ours).
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The service's uid: the owner of the socket file it made.
    service_uid: u32,
    /// The file's identity, so a socket that replaced ours is never removed.
    dev_ino: (u64, u64),
}

impl AdminSocket {
    /// Binds the socket at `path` (see the module docs for how it is made private).
    pub async fn bind(path: &Path) -> Result<AdminSocket, AdminSocketError> {
        remove_stale(path).await?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io("create", parent))?;
        }
        // A private directory next to the final path (same file system, so the rename below
        // is atomic); nobody but us can reach a socket inside it while its mode is set.
        let private = parent.join(format!(".patgate-admin-{:016x}", OsRng.next_u64()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(io("create", &private))?;
        let bound = Self::bind_in(&private, path);
        let _ = fs::remove_dir(&private);
        let listener = bound?;
        let meta = fs::metadata(path).map_err(io("read", path))?;
        tracing::info!(path = %path.display(), "admin socket listening");
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
            service_uid: meta.uid(),
            dev_ino: (meta.dev(), meta.ino()),
        })
    }

    fn bind_in(private: &Path, path: &Path) -> Result<UnixListener, AdminSocketError> {
        let temp = private.join("admin.sock");
        let listener = UnixListener::bind(&temp).map_err(io("bind", &temp))?;
        let placed = fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))
            .map_err(io("set the mode of", &temp))
            .and_then(|()| fs::rename(&temp, path).map_err(io("move the socket to", path)));
        if placed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        placed.map(|()| listener)
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.dev_ino)
            .unwrap_or(false);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes a socket file nobody answers on; refuses when a service answers.
async fn remove_stale(path: &Path) -> Result<(), AdminSocketError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("read", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(AdminSocketError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(AdminSocketError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale admin socket (nothing answers on it)");
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io("remove the stale socket", path)(e))
                }
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("connect to the existing socket", path)(e)),
    }
}

/// Whether a peer may use the admin socket: the service's own user, or root.
pub fn peer_allowed(peer_uid: u32, service_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == service_uid
}

/// Serves the admin socket until `stop` changes, then removes the socket file.
pub(super) async fn serve(
    socket: AdminSocket,
    current: Arc<Current>,
    mut stop: watch::Receiver<bool>,
) {
    // Commands in flight finish before shutdown goes on: the vault they use is flushed and
    // closed after this returns (and a command run right after sees it closed).
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "admin socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let peer_uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(err) => {
                tracing::warn!(error = %err, "admin socket: cannot read the peer's credentials; closing");
                continue;
            }
        };
        let service_uid = socket.service_uid;
        let allowed = peer_allowed(peer_uid, service_uid);
        if !allowed {
            tracing::warn!(
                peer_uid,
                service_uid,
                "admin socket: refused a peer that is neither the service user nor root"
            );
        }
        let current = current.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let runtime = current.load();
                async move {
                    let answer = if allowed {
                        crate::adminsock::handle(&runtime, req, peer_uid).await
                    } else {
                        Err(AdminError::PeerRefused {
                            peer_uid,
                            service_uid,
                        })
                    };
                    Ok::<_, std::convert::Infallible>(
                        answer.unwrap_or_else(|err| Problem::of(&err).into_response(None)),
                    )
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(BODY_LIMIT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
    drop(socket);
    let runtime = current.load();
    let grace = runtime.config().service.shutdown_grace;
    let clock = runtime.clock().clone();
    drop(runtime);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = clock.sleep(grace) => {
            tracing::warn!("admin socket: a command was still running when the grace period ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_service_user_and_root_are_allowed() {
        assert!(peer_allowed(0, 998));
        assert!(peer_allowed(998, 998));
        assert!(!peer_allowed(1000, 998));
        assert!(!peer_allowed(65534, 998));
        // Running as root, root is the service user.
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1, 0));
    }
}
