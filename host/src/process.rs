//! The calling process's own limits and usage. These are syscalls, not
//! files, so no [`Host`](crate::Host) root applies: they always concern the
//! process that calls them.

use crate::Error;
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use nix::sys::time::TimeValLike;
use std::time::Duration;

/// A soft and a hard limit as the kernel keeps them: [`Rlimit::INFINITY`]
/// stands for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: u64,
    pub hard: u64,
}

impl Rlimit {
    /// RLIM_INFINITY.
    pub const INFINITY: u64 = nix::libc::RLIM_INFINITY;

    /// The soft limit, `None` for unlimited.
    pub fn soft_limit(&self) -> Option<u64> {
        (self.soft != Self::INFINITY).then_some(self.soft)
    }

    /// The hard limit, `None` for unlimited.
    pub fn hard_limit(&self) -> Option<u64> {
        (self.hard != Self::INFINITY).then_some(self.hard)
    }
}

fn syscall(call: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Syscall {
        call,
        source: e.into(),
    }
}

/// RLIMIT_NOFILE of this process.
pub fn nofile() -> Result<Rlimit, Error> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(syscall("getrlimit(RLIMIT_NOFILE)"))?;
    Ok(Rlimit { soft, hard })
}

/// Sets RLIMIT_NOFILE of this process.
pub fn set_nofile(limit: Rlimit) -> Result<(), Error> {
    setrlimit(Resource::RLIMIT_NOFILE, limit.soft, limit.hard)
        .map_err(syscall("setrlimit(RLIMIT_NOFILE)"))
}

/// Raises the soft RLIMIT_NOFILE to the hard one (no privilege needed) and
/// returns the limits now in force.
pub fn raise_nofile() -> Result<Rlimit, Error> {
    let l = nofile()?;
    if l.soft < l.hard {
        set_nofile(Rlimit {
            soft: l.hard,
            hard: l.hard,
        })?;
    }
    nofile()
}

/// User plus system CPU time this process has used so far.
pub fn cpu_time() -> Result<Duration, Error> {
    let ru = getrusage(UsageWho::RUSAGE_SELF).map_err(syscall("getrusage(RUSAGE_SELF)"))?;
    let us = |t: nix::sys::time::TimeVal| t.num_microseconds().max(0) as u64;
    Ok(Duration::from_micros(
        us(ru.user_time()) + us(ru.system_time()),
    ))
}

/// The page size in bytes (4096 where sysconf cannot say).
pub fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinity_reads_as_unlimited() {
        let l = Rlimit {
            soft: 1024,
            hard: Rlimit::INFINITY,
        };
        assert_eq!(l.soft_limit(), Some(1024));
        assert_eq!(l.hard_limit(), None);
    }

    #[test]
    fn nofile_round_trips_and_raises_to_hard() {
        let l = nofile().unwrap();
        assert!(l.soft <= l.hard);
        set_nofile(l).unwrap();
        assert_eq!(nofile().unwrap(), l);
        let raised = raise_nofile().unwrap();
        assert_eq!(raised.soft, l.hard);
        assert_eq!(raised.hard, l.hard);
        // The kernel refuses a nofile limit beyond fs.nr_open even to root,
        // and unlimited always is: the error names the call.
        let e = set_nofile(Rlimit {
            soft: Rlimit::INFINITY,
            hard: Rlimit::INFINITY,
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("setrlimit(RLIMIT_NOFILE): "),
            "{e}"
        );
    }

    #[test]
    fn cpu_time_does_not_go_back() {
        let a = cpu_time().unwrap();
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(cpu_time().unwrap() >= a);
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
    }
}
