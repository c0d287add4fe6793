//! One file per subcommand: its clap `Args` and a `run` that calls the crate
//! doing the work. Exit codes are documented in README.md.

pub mod bench;
pub mod bench_probe;
pub mod completions;
pub mod fleet;
pub mod flood;
pub mod manpages;
pub mod preflight;
pub mod probe;
pub mod serve;
pub mod serve_workers;
pub mod status;
pub mod top;
pub mod up;

/// A command that could not do its job (bad input, missing privilege, unknown pid).
pub const EXIT_ERROR: u8 = 3;

/// Result of every subcommand: the process exit code, or an error to print.
pub type CmdResult = anyhow::Result<std::process::ExitCode>;

/// For processes that hold tens of thousands of sessions (`serve`, `flood`):
/// glibc grows a thread's heap by 128 KiB at a time, one `mprotect` each,
/// and at that size every `mprotect` rebalances a large VMA tree; perf put
/// it at 4% of a server worker's CPU while sessions were opened. 1 MiB
/// steps make that 8 times rarer. 16 MiB cost 400-600 B of RSS per idle
/// session (`headroom bench sessions`, slope between 5,000 and 15,000
/// sessions: freed pages kept at the heap's top); 1 MiB measured 2,570
/// against 2,535 B without it, within run-to-run noise.
pub fn grow_heap_in_large_steps() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before the
    // process starts its threads.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}
