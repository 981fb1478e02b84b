//! `patgate-bench`: the tools behind `benches/compare.sh` and BENCHMARKS.md.
//!
//! - `load`: the load generator. Fixed concurrency, each worker on its own keep-alive
//!   connection (HTTP/1.1 or HTTP/2) or a new mutual-TLS connection per request; every request
//!   signed with a fresh nonce (Ed25519 or HMAC-SHA256) as the Jira app signs, spread over N
//!   users; one JSON line with req/s, latency percentiles, errors by status and the target
//!   process's CPU time per request.
//! - `hold`: holds idle mutual-TLS connections and signed POSTs whose bodies drip one byte a
//!   second, then times signed reads (new connections and one kept-alive) while they are
//!   held; one JSON line (`benches/hold.sh`).
//! - `upstream`: a fast HTTPS stand-in for a git host on loopback.
//! - `setup`: certificates, app keys, master key, a vault holding N users' PATs, and a
//!   patgate config in front of the `upstream`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use patgate::client::{sign_request, Outgoing};
use patgate::devpki::{ClientName, DevCa};
use patgate::signature::SigningKey;
use patgate::vault::{Credential, MasterKey, PatMeta, Vault};
use secrecy::SecretString;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug, Parser)]
#[command(
    name = "patgate-bench",
    about = "Load generator and benchmark fixtures for patgate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive load at a URL and print one JSON line of results.
    Load(Box<LoadArgs>),
    /// Hold idle connections and slow bodies open, and time signed reads meanwhile.
    Hold(HoldArgs),
    /// Serve a fast HTTPS stand-in for a git host; prints its address on the first line.
    Upstream(UpstreamArgs),
    /// Make certificates, app keys, a master key, a vault with N users' PATs and a config.
    Setup(SetupArgs),
    /// Time the replay cache's first-use check: PostgreSQL's round trip and this process's
    /// memory, one after the other; prints one JSON line.
    Nonces(NoncesArgs),
}

#[derive(Debug, Args)]
struct NoncesArgs {
    /// A file holding the PostgreSQL connection string (migrated: `patgate store migrate`).
    #[arg(long)]
    store_url_file: PathBuf,
    /// First uses to time, per store.
    #[arg(long, default_value_t = 20_000)]
    count: u32,
    /// Checks in flight at once.
    #[arg(short, long, default_value_t = 1)]
    concurrency: u32,
    /// Clock ticks per second (`getconf CLK_TCK`), for this process's CPU per check.
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The full URL, e.g. https://127.0.0.1:8443/git/bench/api/v3/repos/acme/api/git/refs
    url: String,
    /// A label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Requests in flight at once (one worker each).
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    /// How long to measure, in seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of load before the measured window (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// HTTP/2 instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// A new connection (TCP + full mutual-TLS handshake) for every request.
    #[arg(long)]
    new_connection: bool,
    /// The method; POST when there is a body, else GET.
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// The request body (Content-Type application/json).
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// An extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Send no signature and no Patgate-Account (for nginx and the upstream itself).
    #[arg(long)]
    plain: bool,
    /// The app's Ed25519 private key (PKCS#8 PEM).
    #[arg(long, conflicts_with = "hmac_key")]
    key: Option<PathBuf>,
    /// An HMAC-SHA256 secret file (base64) instead of an Ed25519 key.
    #[arg(long)]
    hmac_key: Option<PathBuf>,
    /// The key id the signatures name.
    #[arg(long, default_value = "bench-app")]
    keyid: String,
    /// How many users the requests are spread over (round robin).
    #[arg(long, default_value_t = 1000)]
    users: u32,
    /// The client certificate (PEM; may also hold its private key).
    #[arg(long)]
    cert: PathBuf,
    /// The client certificate's key, when not in --cert.
    #[arg(long)]
    cert_key: Option<PathBuf>,
    /// The CA that signed the target's server certificate.
    #[arg(long)]
    cacert: PathBuf,
    /// The TLS server name to expect.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The target's process id: its CPU time (user+sys, /proc/PID/stat) over the measured
    /// window is reported per request, with its resident set size at the end.
    #[arg(long)]
    pid: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// The upstream's port on 127.0.0.1: the TCP connections the `--pid` processes hold
    /// open to it at the end of the window are reported.
    #[arg(long)]
    upstream_port: Option<u16>,
}

