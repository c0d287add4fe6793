//! What the attached programs cost: run count and run time per program,
//! counted by the kernel while [`RunStats`] is held (BPF_ENABLE_STATS; the
//! kernel counts for every program on the host until it is dropped, and the
//! counting itself adds two clock reads per run, so measure with it only
//! when the cost is the question).

use super::{EbpfProbe, Error};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// Kernel run-time statistics, on while this is held.
pub struct RunStats {
    _fd: OwnedFd,
}

impl RunStats {
    pub fn enable() -> Result<RunStats, Error> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map(|fd| RunStats { _fd: fd })
            .map_err(|e| Error::Load(format!("BPF_ENABLE_STATS: {e}")))
    }
}

/// One program's counters, cumulative since it was loaded (runs while
/// statistics were off are not counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    /// The program's name in the object, e.g. `inet_sock_set_state`.
    pub program: String,
    pub runs: u64,
    pub run_time: Duration,
}

impl EbpfProbe {
    /// Run count and run time of each loaded program, sorted by name.
    pub fn program_stats(&self) -> Result<Vec<ProgramStats>, Error> {
        let mut out = Vec::new();
        for (name, prog) in self.bpf.programs() {
            let Ok(info) = prog.info() else { continue }; // not loaded
            out.push(ProgramStats {
                program: name.to_string(),
                runs: info.run_count(),
                run_time: info.run_time(),
            });
        }
        out.sort_by(|a, b| a.program.cmp(&b.program));
        Ok(out)
    }
}
