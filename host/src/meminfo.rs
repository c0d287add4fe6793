//! /proc/meminfo, field by field.
//!
//! Hand-parsed rather than with procfs's `Meminfo`, which rejects a file
//! missing any of its two dozen required fields: containers and fixtures
//! often carry only the few lines a reader needs.

use std::collections::BTreeMap;

/// The fields of /proc/meminfo, in bytes (`kB` values times 1024; unitless
/// counts such as `HugePages_Total` as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meminfo {
    fields: BTreeMap<String, u64>,
}

impl Meminfo {
    /// Parses `Name:   value [kB]` lines; the error says which line is not one.
    pub fn parse(text: &str) -> Result<Meminfo, String> {
        let mut fields = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || format!("line {}: {line:?} is not \"Name: value [kB]\"", n + 1);
            let (name, rest) = line.split_once(':').ok_or_else(bad)?;
            let mut words = rest.split_whitespace();
            let value: u64 = words.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let value = match words.next() {
                None => value,
                Some("kB") => value.saturating_mul(1024),
                Some(_) => return Err(bad()),
            };
            fields.insert(name.trim().to_string(), value);
        }
        Ok(Meminfo { fields })
    }

    /// A field by its name (`MemTotal`), bytes.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields.get(name).copied()
    }

    /// MemTotal, bytes.
    pub fn total(&self) -> Option<u64> {
        self.get("MemTotal")
    }

    /// MemAvailable, bytes (absent before Linux 3.14).
    pub fn available(&self) -> Option<u64> {
        self.get("MemAvailable")
    }

    /// MemFree, bytes.
    pub fn free(&self) -> Option<u64> {
        self.get("MemFree")
    }
}
