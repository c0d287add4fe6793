//! headroom-preflight: limits profiles. Check a host (and a process) against a
//! profile, apply it (runtime sysctls plus persisted sysctl.d, limits.d and a
//! systemd drop-in), and roll it back exactly.
//!
//! The core is pure and file-based: every read and write goes through a
//! [`Root`], which is `/` in production and a temp dir in tests. Each check is
//! tied to the connection capacity it buys through `headroom_core::predict`,
//! run on the snapshot as it is and with the profile applied. [`boot`]
//! computes what the next boot sets for every key and which file sets it.

pub mod apply;
pub mod boot;
pub mod check;
pub mod journal;
pub mod profile;
pub mod readings;
pub mod root;

pub use apply::{apply, plan, rollback, Applied, ApplyOptions, Plan, RollbackOutcome, Selector};
pub use check::{check, Check, Report, Status};
pub use profile::{Level, Loader, Profile, SysctlRule};
pub use readings::{read, Readings};
pub use root::Root;

/// Everything preflight can fail with; the binary adds context and exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A profile file is malformed or inconsistent.
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Profile {
        file: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("profile {name:?} not found (looked in {looked})")]
    NotFound { name: String, looked: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// One runtime or persisted write failed; what was written before it was undone.
    #[error("{key}: cannot write {value:?} to {path}: {reason}; {undo}")]
    Write {
        key: String,
        value: String,
        path: String,
        reason: String,
        /// What happened to the writes made before this one.
        undo: String,
    },
    /// A request that makes no sense here (observe-only profile, pending rollback...).
    #[error("{0}")]
    Usage(String),
    #[error("rollback state {path}: {message}")]
    State { path: String, message: String },
    /// The next boot would take back what apply writes: nothing was written.
    #[error("refused: the next boot would undo {}: {}; nothing written", .0.len(), .0.join("; "))]
    Overridden(Vec<String>),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