#[derive(Debug, Args)]
struct HoldArgs {
    /// patgate's api listener, e.g. https://127.0.0.1:8443 (no path).
    origin: String,
    /// Connections that complete mutual TLS and then send nothing.
    #[arg(long, default_value_t = 5000)]
    idle: usize,
    /// Correctly signed POSTs whose body is sent one byte a second.
    #[arg(long, default_value_t = 5000)]
    slow: usize,
    /// Signed reads timed on new connections, and again on one kept-alive connection.
    #[arg(long, default_value_t = 20)]
    reads: usize,
    /// Connections opened at once while building up.
    #[arg(long, default_value_t = 200)]
    parallel: usize,
    /// The integration path prefix.
    #[arg(long, default_value = "/git/bench")]
    prefix: String,
    /// The CA of patgate's server certificate, then the client certificate (PEM) and its
    /// key file when that is separate.
    #[arg(long)]
    cacert: PathBuf,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    cert_key: Option<PathBuf>,
    /// The app's Ed25519 private key (PKCS#8 PEM) and the key id its signatures name.
    #[arg(long)]
    key: PathBuf,
    #[arg(long, default_value = "bench-app")]
    keyid: String,
}

#[derive(Debug, Args)]
struct UpstreamArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// Worker threads (default: tokio's, one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Also answer the same way in plain HTTP/1.1 here (a second reference for a proxy
    /// whose upstream needs no TLS); its address is printed on a second line.
    #[arg(long)]
    plain_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct SetupArgs {
    /// Where to write everything.
    #[arg(long)]
    dir: PathBuf,
    /// The address patgate listens on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The port of `patgate-bench upstream` on 127.0.0.1.
    #[arg(long)]
    upstream_port: u16,
    /// How many users get a stored PAT.
    #[arg(long, default_value_t = 1000)]
    users: u32,
    /// Make only the vault (the certificates and keys already exist in --dir).
    #[arg(long)]
    reuse_pki: bool,
    /// Where patgate's admin listener (/ready, /metrics) listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// The config file to write (default: DIR/patgate.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The state directory (default: DIR/state).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Keep the vault in PostgreSQL instead of sled (`[store] kind = "postgres"`, plain TCP):
    /// a file holding the connection string. The schema is migrated first.
    #[arg(long)]
    store_url_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Upstream(a) => a.threads,
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("patgate-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Load(args) => load(*args).await,
            Command::Hold(args) => hold(args).await,
            Command::Upstream(args) => upstream(args).await,
            Command::Setup(args) => setup(args).await,
            Command::Nonces(args) => nonces(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("patgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

// ---------------------------------------------------------------------------------------
// hold

/// A TLS 1.3 client trusting `cacert` and presenting `cert` (its key in `cert_key`, or in
/// `cert` itself).
fn client_tls(
    cacert: &std::path::Path,
    cert: &std::path::Path,
    cert_key: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig> {
    let roots = patgate::tls::root_store(cacert).map_err(|e| e.to_string())?;
    let chain = patgate::tls::load_certs(cert).map_err(|e| e.to_string())?;
    let private =
        patgate::tls::load_private_key(cert_key.unwrap_or(cert)).map_err(|e| e.to_string())?;
    rustls::ClientConfig::builder_with_provider(patgate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)
        .map_err(|e| format!("client certificate: {e}"))
}

/// A mutual-TLS client for `hold`, HTTP/1.1.
fn hold_tls(args: &HoldArgs) -> Result<TlsConnector> {
    let mut config = client_tls(&args.cacert, &args.cert, args.cert_key.as_deref())?;
    // Every connection a full handshake, as an attacker's would be.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

type HoldStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn hold_connect(tls: &TlsConnector, addr: SocketAddr) -> Result<HoldStream> {
    use tokio::io::AsyncWriteExt;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    stream.flush().await.map_err(|e| e.to_string())?;
    Ok(stream)
}

/// A signed request as HTTP/1.1 bytes: the head, and the body separately.
fn hold_request(
    key: &SigningKey,
    url: &str,
    authority: &str,
    body: Option<&str>,
) -> Result<(String, Bytes)> {
    let out = Outgoing {
        method: if body.is_some() {
            Method::POST
        } else {
            Method::GET
        },
        url: url.to_string(),
        headers: Vec::new(),
        body: body.map(|b| Bytes::from(b.to_string())),
        account: Some(account(0)),
    };
    let request = sign_request(key, &out, patgate::clock::unix_now()).map_err(|e| e.to_string())?;
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nhost: {authority}\r\n",
        request.method()
    );
    for (name, value) in request.headers() {
        head.push_str(&format!(
            "{name}: {}\r\n",
            value.to_str().unwrap_or_default()
        ));
    }
    if let Some(body) = body {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    Ok((head, out.body.unwrap_or_default()))
}

/// Reads one answer's status line and headers (the reads answer small JSON bodies with a
/// Content-Length, read in full), answering the status.
async fn hold_answer(stream: &mut HoldStream) -> Result<u16> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            return text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| "no status".to_string());
        }
    }
}

/// One signed read on `stream`, answering its status.
async fn hold_read(
    key: &SigningKey,
    url: &str,
    authority: &str,
    stream: &mut HoldStream,
) -> Result<u16> {
    use tokio::io::AsyncWriteExt;
    let (head, _) = hold_request(key, url, authority, None)?;
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    hold_answer(stream).await
}

async fn hold(args: HoldArgs) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin: Uri = args.origin.parse().map_err(|e| format!("{e}"))?;
    let authority = origin
        .authority()
        .ok_or("the origin needs a host and port")?
        .to_string();
    let addr: SocketAddr = tokio::net::lookup_host(authority.as_str())
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let tls = hold_tls(&args)?;
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&args.key).map_err(|e| format!("{}: {e}", args.key.display()))?,
    );
    let key = SigningKey::ed25519_from_pkcs8_pem(&args.keyid, &pem).map_err(|e| e.to_string())?;
    let base = format!("https://{authority}{}", args.prefix);
    let read_url = format!("{base}/api/v3/repos/acme/api/git/refs/heads/main");
    let post_url = format!("{base}/api/v3/repos/acme/api/git/refs");
    let body = r#"{"ref":"refs/heads/PROJ-1-a-branch-name-long-enough-to-drip-for-minutes-while-the-reads-are-timed","sha":"aa218f56b14c9653891f9e74264a383fa43fefbd","note":"padding padding padding padding padding padding padding padding padding padding padding padding padding padding padding"}"#;

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Holders that the server closed (or that failed to open) before the reads were done.
    let lost = Arc::new(AtomicUsize::new(0));
    let open_failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.parallel.max(1)));
    let mut holders = tokio::task::JoinSet::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for i in 0..args.idle + args.slow {
        let slow = i >= args.idle;
        let (tls, gate, mut stop, lost, open_failed, opened) = (
            tls.clone(),
            gate.clone(),
            stop.clone(),
            lost.clone(),
            open_failed.clone(),
            opened_tx.clone(),
        );
        let request = if slow {
            Some(hold_request(&key, &post_url, &authority, Some(body))?)
        } else {
            None
        };
        holders.spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut stream = match hold_connect(&tls, addr).await {
                Ok(stream) => stream,
                Err(_) => {
                    open_failed.fetch_add(1, Ordering::Relaxed);
                    let _ = opened.send(());
                    return;
                }
            };
            let mut next_byte = 0;
            if let Some((head, _)) = &request {
                if stream.write_all(head.as_bytes()).await.is_err() {
                    open_failed.fetch_add(1, Ordering::Relaxed);
                    let _ = opened.send(());
                    return;
                }
            }
            drop(permit);
            let _ = opened.send(());
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    read = stream.read(&mut buf) => {
                        // An answer or a close before the end: the server let go.
                        let _ = read;
                        lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    _ = tick.tick(), if request.is_some() => {
                        let (_, body) = request.as_ref().expect("slow");
                        if next_byte < body.len() {
                            if stream.write_all(&body[next_byte..=next_byte]).await.is_err() {
                                lost.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            next_byte += 1;
                        }
                    }
                }
            }
        });
    }
    drop(opened_tx);
    for _ in 0..args.idle + args.slow {
        opened_rx.recv().await;
    }
    let build_up = started.elapsed();

    let mut fresh = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut kept = fresh.clone();
    let mut statuses = BTreeMap::<u16, u64>::new();
    let mut keep_alive = hold_connect(&tls, addr).await?;
    for _ in 0..args.reads {
        // A new client: the handshake counts.
        let t0 = Instant::now();
        let mut stream = hold_connect(&tls, addr).await?;
        let status = hold_read(&key, &read_url, &authority, &mut stream).await?;
        fresh.saturating_record(t0.elapsed().as_nanos() as u64);
        *statuses.entry(status).or_default() += 1;
        let t0 = Instant::now();
        let status = hold_read(&key, &read_url, &authority, &mut keep_alive).await?;
        kept.saturating_record(t0.elapsed().as_nanos() as u64);
        *statuses.entry(status).or_default() += 1;
    }
    let lost_during_reads = lost.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    while holders.join_next().await.is_some() {}
    let ms = |h: &Histogram<u64>, q: f64| round(h.value_at_quantile(q) as f64 / 1e6, 2);
    let line = serde_json::json!({
        "idle": args.idle,
        "slow": args.slow,
        "held_open": args.idle + args.slow - open_failed.load(Ordering::Relaxed) - lost_during_reads,
        "open_failed": open_failed.load(Ordering::Relaxed),
        "closed_by_server_while_reading": lost_during_reads,
        "build_up_s": round(build_up.as_secs_f64(), 1),
        "reads": args.reads,
        "statuses": statuses,
        "new_connection_ms": {"p50": ms(&fresh, 0.5), "max": round(fresh.max() as f64 / 1e6, 2)},
        "kept_alive_ms": {"p50": ms(&kept, 0.5), "max": round(kept.max() as f64 / 1e6, 2)},
    });
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// load

