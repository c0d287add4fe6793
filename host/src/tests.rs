use super::*;
use std::fs;

/// A fixture tree: `files` written under `ROOT/proc/`.
fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Host) {
    let t = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = t.path().join("proc").join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    let host = Host::at(t.path());
    (t, host)
}

const MEMINFO: &str = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\nBuffers:            1000 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";

#[test]
fn paths_are_under_the_root() {
    assert_eq!(
        Host::system().sysctl_path("net.ipv4.ip_local_port_range"),
        PathBuf::from("/proc/sys/net/ipv4/ip_local_port_range")
    );
    assert_eq!(
        Host::default().proc_path("/meminfo"),
        PathBuf::from("/proc/meminfo")
    );
    let h = Host::at("/tmp/x");
    assert_eq!(h.procfs(), Path::new("/tmp/x/proc"));
    assert_eq!(
        h.sysctl_path("fs.file-nr"),
        PathBuf::from("/tmp/x/proc/sys/fs/file-nr")
    );
    assert_eq!(
        Host::with_procfs("/host/proc").proc_path("meminfo"),
        PathBuf::from("/host/proc/meminfo")
    );
}

#[test]
fn typed_sysctls_read_exact_values() {
    let (_t, h) = tree(&[
        ("sys/fs/nr_open", "1048576\n"),
        ("sys/fs/file-max", "9223372036854775807\n"),
        ("sys/fs/file-nr", "2016\t0\t9223372036854775807\n"),
        ("sys/net/ipv4/ip_local_port_range", "32768\t60999\n"),
        ("sys/net/ipv4/tcp_mem", "190053\t253404\t380106\n"),
        ("sys/net/core/somaxconn", "4096\n"),
    ]);
    assert_eq!(h.sysctl_u64("fs.nr_open").unwrap(), 1_048_576);
    assert_eq!(h.sysctl_u64("fs.file-max").unwrap(), i64::MAX as u64);
    assert_eq!(
        h.sysctl_pair("net.ipv4.ip_local_port_range").unwrap(),
        (32768, 60999)
    );
    assert_eq!(
        h.sysctl_triple("net.ipv4.tcp_mem").unwrap(),
        (190_053, 253_404, 380_106)
    );
    assert_eq!(
        h.file_nr().unwrap(),
        FileNr {
            allocated: 2016,
            unused: 0,
            max: i64::MAX as u64
        }
    );
    assert_eq!(h.sysctl("net.core.somaxconn").unwrap(), "4096");
    assert_eq!(
        h.sysctl_numbers("net.ipv4.tcp_mem", 1).unwrap(),
        vec![190_053, 253_404, 380_106]
    );
}

#[test]
fn a_missing_sysctl_is_optional_and_says_where() {
    let (t, h) = tree(&[("sys/net/core/somaxconn", "4096\n")]);
    let e = h.sysctl_u64("net.netfilter.nf_conntrack_max").unwrap_err();
    assert!(e.is_not_found());
    assert!(!e.is_permission_denied());
    let path = t.path().join("proc/sys/net/netfilter/nf_conntrack_max");
    assert_eq!(e.path(), Some(path.as_path()));
    assert!(
        e.to_string().starts_with(&format!("{}: ", path.display())),
        "{e}"
    );
    assert_eq!(
        optional(h.sysctl_u64("net.netfilter.nf_conntrack_max")).unwrap(),
        None
    );
    assert_eq!(
        optional(h.sysctl_u64("net.core.somaxconn")).unwrap(),
        Some(4096)
    );
}

#[test]
fn malformed_sysctls_are_errors_naming_the_path() {
    let (t, h) = tree(&[
        ("sys/net/core/somaxconn", "lots\n"),
        ("sys/net/ipv4/ip_local_port_range", "32768\n"),
        ("sys/net/ipv4/tcp_mem", "1 2 x\n"),
        ("sys/fs/nr_open", ""),
    ]);
    let p = |rel: &str| t.path().join("proc/sys").join(rel).display().to_string();
    assert_eq!(
        h.sysctl_u64("net.core.somaxconn").unwrap_err().to_string(),
        format!(
            "cannot parse {}: \"lots\" is not a number",
            p("net/core/somaxconn")
        )
    );
    assert_eq!(
        h.sysctl_pair("net.ipv4.ip_local_port_range")
            .unwrap_err()
            .to_string(),
        format!(
            "cannot parse {}: expected 2 numbers, found 1",
            p("net/ipv4/ip_local_port_range")
        )
    );
    assert_eq!(
        h.sysctl_triple("net.ipv4.tcp_mem").unwrap_err().to_string(),
        format!(
            "cannot parse {}: \"x\" is not a number",
            p("net/ipv4/tcp_mem")
        )
    );
    assert_eq!(
        h.sysctl_u64("fs.nr_open").unwrap_err().to_string(),
        format!(
            "cannot parse {}: expected 1 numbers, found 0",
            p("fs/nr_open")
        )
    );
    // A parse error is not "absent": optional passes it on.
    assert!(optional(h.sysctl_u64("net.core.somaxconn")).is_err());
}

