//! Whether the tests run as root, and the guard of the tests that need it.
//! A file of its own, with nothing but libc, so that the probe crate's unit
//! tests include this same guard (`#[path]`) instead of a copy of it.

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The first line of every test marked `#[ignore = "needs root"]`. Such a
/// test runs only when asked for (scripts/test.sh asks as root); asked for
/// without root, it fails saying so instead of passing having checked
/// nothing.
#[track_caller]
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (run as root with --ignored or --include-ignored)"
    );
}