/// What every worker shares.
struct Plan {
    uri: Uri,
    url: String,
    method: Method,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    key: Option<SigningKey>,
    users: u32,
    http2: bool,
    new_connection: bool,
    tls: TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    addr: SocketAddr,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Plan {
    async fn connect(&self) -> Result<Sender> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let io = TokioIo::new(tls);
        if self.http2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H2(send))
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H1(send))
        }
    }

    /// The request for the `n`th call: signed with a fresh nonce for user `n % users`.
    fn request(&self, n: u64) -> Result<Request<Full<Bytes>>> {
        let mut request = match &self.key {
            Some(key) => {
                let out = Outgoing {
                    method: self.method.clone(),
                    url: self.url.clone(),
                    headers: self.headers.clone(),
                    body: self.body.clone(),
                    account: Some(account(n % u64::from(self.users))),
                };
                sign_request(key, &out, patgate::clock::unix_now()).map_err(|e| e.to_string())?
            }
            None => {
                let mut request = Request::new(Full::new(self.body.clone().unwrap_or_default()));
                *request.method_mut() = self.method.clone();
                *request.uri_mut() = self.uri.clone();
                for (name, value) in &self.headers {
                    let name = http::header::HeaderName::try_from(name.as_str())
                        .map_err(|e| format!("header `{name}`: {e}"))?;
                    let value = HeaderValue::try_from(value.as_str())
                        .map_err(|e| format!("header `{name}`: {e}"))?;
                    request.headers_mut().append(name, value);
                }
                if self.body.is_some() {
                    request
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                request
            }
        };
        if !self.http2 {
            // HTTP/1.1 sends the origin form and a Host header (the signature covers the
            // full target URI, which the server rebuilds from both).
            let authority = self.uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let host = HeaderValue::try_from(authority).map_err(|e| e.to_string())?;
            request.headers_mut().insert(HOST, host);
            let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            *request.uri_mut() = path.parse().map_err(|e| format!("{e}"))?;
        }
        Ok(request)
    }
}

