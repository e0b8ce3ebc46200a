//! The shipped configuration embedded in the binary for `dcguard demo`, and the copy the
//! demo writes into its data directory (so a release binary runs from anywhere).
//!
//! The demo's changes to the shipped files are textual and checked: each replaced line
//! must be present, so a change of the shipped file is noticed at start, not silently
//! ignored.

use std::path::Path;

use anyhow::Context as _;

/// Every file of `config/`, as (path relative to `config/`, text). `tests/demo.rs` checks
/// that this list and the directory agree.
pub const SHIPPED: &[(&str, &str)] = &[
    ("dcguard.toml", include_str!("../../config/dcguard.toml")),
    (
        "profiles/ats.toml",
        include_str!("../../config/profiles/ats.toml"),
    ),
    (
        "profiles/env-th-json.toml",
        include_str!("../../config/profiles/env-th-json.toml"),
    ),
    (
        "profiles/genset-dse.toml",
        include_str!("../../config/profiles/genset-dse.toml"),
    ),
    (
        "profiles/leak-json.toml",
        include_str!("../../config/profiles/leak-json.toml"),
    ),
    (
        "profiles/pac-inrow.toml",
        include_str!("../../config/profiles/pac-inrow.toml"),
    ),
    (
        "profiles/pac-liebert.toml",
        include_str!("../../config/profiles/pac-liebert.toml"),
    ),
    (
        "profiles/rack-meter.toml",
        include_str!("../../config/profiles/rack-meter.toml"),
    ),
    (
        "profiles/ups-galaxy.toml",
        include_str!("../../config/profiles/ups-galaxy.toml"),
    ),
    (
        "profiles/utility-meter.toml",
        include_str!("../../config/profiles/utility-meter.toml"),
    ),
    (
        "profiles/vesda-hli.toml",
        include_str!("../../config/profiles/vesda-hli.toml"),
    ),
    ("sites/dc.toml", include_str!("../../config/sites/dc.toml")),
    (
        "sites/drc.toml",
        include_str!("../../config/sites/drc.toml"),
    ),
    (
        "sites/smart-dc.toml",
        include_str!("../../config/sites/smart-dc.toml"),
    ),
];

/// What the demo changes in `dcguard.toml`.
#[derive(Debug, Clone)]
pub struct Changes<'a> {
    /// The tokens file (hashes only).
    pub tokens_file: &'a Path,
    /// The built-in receiver's URL.
    pub receiver_url: &'a str,
    /// The built-in receiver's signing key file.
    pub receiver_key_file: &'a Path,
    /// The shutdown deadline in seconds.
    pub shutdown_grace_secs: u64,
}

/// Writes the shipped configuration into `dir` with the demo's changes to `dcguard.toml`.
pub fn write(dir: &Path, changes: &Changes<'_>) -> anyhow::Result<()> {
    for (path, text) in SHIPPED {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = if *path == "dcguard.toml" {
            demo_main(text, changes)?
        } else {
            (*text).to_owned()
        };
        std::fs::write(&target, text)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

/// The demo's `dcguard.toml`: tokens from the demo's hashes, incidents to the built-in
/// receiver, the demo's shutdown deadline.
fn demo_main(shipped: &str, changes: &Changes<'_>) -> anyhow::Result<String> {
    let replacements = [
        (
            "tokens_file = \"/etc/dcguard/tokens.toml\"".to_owned(),
            format!("tokens_file = {}", quote(changes.tokens_file)),
        ),
        (
            "shutdown_grace_secs = 10".to_owned(),
            format!("shutdown_grace_secs = {}", changes.shutdown_grace_secs),
        ),
        (
            "enabled = false\nurl = \"http://127.0.0.1:9800/incidents\"\n\
             hmac_secret_env = \"DCGUARD_WEBHOOK_SECRET\""
                .to_owned(),
            format!(
                "enabled = true\nurl = \"{}\"\nhmac_secret_file = {}",
                changes.receiver_url,
                quote(changes.receiver_key_file)
            ),
        ),
    ];
    let mut text = shipped.to_owned();
    for (from, to) in replacements {
        anyhow::ensure!(
            text.contains(&from),
            "the embedded dcguard.toml no longer contains `{from}`; src/demo/config.rs must follow it"
        );
        text = text.replacen(&from, &to, 1);
    }
    Ok(text)
}

/// A path as a TOML basic string.
fn quote(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
