//! Capturing what patgate logs, for tests that assert on log lines (and that no secret is
//! in them).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// A buffer that log writers append to; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines that contain every one of `containing`.
    pub fn lines(&self, containing: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| containing.iter().all(|c| l.contains(c)))
            .map(str::to_string)
            .collect()
    }

    /// Every line, parsed as JSON (a JSON-format logger wrote them).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
            .collect()
    }

    /// A writer factory for a `tracing` layer.
    pub fn writer(&self) -> impl Fn() -> Captured + Send + Sync + 'static {
        let captured = self.clone();
        move || captured.clone()
    }

    /// A plain text logger for the current thread while the guard lives (events of tasks
    /// run on other threads are not seen: use it in a current-thread test, or around work
    /// done on the test's own task).
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(self.writer())
                .finish(),
        )
    }
}

/// Everything logged by every test of this binary, through patgate's own text logger at
/// `level`, installed once for the whole process the first time this is called (tests run
/// side by side: look for lines of your own, e.g. by request id).
pub fn global(level: &str) -> &'static Captured {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let layer = patgate::telemetry::layer(
            &patgate::config::LogSettings {
                level: level.into(),
                format: patgate::config::LogFormat::Text,
                audit_file: None,
            },
            captured.writer(),
            false,
        )
        .unwrap();
        tracing_subscriber::registry().with(layer).init();
        captured
    })
}