fn account(i: u64) -> String {
    format!("5b10ac8d82e05b22{i:08x}")
}

async fn send(sender: &mut Sender, request: Request<Full<Bytes>>) -> Result<u16> {
    let response = match sender {
        Sender::H1(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(request).await
        }
        Sender::H2(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(request).await
        }
    }
    .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

struct Phase {
    /// Requests that complete before this instant are counted.
    measure_from: Instant,
    /// No request starts after this instant.
    stop_at: Option<Instant>,
    /// Or: stop after this many counted requests in total.
    budget: Option<Arc<std::sync::atomic::AtomicU64>>,
}

async fn worker(plan: Arc<Plan>, phase: Arc<Phase>, id: u64, step: u64) -> (Histogram<u64>, Tally) {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    let mut n = id;
    loop {
        let start = Instant::now();
        if phase.stop_at.is_some_and(|stop| start >= stop) {
            break;
        }
        if let Some(budget) = &phase.budget {
            if start >= phase.measure_from
                && budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |left| left.checked_sub(1),
                    )
                    .is_err()
            {
                break;
            }
        }
        let outcome = async {
            let request = plan.request(n)?;
            let mut current = match sender.take() {
                Some(s) if !plan.new_connection => s,
                _ => plan.connect().await?,
            };
            let status = send(&mut current, request).await?;
            if !plan.new_connection {
                sender = Some(current);
            }
            Ok::<u16, String>(status)
        }
        .await;
        let end = Instant::now();
        n += step;
        if start < phase.measure_from {
            continue;
        }
        match outcome {
            Ok(status) if (200..300).contains(&status) => {
                tally.ok += 1;
                let nanos = u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX);
                histogram.saturating_record(nanos);
            }
            Ok(status) => *tally.errors.entry(status.to_string()).or_default() += 1,
            Err(e) => {
                let kind = e.split(':').next().unwrap_or("error").to_string();
                *tally.errors.entry(kind).or_default() += 1;
            }
        }
    }
    (histogram, tally)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let get = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| "unexpected /proc/PID/stat".to_string())
    };
    Ok(get(14)? + get(15)?)
}

