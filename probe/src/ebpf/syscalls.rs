//! Which `syscalls:sys_exit_*` tracepoint gets which program, and syscall
//! numbers back to names for labels.

/// Syscalls that return one new fd on success.
pub const OPEN_ONE: &[&str] = &[
    "socket",
    "accept",
    "accept4",
    "open",
    "openat",
    "openat2",
    "creat",
    "dup",
    "epoll_create",
    "epoll_create1",
    "eventfd",
    "eventfd2",
    "timerfd_create",
    "inotify_init",
    "inotify_init1",
    "memfd_create",
    "pidfd_open",
    "fanotify_init",
    "userfaultfd",
    "io_uring_setup",
];
/// Syscalls that create two fds and return 0 on success.
pub const OPEN_TWO: &[&str] = &["pipe", "pipe2", "socketpair"];
/// Syscalls that close one fd and return 0 on success.
pub const CLOSE: &[&str] = &["close"];
/// Syscalls whose EMFILE/ENFILE/EADDRNOTAVAIL failures count, but whose fd
/// effect cannot be known at exit (dup2 may replace an open fd; close_range
/// closes an unknown number): /proc re-reads at each sample correct for them.
pub const ERRORS_ONLY: &[&str] = &["connect", "bind", "dup2", "dup3", "fcntl", "close_range"];

/// Name of a syscall number, for the `syscall` label.
pub fn name(nr: u32) -> String {
    #[cfg(target_arch = "x86_64")]
    let known: &[(u32, &str)] = &[
        (2, "open"),
        (3, "close"),
        (22, "pipe"),
        (32, "dup"),
        (33, "dup2"),
        (41, "socket"),
        (42, "connect"),
        (43, "accept"),
        (49, "bind"),
        (53, "socketpair"),
        (72, "fcntl"),
        (85, "creat"),
        (213, "epoll_create"),
        (253, "inotify_init"),
        (257, "openat"),
        (283, "timerfd_create"),
        (284, "eventfd"),
        (288, "accept4"),
        (290, "eventfd2"),
        (291, "epoll_create1"),
        (292, "dup3"),
        (293, "pipe2"),
        (294, "inotify_init1"),
        (300, "fanotify_init"),
        (319, "memfd_create"),
        (323, "userfaultfd"),
        (425, "io_uring_setup"),
        (434, "pidfd_open"),
        (436, "close_range"),
        (437, "openat2"),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let known: &[(u32, &str)] = &[];
    known
        .iter()
        .find(|(n, _)| *n == nr)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("nr_{nr}"))
}

/// Symbolic name of a counted errno.
pub fn errno_name(errno: u32) -> String {
    match errno {
        24 => "EMFILE".into(),
        23 => "ENFILE".into(),
        99 => "EADDRNOTAVAIL".into(),
        n => format!("E{n}"),
    }
}
