//! Another process's files under /proc/PID: its command line, executable,
//! parent and children, a field of its status and a row of its limits.
//! What recognising a server needs, read under the same root as the rest,
//! so a fixture tree stands in for a process in tests.

use crate::{read_bytes_limited, read_limited, Error, Host};
use std::path::PathBuf;

/// A command line may be as long as the kernel's argument limit allows;
/// past 1 MiB it is not a server we can recognise anyway.
const CMDLINE_LIMIT: u64 = 1 << 20;

impl Host {
    /// /proc/PID/cmdline, argument by argument (invalid UTF-8 replaced).
    pub fn cmdline(&self, pid: u32) -> Result<Vec<String>, Error> {
        let raw = read_bytes_limited(&self.proc_path(&format!("{pid}/cmdline")), CMDLINE_LIMIT)?;
        Ok(raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect())
    }

    /// The target of /proc/PID/exe, without the kernel's " (deleted)"
    /// suffix of a binary replaced since it started (a package upgrade).
    pub fn exe(&self, pid: u32) -> Result<String, Error> {
        let path = self.proc_path(&format!("{pid}/exe"));
        let target = std::fs::read_link(&path).map_err(|source| Error::Io { path, source })?;
        Ok(target
            .to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string())
    }

    /// The parent's pid, from /proc/PID/stat (the field after the state,
    /// which follows the last ')': a comm may hold spaces and parentheses).
    pub fn ppid(&self, pid: u32) -> Result<u32, Error> {
        let path = self.proc_path(&format!("{pid}/stat"));
        let text = read_limited(&path)?;
        text.rfind(')')
            .and_then(|i| text[i + 1..].split_whitespace().nth(1))
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| Error::Parse {
                path,
                why: "no parent pid after the comm".into(),
            })
    }

    /// Every pid under /proc, ascending.
    pub fn pids(&self) -> Result<Vec<u32>, Error> {
        let dir = self.procfs().to_path_buf();
        let rd = std::fs::read_dir(&dir).map_err(|source| Error::Io { path: dir, source })?;
        let mut v: Vec<u32> = rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Direct children of `pid`: /proc/PID/task/PID/children where the
    /// kernel has it (CONFIG_PROC_CHILDREN), else a scan of every stat.
    pub fn children(&self, pid: u32) -> Result<Vec<u32>, Error> {
        let listed = self.proc_path(&format!("{pid}/task/{pid}/children"));
        if let Ok(s) = read_limited(&listed) {
            return Ok(s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect());
        }
        Ok(self
            .pids()?
            .into_iter()
            .filter(|p| self.ppid(*p).ok() == Some(pid))
            .collect())
    }

    /// A field of /proc/PID/status (`RssAnon`, `Uid`), its value trimmed;
    /// `None` when the kernel does not print that field.
    pub fn status_field(&self, pid: u32, name: &str) -> Result<Option<String>, Error> {
        let text = read_limited(&self.proc_path(&format!("{pid}/status")))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string()))
    }

    /// The soft value of a row of /proc/PID/limits (`Max processes`):
    /// `Ok(None)` when unlimited.
    pub fn soft_limit(&self, pid: u32, row: &str) -> Result<Option<u64>, Error> {
        let path = self.proc_path(&format!("{pid}/limits"));
        let text = read_limited(&path)?;
        let bad = |why: String| Error::Parse {
            path: PathBuf::from(&path),
            why,
        };
        let line = text
            .lines()
            .find(|l| l.starts_with(row))
            .ok_or_else(|| bad(format!("no row {row:?}")))?;
        match line[row.len()..].split_whitespace().next() {
            Some("unlimited") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("{row}: {v:?} is not a number"))),
            None => Err(bad(format!("{row}: no value"))),
        }
    }
}
