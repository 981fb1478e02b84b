//! `patgate vault list`: what the vault holds, metadata only, as a table for people or as
//! JSON for scripts (`--json`), filtered by integration and account.
//!
//! The table is the default wherever the output goes, a terminal or a pipe (as `kubectl get`
//! does): what an admin sees and what `| grep` or `| less` sees are the same, and a script
//! asks for the stable form by name. Times are RFC 3339, UTC, to the second, in both forms.
//!
//! Both forms are written record by record to a buffered stdout, never built as one string
//! first; the table reads the widest cell of each column before its first row.

use std::io::Write;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::CliResult;
use crate::vault::{RecordId, RecordSummary};

/// The filters of `patgate vault list`.
#[derive(Debug, Default, Clone, clap::Args)]
pub(super) struct ListArgs {
    /// Print JSON (an array, one record per line) instead of the table.
    #[arg(long)]
    json: bool,
    /// Only this integration's records (its secret and its users' PATs).
    #[arg(long)]
    integration: Option<String>,
    /// Only this Atlassian accountId's PATs.
    #[arg(long)]
    account: Option<String>,
}

/// One record as the admin socket sends it ([`RecordSummary`]'s JSON: Unix seconds).
#[derive(Debug, Deserialize)]
pub(super) struct Summary {
    id: RecordId,
    credential_kind: String,
    key_version: u32,
    created_at: u64,
    updated_at: u64,
    host_login: Option<String>,
    validated_at: Option<u64>,
    last_used_at: Option<u64>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    refused_at: Option<u64>,
}

impl From<RecordSummary> for Summary {
    fn from(r: RecordSummary) -> Summary {
        Summary {
            id: r.id,
            credential_kind: r.credential_kind.to_string(),
            key_version: r.key_version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            host_login: r.host_login,
            validated_at: r.validated_at,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
            refused_at: r.refused_at,
        }
    }
}

/// One record as `--json` prints it.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    /// `integration-secret` or `user-pat`.
    record: &'static str,
    integration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    credential_kind: &'a str,
    key_version: u32,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_login: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    validated_at: Option<String>,
    /// `null` for a PAT never used since it was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<Option<String>>,
    /// When the host says a PAT expires (`null`: it does not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Option<String>>,
    /// Since when the host refuses a PAT (`null`: it does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    refused_at: Option<Option<String>>,
}

impl Summary {
    fn integration(&self) -> &str {
        match &self.id {
            RecordId::IntegrationSecret { integration } | RecordId::UserPat { integration, .. } => {
                integration
            }
        }
    }

    fn account(&self) -> Option<&str> {
        match &self.id {
            RecordId::IntegrationSecret { .. } => None,
            RecordId::UserPat { account, .. } => Some(account),
        }
    }

    fn listed(&self) -> Listed<'_> {
        let pat = self.account().is_some();
        Listed {
            record: if pat {
                "user-pat"
            } else {
                "integration-secret"
            },
            integration: self.integration(),
            account: self.account(),
            credential_kind: &self.credential_kind,
            key_version: self.key_version,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
            host_login: self.host_login.as_deref(),
            validated_at: self.validated_at.map(rfc3339),
            last_used_at: pat.then(|| self.last_used_at.map(rfc3339)),
            expires_at: pat.then(|| self.expires_at.map(rfc3339)),
            refused_at: pat.then(|| self.refused_at.map(rfc3339)),
        }
    }
}

use crate::clock::rfc3339;

impl ListArgs {
    fn keeps(&self, record: &Summary) -> bool {
        self.integration
            .as_deref()
            .is_none_or(|id| record.integration() == id)
            && self
                .account
                .as_deref()
                .is_none_or(|account| record.account() == Some(account))
    }
}

/// Prints `records` (in the vault's order: by id) that pass the filters.
pub(super) fn print(args: &ListArgs, records: Vec<Summary>) -> CliResult {
    let records: Vec<Summary> = records.into_iter().filter(|r| args.keeps(r)).collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let written = if args.json {
        json(&mut out, &records)
    } else {
        table(&mut out, &records)
    }
    .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        // `| head`: the reader has what it wanted.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(err) => return Err(format!("cannot write the output: {err}")),
    }
    if records.is_empty() && !args.json {
        eprintln!("no records");
    }
    Ok(ExitCode::SUCCESS)
}

fn json(out: &mut impl Write, records: &[Summary]) -> std::io::Result<()> {
    if records.is_empty() {
        return out.write_all(b"[]\n");
    }
    for (i, record) in records.iter().enumerate() {
        out.write_all(if i == 0 { b"[\n" } else { b",\n" })?;
        serde_json::to_writer(&mut *out, &record.listed())?;
    }
    out.write_all(b"\n]\n")
}