#[test]
fn unreadable_oversized_and_binary_files_are_errors() {
    let (t, h) = tree(&[("sys/fs/nr_open", "1\n")]);
    // A directory where a file should be: open succeeds, read fails (EISDIR),
    // which stands in for an unreadable file even when tests run as root.
    fs::create_dir_all(t.path().join("proc/sys/net/core/somaxconn")).unwrap();
    let e = h.sysctl_u64("net.core.somaxconn").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(!e.is_not_found());
    assert_eq!(
        e.path(),
        Some(t.path().join("proc/sys/net/core/somaxconn").as_path())
    );
    assert!(optional(h.sysctl_u64("net.core.somaxconn")).is_err());

    let big = t.path().join("proc/meminfo");
    fs::write(&big, "x".repeat(READ_LIMIT as usize + 1)).unwrap();
    assert_eq!(
        h.meminfo().unwrap_err().to_string(),
        format!("{}: larger than 65536 bytes", big.display())
    );
    fs::write(&big, "x".repeat(READ_LIMIT as usize)).unwrap();
    assert_eq!(h.read_proc("meminfo").unwrap().len(), READ_LIMIT as usize);

    fs::write(t.path().join("proc/sys/fs/nr_open"), b"\xff\xfe\n").unwrap();
    let e = h.sysctl("fs.nr_open").unwrap_err();
    assert!(e.to_string().ends_with(": not UTF-8"), "{e}");
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidData);
}

