//! The api listener's data plane: one thread per core, each with a current-thread tokio
//! runtime and a socket of its own on the api address (`SO_REUSEPORT`).
//!
//! The kernel spreads new connections over the sockets (by a hash of their addresses), and
//! the thread whose socket took a connection does everything for it: the TLS handshake,
//! every request, the pipeline, the call to the host on a connection of that core's
//! upstream pool ([`crate::cores`]). No request is handed from one thread to another, so a
//! request costs no cross-thread wake-up, and the work-stealing scheduler's bookkeeping is
//! gone. What the cores share is reached without a lock held across an await: the runtime in
//! force (a read lock for one `Arc` clone), the connection caps (atomics and a short mutex),
//! the vault (sled), the replay cache, rate limits and holds (short critical sections;
//! docs/architecture.md has the table).
//!
//! The admin and connect listeners, the admin socket and the background flushes stay on the
//! process's main runtime: they are not on the request path.
//!
//! `SO_REUSEPORT` lets any process of the same user bind the address too and take a share
//! of its connections. patgate's service user owns nothing else, so nothing else can; a
//! second patgate started by mistake under that user would share the port instead of
//! failing to bind (both would answer correctly, from the same vault rules).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::runtime::Current;

use super::limits::Gate;

/// The api listener's sockets, bound before the server runs: one per core, all on one
/// address.
#[derive(Debug)]
pub struct ApiSockets {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

/// Connections that wait in a socket's accept queue (tokio's own default).
const BACKLOG: u32 = 1024;

impl ApiSockets {
    /// `cores` sockets listening on `addr` (at least one). With port 0 the first takes a free
    /// port and the others join it there.
    pub fn bind(addr: SocketAddr, cores: usize) -> io::Result<ApiSockets> {
        let mut sockets = Vec::with_capacity(cores.max(1));
        let mut at = addr;
        for _ in 0..cores.max(1) {
            let socket = if at.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(at)?;
            let listener = socket.listen(BACKLOG)?.into_std()?;
            at = listener.local_addr()?;
            sockets.push(listener);
        }
        Ok(ApiSockets { sockets, addr: at })
    }

    /// The address they listen on (the port chosen, when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many cores they are for.
    pub fn cores(&self) -> usize {
        self.sockets.len()
    }
}

/// The running cores, from [`start`] to [`Cores::finish`].
pub(super) struct Cores {
    /// Each core's accept loop says here that it closed its socket.
    closed: Vec<oneshot::Receiver<()>>,
    /// Turns true when the cores' runtimes may end: every connection is done or cut.
    exit: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What every core's accept loop and connections are given: see [`super::api::serve`].
pub(super) struct Shared {
    pub(super) current: Arc<Current>,
    pub(super) gate: Arc<Gate>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) cut: watch::Receiver<bool>,
    /// Turns true when the sockets are to close (shutdown has begun).
    pub(super) closing: watch::Receiver<bool>,
}

/// Starts a thread per socket, named `patgate-core-{n}`, each serving the api listener on
/// its socket until `shared.closing` turns true, then its connections until
/// [`Cores::finish`]. A core whose thread or runtime cannot be made (the process's thread
/// or descriptor limit) is served on the main runtime instead, with an error logged: the
/// listener works, without that core's gain.
pub(super) fn start(sockets: ApiSockets, shared: &Shared) -> Cores {
    let (exit, exit_rx) = watch::channel(false);
    let mut closed = Vec::with_capacity(sockets.sockets.len());
    let mut threads = Vec::with_capacity(sockets.sockets.len());
    for (index, socket) in sockets.sockets.into_iter().enumerate() {
        let (done, done_rx) = oneshot::channel();
        closed.push(done_rx);
        let core = Core {
            index,
            socket,
            current: shared.current.clone(),
            gate: shared.gate.clone(),
            stop: shared.stop.clone(),
            cut: shared.cut.clone(),
            closing: shared.closing.clone(),
            done,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(core = index, error = %err, "cannot make a data-plane core's runtime; its socket is served on the main runtime");
                tokio::spawn(core.accept());
                continue;
            }
        };
        let exit = exit_rx.clone();
        // The thread takes the core from here; if the thread cannot be made, the core is
        // still here and is served on the main runtime.
        let handover = Arc::new(std::sync::Mutex::new(Some(core)));
        let taken = handover.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("patgate-core-{index}"))
            .spawn(move || {
                let core = taken.lock().ok().and_then(|mut core| core.take());
                if let Some(core) = core {
                    crate::cores::enter(core.index);
                    runtime.block_on(core.serve(exit));
                }
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(err) => {
                tracing::error!(core = index, error = %err, "cannot start a data-plane core's thread; its socket is served on the main runtime");
                let core = handover.lock().ok().and_then(|mut core| core.take());
                if let Some(core) = core {
                    tokio::spawn(core.accept());
                }
            }
        }
    }
    Cores {
        closed,
        exit,
        threads,
    }
}

impl Cores {
    /// Completes once every core's socket is closed: new connections are refused from then
    /// on, while the connections each core holds go on.
    pub(super) async fn closed(&mut self) {
        for closed in &mut self.closed {
            // An error is a core that ended already (its sender is gone): closed too.
            let _ = closed.await;
        }
    }

    /// Ends the cores' runtimes (their connections are done or cut by now) and waits for
    /// their threads.
    pub(super) async fn finish(self) {
        let _ = self.exit.send(true);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a data-plane core's thread panicked");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::error!("waiting for the data-plane cores failed");
        }
    }
}

/// One core: its socket and what its accept loop needs.
struct Core {
    index: usize,
    socket: std::net::TcpListener,
    current: Arc<Current>,
    gate: Arc<Gate>,
    stop: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
    closing: watch::Receiver<bool>,
    done: oneshot::Sender<()>,
}

impl Core {
    /// The accept loop on the runtime this runs on, until closing; then says so.
    async fn accept(self) {
        let Core {
            index,
            socket,
            current,
            gate,
            stop,
            cut,
            mut closing,
            done,
        } = self;
        match TcpListener::from_std(socket) {
            Ok(listener) => {
                let closing = async move {
                    let _ = closing.wait_for(|closing| *closing).await;
                };
                super::api::serve(current, listener, gate, stop, cut, closing).await;
            }
            Err(err) => {
                tracing::error!(core = index, error = %err, "a data-plane core cannot take its socket");
            }
        }
        let _ = done.send(());
    }

    /// The core's whole life on its own thread: the accept loop, then its connections until
    /// `exit` turns true.
    async fn serve(self, mut exit: watch::Receiver<bool>) {
        self.accept().await;
        let _ = exit.wait_for(|exit| *exit).await;
    }
}