/// The context switches (voluntary and not) of every thread of a process so far. A thread
/// that ended takes its count with it: the target's threads live as long as it does.
fn context_switches(pid: u32) -> Result<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("/proc/{pid}/task: {e}"))?;
    let mut total = 0;
    for task in tasks {
        let path = task.map_err(|e| e.to_string())?.path().join("status");
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// The established TCP connections process `pid` holds to port `port` (its sockets, by
/// inode, found in its network namespace's /proc tables).
fn connections_to(pid: u32, port: u16) -> Result<u64> {
    let mut inodes = std::collections::HashSet::new();
    let fds =
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("/proc/{pid}/fd: {e}"))?;
    for fd in fds.flatten() {
        // A descriptor may close between the listing and the read.
        let Ok(link) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|l| l.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "01" && remote_port == Some(port) && inodes.contains(*inode) {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// VmRSS and VmHWM of a process, in KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

async fn load(args: LoadArgs) -> Result<()> {
    let uri: Uri = args
        .url
        .parse()
        .map_err(|e| format!("`{}` is not a URL: {e}", args.url))?;
    let authority = uri.authority().ok_or("the URL needs a host and port")?;
    let port = authority.port_u16().unwrap_or(443);
    let host = authority.host();
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let mut config = client_tls(&args.cacert, &args.cert, args.cert_key.as_deref())?;
    // A new connection per request means a full handshake each time, as the issue asks.
    if args.new_connection {
        config.resumption = rustls::client::Resumption::disabled();
    }
    config.alpn_protocols = vec![if args.http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let server_name = rustls::pki_types::ServerName::try_from(args.server_name.clone())
        .map_err(|e| format!("--server-name: {e}"))?;
    let key = if args.plain {
        None
    } else if let Some(path) = &args.key {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        Some(
            SigningKey::ed25519_from_pkcs8_pem(&args.keyid, &pem)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        )
    } else if let Some(path) = &args.hmac_key {
        let secret = patgate::runtime::read_private_base64_file(path)?;
        Some(
            SigningKey::hmac(&args.keyid, &secret)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        )
    } else {
        return Err("--key or --hmac-key is required unless --plain".into());
    };
    let body = args.data.clone().map(Bytes::from);
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())?,
        None if body.is_some() => Method::POST,
        None => Method::GET,
    };
    let headers = args
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("`{h}` is not `Name: value`"))
        })
        .collect::<Result<Vec<_>>>()?;
    let plan = Arc::new(Plan {
        uri,
        url: args.url.clone(),
        method,
        headers,
        body,
        key,
        users: args.users.max(1),
        http2: args.http2,
        new_connection: args.new_connection,
        tls: TlsConnector::from(Arc::new(config)),
        server_name,
        addr,
    });
    // One request first: a target that refuses everything is an error, not a figure.
    let mut probe = plan.connect().await?;
    let status = send(&mut probe, plan.request(u64::MAX / 2)?).await?;
    if !(200..300).contains(&status) {
        return Err(format!("the target answers {status} to the first request"));
    }
    drop(probe);

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let phase = Arc::new(Phase {
        measure_from,
        stop_at: match args.requests {
            Some(_) => None,
            None => Some(measure_from + Duration::from_secs_f64(args.duration.max(0.1))),
        },
        budget: args
            .requests
            .map(|n| Arc::new(std::sync::atomic::AtomicU64::new(n))),
    });
    let concurrency = args.concurrency.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..concurrency {
        tasks.spawn(worker(
            plan.clone(),
            phase.clone(),
            id as u64,
            concurrency as u64,
        ));
    }
    // The target's CPU time over the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = args
        .pid
        .iter()
        .map(|&p| cpu_ticks(p))
        .collect::<Result<Vec<_>>>()?;
    let switches_before = args
        .pid
        .iter()
        .map(|&p| context_switches(p))
        .sum::<Result<u64>>()?;
    let window_start = Instant::now();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut tally = Tally::default();
    let mut window_end = None;
    let mut cpu_after = Vec::new();
    let mut switches_after = 0;
    let mut rss = (0, 0);
    let mut upstream_connections = 0;
    while let Some(done) = tasks.join_next().await {
        if window_end.is_none() {
            // The first worker to finish marks the end of the window (the others finish the
            // request they have in flight).
            window_end = Some(Instant::now());
            cpu_after = args
                .pid
                .iter()
                .map(|&p| cpu_ticks(p))
                .collect::<Result<Vec<_>>>()?;
            switches_after = args
                .pid
                .iter()
                .map(|&p| context_switches(p))
                .sum::<Result<u64>>()?;
            for &p in &args.pid {
                let (now, peak) = rss_kib(p)?;
                rss = (rss.0 + now, rss.1 + peak);
                if let Some(port) = args.upstream_port {
                    upstream_connections += connections_to(p, port)?;
                }
            }
        }
        let (h, t) = done.map_err(|e| e.to_string())?;
        histogram.add(&h).map_err(|e| e.to_string())?;
        tally.ok += t.ok;
        for (k, v) in t.errors {
            *tally.errors.entry(k).or_default() += v;
        }
    }
    let seconds = window_end
        .unwrap_or_else(Instant::now)
        .duration_since(window_start)
        .as_secs_f64();
    let errors: u64 = tally.errors.values().sum();
    let completed = tally.ok + errors;
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let mut line = serde_json::json!({
        "label": args.label,
        "url": args.url,
        "protocol": if args.http2 { "h2" } else { "http/1.1" },
        "concurrency": concurrency,
        "new_connection": args.new_connection,
        "signed": plan.key.as_ref().map(|k| k.alg()),
        "users": plan.users,
        "seconds": round(seconds, 3),
        "requests": completed,
        "ok": tally.ok,
        "errors": tally.errors,
        "rps": round(completed as f64 / seconds, 1),
        "latency_us": {
            "p50": us(0.50), "p90": us(0.90), "p99": us(0.99),
            "max": histogram.max() as f64 / 1000.0,
            "mean": round(histogram.mean() / 1000.0, 1),
        },
    });
    if !args.pid.is_empty() {
        let ticks: u64 = cpu_after
            .iter()
            .zip(&cpu_before)
            .map(|(a, b)| a.saturating_sub(*b))
            .sum();
        let cpu_seconds = ticks as f64 / args.clk_tck as f64;
        line["target_cpu_seconds"] = round(cpu_seconds, 3).into();
        line["target_cpu_us_per_request"] =
            round(cpu_seconds * 1e6 / completed.max(1) as f64, 2).into();
        line["target_cpu_cores"] = round(cpu_seconds / seconds, 2).into();
        line["target_context_switches_per_request"] = round(
            switches_after.saturating_sub(switches_before) as f64 / completed.max(1) as f64,
            2,
        )
        .into();
        line["target_rss_kib"] = rss.0.into();
        line["target_peak_rss_kib"] = rss.1.into();
        if args.upstream_port.is_some() {
            line["target_upstream_connections"] = upstream_connections.into();
        }
    }
    println!("{line}");
    Ok(())
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