#[test]
fn io_errors_convert_with_their_kind() {
    let (_t, h) = tree(&[]);
    let e: io::Error = h.sysctl("net.core.somaxconn").unwrap_err().into();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

#[test]
fn meminfo_fixture_gives_bytes() {
    let (_t, h) = tree(&[("meminfo", MEMINFO)]);
    let m = h.meminfo().unwrap();
    assert_eq!(m.total(), Some(24_576_000 * 1024));
    assert_eq!(m.available(), Some(20_000_000 * 1024));
    assert_eq!(m.free(), Some(1_000_000 * 1024));
    assert_eq!(m.get("HugePages_Total"), Some(0));
    assert_eq!(m.get("Hugepagesize"), Some(2048 * 1024));
    assert_eq!(m.get("Cached"), None);
}

#[test]
fn partial_meminfo_reads_and_malformed_is_an_error() {
    let (t, h) = tree(&[("meminfo", "MemTotal: 25165824 kB\n\n")]);
    let m = h.meminfo().unwrap();
    assert_eq!(m.total(), Some(25_165_824 * 1024));
    assert_eq!(m.available(), None);

    let path = t.path().join("proc/meminfo");
    for (text, why) in [
        (
            "MemTotal: 1 kB\nMemFree 2 kB\n",
            "line 2: \"MemFree 2 kB\" is not \"Name: value [kB]\"",
        ),
        (
            "MemTotal: many kB\n",
            "line 1: \"MemTotal: many kB\" is not \"Name: value [kB]\"",
        ),
        (
            "MemTotal: 1 MB\n",
            "line 1: \"MemTotal: 1 MB\" is not \"Name: value [kB]\"",
        ),
    ] {
        fs::write(&path, text).unwrap();
        assert_eq!(
            h.meminfo().unwrap_err().to_string(),
            format!("cannot parse {}: {why}", path.display())
        );
    }
    fs::remove_file(&path).unwrap();
    assert!(h.meminfo().unwrap_err().is_not_found());
}

#[test]
fn numbers_parse_as_the_kernel_prints_vectors() {
    assert_eq!(parse_numbers("32768\t60999\n"), Some(vec![32768, 60999]));
    assert_eq!(parse_numbers("12 x"), None);
    assert_eq!(parse_numbers(""), None);
}

#[test]
fn rss_is_statm_resident_pages_times_the_page_size() {
    let (_t, h) = tree(&[
        ("42/statm", "5000 250 100 10 0 300 0\n"),
        ("43/statm", "5000\n"),
    ]);
    assert_eq!(h.rss_bytes(42).unwrap(), 250 * process::page_size());
    let e = h.rss_bytes(43).unwrap_err();
    assert!(e.to_string().contains("43/statm"), "{e}");
    assert!(h.rss_bytes(44).unwrap_err().is_not_found());
}

/// A process directory as the kernel writes it, for the pid readers.
fn process_tree() -> (tempfile::TempDir, Host) {
    let (t, host) = tree(&[
        ("41/cmdline", "nginx: master process /usr/sbin/nginx\0-c\0/etc/x.conf\0"),
        ("41/stat", "41 (ng) (x) S 1 41 41 0 -1 4194560 0 0\n"),
        ("41/status", "Name:\tnginx\nUid:\t0\t0\t0\t0\nRssAnon:\t    1234 kB\n"),
        (
            "41/limits",
            "Limit                     Soft Limit           Hard Limit           Units     \nMax processes             96068                96068                processes \nMax open files            unlimited            unlimited            files     \n",
        ),
        ("42/stat", "42 (nginx) S 41 41 41 0 -1 0 0\n"),
        ("43/stat", "43 (nginx) S 41 41 41 0 -1 0 0\n"),
        ("44/stat", "44 (bash) S 1 44 44 0 -1 0 0\n"),
        ("self-not-a-pid/stat", "x"),
    ]);
    std::os::unix::fs::symlink("/usr/sbin/nginx (deleted)", t.path().join("proc/41/exe")).unwrap();
    (t, host)
}

#[test]
fn cmdline_is_split_at_nul_and_keeps_spaces_inside_an_argument() {
    let (_t, h) = process_tree();
    assert_eq!(
        h.cmdline(41).unwrap(),
        ["nginx: master process /usr/sbin/nginx", "-c", "/etc/x.conf"]
    );
    assert!(h.cmdline(99).unwrap_err().is_not_found());
}

#[test]
fn exe_drops_the_deleted_suffix_of_a_replaced_binary() {
    let (_t, h) = process_tree();
    assert_eq!(h.exe(41).unwrap(), "/usr/sbin/nginx");
    assert!(h.exe(42).unwrap_err().is_not_found());
}

#[test]
fn ppid_reads_past_a_comm_with_parentheses_and_spaces() {
    let (_t, h) = process_tree();
    assert_eq!(h.ppid(41).unwrap(), 1);
    assert_eq!(h.ppid(42).unwrap(), 41);
    let (_t2, bad) = tree(&[("7/stat", "7 (cut short")]);
    assert!(matches!(bad.ppid(7), Err(Error::Parse { .. })));
}

#[test]
fn children_from_the_kernels_list_or_from_every_stat() {
    let (t, h) = process_tree();
    assert_eq!(h.pids().unwrap(), [41, 42, 43, 44]);
    // No task/PID/children file: a scan of every stat.
    assert_eq!(h.children(41).unwrap(), [42, 43]);
    assert_eq!(h.children(44).unwrap(), Vec::<u32>::new());
    // Where the kernel lists them, its list is taken as it is.
    let list = t.path().join("proc/41/task/41");
    fs::create_dir_all(&list).unwrap();
    fs::write(list.join("children"), "43 ").unwrap();
    assert_eq!(h.children(41).unwrap(), [43]);
}

#[test]
fn status_fields_and_limit_rows() {
    let (_t, h) = process_tree();
    assert_eq!(
        h.status_field(41, "RssAnon").unwrap().as_deref(),
        Some("1234 kB")
    );
    assert_eq!(
        h.status_field(41, "Uid").unwrap().as_deref(),
        Some("0\t0\t0\t0")
    );
    assert_eq!(h.status_field(41, "VmSwap").unwrap(), None);
    assert_eq!(h.soft_limit(41, "Max processes").unwrap(), Some(96068));
    assert_eq!(h.soft_limit(41, "Max open files").unwrap(), None);
    assert!(matches!(
        h.soft_limit(41, "Max locked memory"),
        Err(Error::Parse { .. })
    ));
}