const HEADER: [&str; 12] = [
    "RECORD",
    "INTEGRATION",
    "ACCOUNT",
    "HOST LOGIN",
    "CREDENTIAL",
    "KEY",
    "CREATED",
    "UPDATED",
    "VALIDATED",
    "LAST USED",
    "EXPIRES",
    "REFUSED",
];

fn cells(record: &Summary) -> [String; 12] {
    let listed = record.listed();
    let dash = || "-".to_string();
    [
        listed.record.to_string(),
        listed.integration.to_string(),
        listed.account.map_or_else(dash, str::to_string),
        listed.host_login.map_or_else(dash, str::to_string),
        listed.credential_kind.to_string(),
        listed.key_version.to_string(),
        listed.created_at,
        listed.updated_at,
        listed.validated_at.unwrap_or_else(dash),
        listed
            .last_used_at
            .flatten()
            .unwrap_or_else(|| match listed.account {
                Some(_) => "never".to_string(),
                None => dash(),
            }),
        listed.expires_at.flatten().unwrap_or_else(dash),
        listed.refused_at.flatten().unwrap_or_else(dash),
    ]
}

fn table(out: &mut impl Write, records: &[Summary]) -> std::io::Result<()> {
    let mut widths = HEADER.map(str::len);
    for record in records {
        for (width, cell) in widths.iter_mut().zip(cells(record)) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let row = |out: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                writeln!(out, "{cell}")?;
            } else {
                write!(out, "{cell:<width$}  ", width = widths[i])?;
            }
        }
        Ok(())
    };
    row(out, &HEADER)?;
    for record in records {
        let cells = cells(record);
        row(out, &cells.each_ref().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(integration: &str, account: &str, last_used_at: Option<u64>) -> Summary {
        Summary {
            id: RecordId::UserPat {
                integration: integration.into(),
                account: account.into(),
            },
            credential_kind: "token".into(),
            key_version: 1,
            created_at: 1_764_000_000,
            updated_at: 1_764_000_060,
            host_login: Some("alice".into()),
            validated_at: Some(1_764_000_060),
            last_used_at,
            expires_at: None,
            refused_at: None,
        }
    }

    fn secret(integration: &str) -> Summary {
        Summary {
            id: RecordId::IntegrationSecret {
                integration: integration.into(),
            },
            credential_kind: "token".into(),
            key_version: 2,
            created_at: 0,
            updated_at: 0,
            host_login: None,
            validated_at: None,
            last_used_at: None,
            expires_at: None,
            refused_at: None,
        }
    }

    #[test]
    fn the_table_aligns_columns_and_writes_times_in_rfc3339() {
        let mut out = Vec::new();
        table(
            &mut out,
            &[
                secret("ghe"),
                Summary {
                    expires_at: Some(1_771_776_000),
                    ..pat("ghe", "acct-1", Some(1_764_003_600))
                },
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("RECORD              INTEGRATION  ACCOUNT"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("integration-secret  ghe          -      "),
            "{text}"
        );
        assert!(
            lines[0].ends_with("LAST USED             EXPIRES               REFUSED"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(
                "1970-01-01T00:00:00Z  -                     -                     -                     -"
            ),
            "{text}"
        );
        assert!(
            lines[2]
                .ends_with("2025-11-24T16:01:00Z  2025-11-24T17:00:00Z  2026-02-22T16:00:00Z  -"),
            "{text}"
        );
    }

    #[test]
    fn json_is_one_array_with_a_record_per_line() {
        let mut out = Vec::new();
        json(&mut out, &[secret("ghe"), pat("ghe", "acct-1", None)]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value[0]["record"], "integration-secret");
        assert!(value[0].get("account").is_none());
        assert_eq!(value[1]["account"], "acct-1");
        assert_eq!(value[1]["created_at"], "2025-11-24T16:00:00Z");
        assert!(value[1]["last_used_at"].is_null());
        let mut out = Vec::new();
        json(&mut out, &[]).unwrap();
        assert_eq!(out, b"[]\n");
    }

    #[test]
    fn filters_keep_an_integration_and_an_account() {
        let by = |integration: Option<&str>, account: Option<&str>| ListArgs {
            json: false,
            integration: integration.map(str::to_string),
            account: account.map(str::to_string),
        };
        let records = [secret("ghe"), pat("ghe", "a", None), pat("gl", "a", None)];
        let kept = |args: ListArgs| records.iter().filter(|r| args.keeps(r)).count();
        assert_eq!(kept(by(None, None)), 3);
        assert_eq!(kept(by(Some("ghe"), None)), 2);
        assert_eq!(kept(by(None, Some("a"))), 2);
        assert_eq!(kept(by(Some("gl"), Some("a"))), 1);
        assert_eq!(kept(by(Some("nope"), None)), 0);
    }
}