// ---------------------------------------------------------------------------------------
// upstream

async fn upstream(args: UpstreamArgs) -> Result<()> {
    let tls = patgate::tls::server_config_without_client_auth(&args.cert, &args.key)
        .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("bind {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("{addr}");
    if let Some(plain) = args.plain_listen {
        let plain = TcpListener::bind(plain)
            .await
            .map_err(|e| format!("bind {plain}: {e}"))?;
        println!("{}", plain.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = plain.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(answer);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
    }
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(answer);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// 200 with a small JSON body to a read; 201 to a write, after reading its body. A request
/// without an Authorization header gets 401, so a proxy that forgets it shows up as errors.
async fn answer(
    request: Request<hyper::body::Incoming>,
) -> std::result::Result<http::Response<Full<Bytes>>, hyper::Error> {
    let authorized = request.headers().contains_key(http::header::AUTHORIZATION);
    let write = request.method() != Method::GET && request.method() != Method::HEAD;
    request.into_body().collect().await?;
    let (status, body): (u16, &'static [u8]) = if !authorized {
        (401, br#"{"message":"Requires authentication"}"#)
    } else if write {
        (
            201,
            br#"{"ref":"refs/heads/bench","object":{"sha":"aa218f56b14c9653891f9e74264a383fa43fefbd","type":"commit"}}"#,
        )
    } else {
        (200, br#"{"id":1,"name":"api","full_name":"acme/api"}"#)
    };
    let mut response = http::Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// setup

const INTEGRATION: &str = "bench";
const INTEGRATION_TOKEN: &str = "ghs_benchintegrationtoken000000000000000";

async fn setup(args: SetupArgs) -> Result<()> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = |name: &str| dir.join(name);
    let write = |name: &str, text: &str| -> Result<()> {
        patgate::keys::write_private(&path(name), text.as_bytes()).map_err(|e| e.to_string())
    };
    if !args.reuse_pki {
        let err = |e: patgate::devpki::PkiError| format!("certificates: {e}");
        let ca = DevCa::generate("patgate bench CA").map_err(err)?;
        write("ca.pem", ca.cert_pem())?;
        let server = ca.issue_server(&["localhost", "127.0.0.1"]).map_err(err)?;
        write("server.pem", &server.cert_pem)?;
        write("server-key.pem", &server.key_pem)?;
        let host = ca.issue_server(&["localhost", "127.0.0.1"]).map_err(err)?;
        write("upstream.pem", &host.cert_pem)?;
        write("upstream-key.pem", &host.key_pem)?;
        let client = ca
            .issue_client(
                "jira-app (bench)",
                &[ClientName::Dns("jira-app.bench.local")],
            )
            .map_err(err)?;
        write("client.pem", &client.cert_pem)?;
        write("client-key.pem", &client.key_pem)?;
        patgate::keys::generate("bench-app", dir, false).map_err(|e| e.to_string())?;
        patgate::keys::generate("bench-hmac", dir, true).map_err(|e| e.to_string())?;
        MasterKey::generate()
            .write_new(&path("master-key"))
            .map_err(|e| e.to_string())?;
        write("integration.token", INTEGRATION_TOKEN)?;
    }
    if args.upstream_port != 0 {
        let public = std::fs::read_to_string(path("bench-app.pub"))
            .map_err(|e| format!("bench-app.pub: {e}"))?;
        std::fs::write(
            args.config.clone().unwrap_or_else(|| path("patgate.toml")),
            config(&args, public.trim()),
        )
        .map_err(|e| e.to_string())?;
    }
    let key = MasterKey::load_file(&path("master-key")).map_err(|e| e.to_string())?;
    let state = args.state.clone().unwrap_or_else(|| path("state"));
    let started = Instant::now();
    let vault = match &args.store_url_file {
        None => Vault::init(&state, &key).await,
        Some(file) => {
            let db = bench_database(file)?;
            db.migrate().await.map_err(|e| e.to_string())?;
            Vault::init_in(Box::new(db.records()), &key).await
        }
    };
    let vault = Arc::new(vault.map_err(|e| e.to_string())?);
    vault
        .put_integration_secret(
            INTEGRATION,
            &Credential::Token(SecretString::from(INTEGRATION_TOKEN)),
        )
        .await
        .map_err(|e| e.to_string())?;
    // Each put is durable when it returns (one flush each); many at once share flushes.
    let mut tasks = tokio::task::JoinSet::new();
    let now = patgate::clock::unix_now();
    for i in 0..u64::from(args.users) {
        if tasks.len() >= 256 {
            if let Some(done) = tasks.join_next().await {
                done.map_err(|e| e.to_string())??;
            }
        }
        let vault = vault.clone();
        tasks.spawn(async move {
            let pat = format!("ghp_bench{i:031}");
            let meta = PatMeta {
                host_login: format!("user{i}"),
                scopes: vec!["repo".into()],
                validated_at: now,
                created_at: now,
                updated_at: now,
                last_used_at: None,
                refused: None,
                expires_at: None,
            };
            vault
                .put_user_pat(
                    INTEGRATION,
                    &account(i),
                    &Credential::Token(SecretString::from(pat)),
                    &meta,
                )
                .await
                .map_err(|e| e.to_string())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    vault.flush().await.map_err(|e| e.to_string())?;
    eprintln!(
        "stored {} users' PATs in {:.1} s",
        args.users,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The pool `patgate run` would make for `[store] kind = "postgres"`, `tls = "disable"`,
/// with the default pool size.
fn bench_database(url_file: &std::path::Path) -> Result<patgate::store::Postgres> {
    let url =
        std::fs::read_to_string(url_file).map_err(|e| format!("{}: {e}", url_file.display()))?;
    patgate::store::Postgres::connect(&patgate::store::PgSettings {
        url: SecretString::from(url.trim().to_string()),
        tls: patgate::store::PgTls::Disable,
        pool_size: 16,
        cores: 0,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    })
    .map_err(|e| e.to_string())
}

/// `nonces`: each store gets `count` fresh pairs, `concurrency` at a time.
async fn nonces(args: NoncesArgs) -> Result<()> {
    use patgate::store::{MemoryNonces, NonceStore};
    let db = bench_database(&args.store_url_file)?;
    let stores: [(&str, Arc<dyn NonceStore>); 2] = [
        ("postgres", Arc::new(db.nonces().with_window(70))),
        ("memory", Arc::new(MemoryNonces::new(2_000_000))),
    ];
    let mut out = serde_json::Map::new();
    out.insert("count".into(), args.count.into());
    out.insert("concurrency".into(), args.concurrency.into());
    for (name, store) in stores {
        let started = Instant::now();
        let cpu_before = cpu_ticks(std::process::id())?;
        let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let run = |store: Arc<dyn NonceStore>, next: Arc<std::sync::atomic::AtomicU32>| async move {
            let mut hist = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
            let salt = patgate::clock::unix_now();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= args.count {
                    return Ok::<_, String>(hist);
                }
                let nonce = format!("bench-{salt}-{i}");
                let now = patgate::clock::unix_now();
                let t0 = Instant::now();
                store
                    .first_use("bench-hmac", &nonce, now + 60, now)
                    .await
                    .map_err(|e| e.to_string())?;
                hist.record(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX))
                    .map_err(|e| e.to_string())?;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency {
            tasks.spawn(run(store.clone(), next.clone()));
        }
        let mut hist = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
        while let Some(done) = tasks.join_next().await {
            hist.add(done.map_err(|e| e.to_string())??)
                .map_err(|e| e.to_string())?;
        }
        let seconds = started.elapsed().as_secs_f64();
        // This process's CPU (the client side of each check), per check.
        let cpu_seconds =
            cpu_ticks(std::process::id())?.saturating_sub(cpu_before) as f64 / args.clk_tck as f64;
        let us = |q: f64| (hist.value_at_quantile(q) as f64 / 100.0).round() / 10.0;
        out.insert(
            name.into(),
            serde_json::json!({
                "p50_us": us(0.5),
                "p99_us": us(0.99),
                "per_second": (f64::from(args.count) / seconds).round(),
                "cpu_us": (cpu_seconds * 1e7 / f64::from(args.count)).round() / 10.0,
            }),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

fn config(args: &SetupArgs, ed25519_public: &str) -> String {
    let d = args.dir.display();
    let listen = args.listen;
    let upstream_port = args.upstream_port;
    let admin = args.admin_listen;
    let state = args.state.clone().unwrap_or_else(|| args.dir.join("state"));
    let state = state.display();
    let store = match &args.store_url_file {
        None => String::new(),
        Some(file) => format!(
            "\n[store]\nkind = \"postgres\"\nurl_file = \"{}\"\ntls = \"disable\"\n",
            file.display()
        ),
    };
    format!(
        r#"# Written by `patgate-bench setup`.
state_dir = "{state}"

[master_key]
file = "{d}/master-key"

[api]
listen = "{listen}"
cert = "{d}/server.pem"
key = "{d}/server-key.pem"
client_ca = "{d}/ca.pem"
allowed_client_sans = ["dns:jira-app.bench.local"]

# A short validity and a large replay cache: at tens of thousands of requests a second the
# default (60 s, 200,000 nonces) fills up and answers 503, as documented.
[signatures]
max_validity_seconds = 10
nonce_cache_entries = 2000000

[[app_keys]]
keyid = "bench-app"
ed25519_public_key = "{ed25519_public}"

[[app_keys]]
keyid = "bench-hmac"
hmac_secret_file = "{d}/bench-hmac.hmac"

[[integrations]]
id = "{INTEGRATION}"
kind = "github"
base_url = "https://localhost:{upstream_port}"
roots = "none"
extra_ca = "{d}/ca.pem"
require_user_pat = true

[admin]
listen = "{admin}"
socket = "{d}/admin.sock"

# nginx runs with access_log off; patgate's access lines are at info.
[log]
level = "warn"
{store}"#
    )
}
