//! Starting the Erlang VM for the tests: `erl -noshell +Q N -eval SERVER`, a
//! plain gen_tcp server on 127.0.0.1:free port that accepts forever and
//! hands each connection to a holder process, which keeps it until the peer
//! closes. No compiled files: the server is the `-eval` snippet below.
#![allow(dead_code)]

use super::{free_port, Running, Scratch};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const ERL: &str = "/usr/bin/erl";

/// The server: listens on $HR_PORT, prints `listening PORT ports N`, then
/// per accept error `accept error REASON after N accepted, ports M` and
/// retries 200 ms later. Nothing is loaded lazily after the first accept
/// (no timer module), so it keeps running at the descriptor limit.
pub const SERVER: &str = r#"
Port = list_to_integer(os:getenv("HR_PORT")),
{ok, L} = gen_tcp:listen(Port, [binary, {ip, {127,0,0,1}}, {active, false}, {reuseaddr, true}, {backlog, 4096}]),
io:format("listening ~p ports ~p~n", [Port, erlang:system_info(port_count)]),
Hold = fun H(S) ->
    case gen_tcp:recv(S, 0) of
        {ok, _} -> H(S);
        {error, _} -> gen_tcp:close(S)
    end
end,
Loop = fun Loop(N) ->
    case gen_tcp:accept(L) of
        {ok, S} ->
            P = spawn(fun() -> receive go -> Hold(S) end end),
            ok = gen_tcp:controlling_process(S, P),
            P ! go,
            Loop(N + 1);
        {error, E} ->
            io:format("accept error ~p after ~p accepted, ports ~p~n", [E, N, erlang:system_info(port_count)]),
            receive after 200 -> ok end,
            Loop(N)
    end
end,
Loop(0).
"#;

/// The VM with `+Q port_limit` (0: no +Q, the VM's default) and, when
/// given, RLIMIT_NOFILE `nofile` (soft and hard). `Running::pid` is
/// beam.smp (erl and erlexec exec into it).
pub fn beam(port_limit: u64, nofile: Option<u64>) -> Running {
    let scratch = Scratch::new("beam");
    let port = free_port();
    let log = std::fs::File::create(scratch.path("beam.log")).expect("beam log");
    let mut cmd = Command::new(ERL);
    cmd.arg("-noshell");
    if port_limit > 0 {
        cmd.arg("+Q").arg(port_limit.to_string());
    }
    cmd.arg("-eval")
        .arg(SERVER)
        .env("HR_PORT", port.to_string())
        .env("HOME", &scratch.dir)
        .env_remove("ERL_FLAGS")
        .env_remove("ERL_AFLAGS")
        .env_remove("ERL_ZFLAGS")
        .env_remove("ERL_MAX_PORTS")
        .current_dir(&scratch.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    if let Some(n) = nofile {
        // SAFETY: setrlimit is async-signal-safe; runs in the child after fork.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let r = Running::start(cmd, addr, scratch);
    // The probe connection of Running::start is accepted and handed to a
    // holder; wait until it is gone again so that the VM is idle.
    let end = Instant::now() + Duration::from_secs(5);
    while beam_connections(&r) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    r
}

/// Connections the VM holds on its port (each one a port of its table).
pub fn beam_connections(r: &Running) -> u64 {
    super::nginx::established_by(r.pid, r.port())
}

/// The server's output: `listening ...`, `accept error system_limit ...`.
pub fn beam_log(r: &Running) -> String {
    std::fs::read_to_string(r.scratch.path("beam.log")).unwrap_or_default()
}
