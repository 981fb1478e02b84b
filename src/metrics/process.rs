//! The standard `process_*` metrics every Prometheus client library exports, read from
//! `/proc/self` at each scrape (Linux; elsewhere, or when `/proc` is not mounted, they are
//! left out rather than reported as zero).
//!
//! | metric | from |
//! |---|---|
//! | `process_cpu_seconds_total` | `/proc/self/stat` utime + stime, in clock ticks |
//! | `process_resident_memory_bytes` | `/proc/self/stat` rss, in pages |
//! | `process_virtual_memory_bytes` | `/proc/self/stat` vsize |
//! | `process_start_time_seconds` | `/proc/self/stat` starttime (ticks after boot) + `btime` of `/proc/stat` |
//! | `process_open_fds` | the entries of `/proc/self/fd` |
//! | `process_max_fds` | the soft `RLIMIT_NOFILE` |

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What `/proc/self/stat` says, in the units the metrics use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stat {
    pub(crate) cpu_seconds: f64,
    pub(crate) resident_bytes: u64,
    pub(crate) virtual_bytes: u64,
    /// Seconds after boot.
    pub(crate) started_after_boot: f64,
}

/// Parses `/proc/PID/stat` (proc(5)): the fields after the command name, which is in
/// parentheses and may itself hold spaces and parentheses (hence the last `)`).
pub(crate) fn parse_stat(text: &str, ticks_per_second: u64, page_size: usize) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = ticks_per_second as f64;
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        started_after_boot: field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page_size as u64),
    })
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
pub(crate) fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|secs| secs.trim().parse().ok())
}

/// The `process_*` collector, registered without the `patgate_` prefix.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let ticks = rustix::param::clock_ticks_per_second();
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text, ticks, rustix::param::page_size()));
        if let Some(stat) = stat {
            let cpu = ConstCounter::new(stat.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stat.resident_bytes as f64,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.virtual_bytes as f64,
            )?;
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|text| parse_boot_time(&text));
            if let Some(boot) = boot {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds",
                    boot as f64 + stat.started_after_boot,
                )?;
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                entries.count() as f64,
            )?;
        }
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        if let Some(max) = limit.current {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
            )?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let text = "4242 (pat gate) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
        let stat = parse_stat(text, 100, 4096).unwrap();
        assert_eq!(stat.cpu_seconds, 3.0);
        assert_eq!(stat.started_after_boot, 123.45);
        assert_eq!(stat.virtual_bytes, 104_857_600);
        assert_eq!(stat.resident_bytes, 2560 * 4096);
        assert_eq!(parse_stat("garbage", 100, 4096), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1764000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_764_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }
}
