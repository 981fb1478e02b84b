//! Logs: `tracing` to stderr (journald picks it up under systemd), text or JSON, and the
//! audit stream, optionally also appended to its own file.
//!
//! Targets: `patgate::access` carries one decision line per request; `patgate::audit`
//! carries credential changes. No line at any level carries a secret: secrets live in types
//! whose `Debug` redacts them, and request headers are never logged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber, writing to stderr. `RUST_LOG`, when set, overrides the
/// configured level (not the audit file, which always gets every audit event).
pub fn init(settings: &LogSettings) -> Result<(), String> {
    use std::io::IsTerminal as _;
    // Colours only for a person at a terminal; journald and files get plain text.
    let ansi = std::io::stderr().is_terminal();
    subscriber(settings, std::io::stderr, ansi)?
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}

/// For admin commands that change credentials without the service (`patgate integration
/// set-secret`, `patgate pat …`): warnings and the command's audit events to stderr, and the
/// audit events appended to `log.audit_file` when that file exists. A command never creates
/// it: run as root it would leave a file the service user cannot open.
pub fn init_for_command(settings: &LogSettings) -> Result<(), String> {
    init(&LogSettings {
        level: format!("warn,{}=info", crate::audit::TARGET),
        format: settings.format,
        audit_file: settings.audit_file.clone().filter(|path| path.exists()),
    })
}

/// The subscriber [`init`] installs, with its log lines going to `writer` (tests capture
/// them there). Opens `log.audit_file` when it is set.
pub fn subscriber<W>(
    settings: &LogSettings,
    writer: W,
    ansi: bool,
) -> Result<impl Subscriber + Send + Sync, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    Ok(Registry::default().with(layer(settings, writer, ansi)?))
}

/// The log lines and the audit file as one layer, each with its own filter, so a test can
/// run several configurations side by side under one subscriber.
pub fn layer<W>(
    settings: &LogSettings,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn Layer<Registry> + Send + Sync>, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env),
        _ => EnvFilter::try_new(&settings.level),
    }
    .map_err(|e| format!("log.level: {e}"))?;
    let log: Box<dyn Layer<Registry> + Send + Sync> = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed(),
    };
    let mut layers = vec![log.with_filter(filter).boxed()];
    if let Some(path) = &settings.audit_file {
        layers.push(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_ansi(false)
                .with_writer(AuditFile::open(path)?)
                // Its own filter: the audit file gets every audit event whatever log.level is.
                .with_filter(Targets::new().with_target(crate::audit::TARGET, tracing::Level::INFO))
                .boxed(),
        );
    }
    Ok(layers.boxed())
}

/// `log.audit_file`: opened once for appending, created mode 0600 (audit events name
/// accounts and host logins, though never a credential).
///
/// Durability: each event is formatted into one buffer by the fmt layer, written with one
/// `write` on the `O_APPEND` descriptor, then `fdatasync`ed before the call that logged it
/// returns. Audit events are rare (credential changes), so the sync costs nothing that
/// matters, and a line the service logged survives a power loss.
#[derive(Debug, Clone)]
struct AuditFile {
    file: Arc<Mutex<File>>,
}

impl AuditFile {
    fn open(path: &Path) -> Result<AuditFile, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("log.audit_file: cannot open {}: {e}", path.display()))?;
        Ok(AuditFile {
            file: Arc::new(Mutex::new(file)),
        })
    }
}

impl Write for AuditFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(buf)?;
        file.sync_data()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for AuditFile {
    type Writer = AuditFile;

    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}
