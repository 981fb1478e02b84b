//! Build-time facts for `patgate_build_info`: the git commit the binary was built from.
//!
//! From `git rev-parse HEAD` when the source is the top of a git checkout (a clone or worktree); else
//! `PATGATE_BUILD_COMMIT` when the packager sets it; else `unknown`. Never a guess.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PATGATE_BUILD_COMMIT");
    // Only this source's own repository counts: a tarball unpacked inside some other
    // checkout must not report that checkout's commit.
    let own_repository = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top) == Path::new(env!("CARGO_MANIFEST_DIR")));
    let from_git = own_repository
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten();
    let commit = match from_git {
        Some(commit) => {
            // Rebuilt when HEAD moves: the files git reads HEAD from (a worktree's HEAD is
            // its own; branch refs are in the common directory, loose or packed).
            for path in ["HEAD", "packed-refs"] {
                if let Some(file) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={}", absolute(&file));
                }
            }
            if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
                if let Some(file) = git(&["rev-parse", "--git-path", &reference]) {
                    println!("cargo:rerun-if-changed={}", absolute(&file));
                }
            }
            commit
        }
        None => std::env::var("PATGATE_BUILD_COMMIT")
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=PATGATE_BUILD_COMMIT={commit}");
}

/// `git rev-parse --git-path` answers relative to the manifest directory.
fn absolute(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}
