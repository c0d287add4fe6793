//! tracefs: tracepoints are attached through it, and minimal hosts and
//! containers often do not mount it.

use std::path::Path;

use super::Error;

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Makes sure tracefs is mounted at /sys/kernel/tracing (or reachable through
/// debugfs), mounting it when missing.
pub fn ensure_mounted() -> Result<(), Error> {
    if Path::new(TRACEFS).join("events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        return Ok(());
    }
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL");
    let fstype = std::ffi::CString::new("tracefs").expect("no NUL");
    let source = std::ffi::CString::new("nodev").expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings; data may be NULL.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::Tracefs(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed: {e}"
        )));
    }
    Ok(())
}

/// Whether a tracepoint exists on this kernel.
pub fn has_event(category: &str, name: &str) -> bool {
    [TRACEFS, "/sys/kernel/debug/tracing"].iter().any(|root| {
        Path::new(root)
            .join("events")
            .join(category)
            .join(name)
            .is_dir()
    })
}
