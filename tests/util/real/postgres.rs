//! Starting PostgreSQL 15 for the tests: `initdb` into a scratch directory
//! as the `postgres` user (trust authentication), then the postmaster in the
//! foreground as that user on 127.0.0.1:free port, its unix socket in the
//! scratch directory. The whole process group (postmaster, background
//! processes, backends) is killed on drop; the postmaster's SysV interlock
//! segment is marked for removal right after start so that it goes with the
//! last process, and dynamic shared memory lives in the data directory
//! (`dynamic_shared_memory_type = mmap`), so nothing outlives the scratch
//! directory.
#![allow(dead_code)]

use super::{free_port, Running, Scratch};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// uid and gid of the `postgres` user, from /etc/passwd.
pub fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == "postgres").then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .expect("no postgres user (apt-get install postgresql)")
}

/// A PostgreSQL 15 with `max_connections`, its postmaster under
/// RLIMIT_NPROC `nproc` (soft and hard) when given. RLIMIT_NPROC counts
/// every task of the postgres user on the host, other instances included.
/// Returns once a query is answered. `Running::pid` is the postmaster.
pub fn postgres(max_connections: u64, nproc: Option<u64>) -> Running {
    let scratch = Scratch::new("postgres");
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(&scratch.dir, Some(uid), Some(gid)).expect("chown scratch dir");
    let data = scratch.path("data");
    let out = Command::new(format!("{PG_BIN}/initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "--no-instructions",
        ])
        .args(["-E", "UTF8", "--locale=C", "-D"])
        .arg(&data)
        .current_dir(&scratch.dir)
        .env("HOME", &scratch.dir)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .expect("postgresql.conf");
    conf.write_all(
        b"\n# headroom tests\ndynamic_shared_memory_type = mmap\nshared_buffers = 16MB\n",
    )
    .expect("write postgresql.conf");

    let port = free_port();
    let log = std::fs::File::create(scratch.path("postgres.log")).expect("postgres log");
    let mut cmd = Command::new(format!("{PG_BIN}/postgres"));
    cmd.arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&scratch.dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("max_connections={max_connections}"))
        .current_dir(&scratch.dir)
        .env("HOME", &scratch.dir)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    if let Some(n) = nproc {
        // SAFETY: setrlimit is async-signal-safe; runs in the child after
        // fork (and after setuid: lowering a limit needs no privilege).
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NPROC, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let r = Running::start(cmd, addr, scratch);
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match startup(r.addr, "postgres") {
            Ok(_) => break,
            Err(e) if Instant::now() > end => {
                panic!("postgres not ready: {e}\n{}", postgres_log(&r))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    // The interlock segment goes with the last process that has it attached.
    if let Some(shmid) = std::fs::read_to_string(r.scratch.path("data/postmaster.pid"))
        .ok()
        .and_then(|t| {
            t.lines()
                .nth(6)?
                .split_whitespace()
                .nth(1)?
                .parse::<i32>()
                .ok()
        })
    {
        // SAFETY: IPC_RMID on a segment id of our own postmaster; no buffer.
        unsafe {
            libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
    r
}

/// A protocol-3 session as `user` on database `postgres`: the open socket
/// once the server says ReadyForQuery, else the server's error (`FATAL
/// 53300 sorry, too many clients already`), or what happened to the socket.
pub fn startup(addr: SocketAddr, user: &str) -> Result<TcpStream, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for kv in ["user", user, "database", "postgres"] {
        body.extend_from_slice(kv.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    // A server that refuses before reading (fork failure) may reset this.
    let _ = s.write_all(&msg);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf[0] == b'E' && !(4..=65536).contains(&len) {
                // Before the startup message: a bare "E" and text.
                return Err(String::from_utf8_lossy(&buf[1..])
                    .trim_matches('\0')
                    .trim()
                    .to_string());
            }
            if buf.len() < 1 + len {
                break;
            }
            let kind = buf[0];
            let payload = buf[5..1 + len].to_vec();
            buf.drain(..1 + len);
            match kind {
                b'Z' => {
                    s.set_read_timeout(None).ok();
                    return Ok(s);
                }
                b'E' => {
                    let mut fields = std::collections::BTreeMap::new();
                    for f in payload.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                        fields.insert(f[0], String::from_utf8_lossy(&f[1..]).into_owned());
                    }
                    let get = |k: u8| fields.get(&k).cloned().unwrap_or_default();
                    return Err(format!("{} {} {}", get(b'S'), get(b'C'), get(b'M')));
                }
                _ => {}
            }
        }
        match s.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err("closed".into()),
            Ok(0) => {
                return Err(String::from_utf8_lossy(&buf)
                    .trim_matches('\0')
                    .trim()
                    .to_string())
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if !buf.is_empty() => {
                return Err(format!(
                    "{} ({e})",
                    String::from_utf8_lossy(&buf).trim_matches('\0').trim()
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Opens sessions as `user` until one is refused (or `at_most`): the open
/// ones and the refusal.
pub fn fill(addr: SocketAddr, user: &str, at_most: usize) -> (Vec<TcpStream>, Option<String>) {
    let mut held = Vec::new();
    while held.len() < at_most {
        match startup(addr, user) {
            Ok(s) => held.push(s),
            Err(e) => return (held, Some(e)),
        }
    }
    (held, None)
}

/// Runs `sql` with psql as the superuser `postgres`; its unaligned output.
pub fn psql(r: &Running, sql: &str) -> String {
    psql_as(r, "postgres", sql)
}

/// Runs `sql` with psql as `user` (trust) and returns its unaligned output.
pub fn psql_as(r: &Running, user: &str, sql: &str) -> String {
    let out = Command::new(format!("{PG_BIN}/psql"))
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &r.port().to_string(),
            "-U",
            user,
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ordinary role (no superuser) that can log in.
pub fn create_role(r: &Running, name: &str) {
    psql(r, &format!("CREATE ROLE {name} LOGIN"));
}

/// PostgreSQL's own count of client backends, not counting the query's own.
pub fn client_backends(r: &Running) -> u64 {
    let n: u64 = psql(
        r,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
    )
    .parse()
    .expect("a count");
    n.saturating_sub(1)
}

/// Tasks (threads included) of the postgres user on the host: what
/// RLIMIT_NPROC counts, every instance of the user included.
pub fn postgres_tasks() -> u64 {
    let (uid, _) = postgres_ids();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
                == Some(uid)
        })
        .map(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
        })
        .sum()
}

/// The server's log (startup, "could not fork new process for connection").
pub fn postgres_log(r: &Running) -> String {
    std::fs::read_to_string(r.scratch.path("postgres.log")).unwrap_or_default()
}
