//! Configuration problems: one `ConfigError` per mistake, `ConfigErrors` for the whole report.
//!
//! The display format is a contract (tests and operators rely on it):
//! `FILE:LINE: KEY.PATH: found FOUND; expected EXPECTED`, `:LINE` omitted when unknown and
//! `KEY.PATH: ` omitted for problems of a whole file or directory.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in the configuration, located as precisely as the loader could.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as joined from the directory the user gave (e.g. `config/sites/dc.toml`).
    pub file: PathBuf,
    /// 1-based line of the key (or of its nearest existing parent), when known.
    pub line: Option<usize>,
    /// Key path in TOML names, e.g. `devices[4].modbus.unit`; empty for a whole file.
    pub path: String,
    /// What the file holds there, never a secret's value.
    pub found: String,
    /// What would have been valid.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "found {}; expected {}", self.found, self.expected)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration directory, sorted by file then line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The directory as the user gave it.
    pub dir: PathBuf,
    /// The problems, at least one.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Builds the report, sorting and de-duplicating the problems.
    pub fn new(dir: &Path, mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by(|a, b| {
            (&a.file, a.line.unwrap_or(0), &a.path, &a.found).cmp(&(
                &b.file,
                b.line.unwrap_or(0),
                &b.path,
                &b.found,
            ))
        });
        errors.dedup();
        ConfigErrors {
            dir: dir.to_path_buf(),
            errors,
        }
    }

    /// The problems, sorted by file then line.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True when there is no problem (never the case for a returned report).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        write!(
            f,
            "invalid configuration in {} ({n} {noun}):",
            self.dir.display()
        )?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_line_and_path() {
        let e = ConfigError {
            file: PathBuf::from("config/sites/dc.toml"),
            line: Some(88),
            path: "racks[3].room".into(),
            found: "\"dh9\"".into(),
            expected: "a room id".into(),
        };
        assert_eq!(
            e.to_string(),
            "config/sites/dc.toml:88: racks[3].room: found \"dh9\"; expected a room id"
        );
        let e = ConfigError {
            line: None,
            path: String::new(),
            ..e
        };
        assert_eq!(
            e.to_string(),
            "config/sites/dc.toml: found \"dh9\"; expected a room id"
        );
    }

    #[test]
    fn report_is_sorted_by_file_then_line() {
        let mk = |file: &str, line| ConfigError {
            file: PathBuf::from(file),
            line: Some(line),
            path: "a".into(),
            found: "x".into(),
            expected: "y".into(),
        };
        let r = ConfigErrors::new(
            Path::new("config"),
            vec![mk("b.toml", 1), mk("a.toml", 9), mk("a.toml", 2)],
        );
        assert_eq!(
            r.to_string(),
            "invalid configuration in config (3 problems):\n  - a.toml:2: a: found x; expected y\n  - a.toml:9: a: found x; expected y\n  - b.toml:1: a: found x; expected y"
        );
    }
}
