//! One file per subcommand: its clap `Args` and a `run` that calls the crate
//! doing the work. Exit codes are documented in README.md.

pub mod advise;
pub mod bench;
pub mod completions;
pub mod fleet;
pub mod flood;
pub mod manpages;
pub mod preflight;
pub mod probe;
pub mod serve;
pub mod status;
pub mod top;
pub mod up;

/// How the server behind a target is looked at (`status`, `top`, `probe`,
/// `flood`, `serve`'s tools): its own connection cap, read live where it
/// answers on its port.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AppArgs {
    /// Environment variable holding the Redis password (`requirepass`), so
    /// that it never shows in a command line; without it a Redis that
    /// authenticates is read from its configuration file.
    #[arg(long, value_name = "VAR", default_value = "HEADROOM_REDIS_PASSWORD")]
    pub redis_password_env: String,
    /// File holding the Redis password (first line).
    #[arg(long, value_name = "FILE")]
    pub redis_password_file: Option<std::path::PathBuf>,
    /// Do not ask the server on its port; read command lines and files only.
    #[arg(long)]
    pub no_app_query: bool,
}

impl AppArgs {
    pub fn options(&self) -> anyhow::Result<headroom_apps::Options> {
        use anyhow::Context;
        let password = match &self.redis_password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("--redis-password-file {}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            None => std::env::var(&self.redis_password_env).ok(),
        };
        Ok(headroom_apps::Options {
            redis_password: password.filter(|p| !p.is_empty()),
            live: !self.no_app_query,
            ..Default::default()
        })
    }
}

/// Hands the last reference to every open descriptor (the eBPF programs,
/// links and maps among them) to a child process that closes them once
/// this process has exited. `source` (what holds the eBPF objects) is never
/// dropped here: its drop is the slow part. Used by every command that
/// attaches the probe and then exits (`top`, `up`, `advise`, `probe --once`).
pub fn detach_after_exit<T>(source: T) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the child runs only async-signal-safe calls (setsid, open,
    // dup2, getppid, nanosleep, _exit) before it exits; it touches no lock
    // another thread of this process could hold.
    unsafe {
        if libc::fork() == 0 {
            libc::setsid();
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            // Bounded: the parent is about to return from main.
            for _ in 0..3000 {
                if libc::getppid() != parent {
                    break;
                }
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 10_000_000,
                };
                libc::nanosleep(&ts, std::ptr::null_mut());
            }
            libc::_exit(0);
        }
    }
    std::mem::forget(source);
}

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
