//! The servers a benchmark measures, as child processes of this binary (or
//! of a comparator such as rmcp's): started, their address read from the
//! JSON line they print once listening, killed on drop.

use anyhow::Context;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child server, killed on drop.
pub struct ChildServer {
    child: Child,
    pub addr: SocketAddr,
    /// The ready line the server printed.
    pub ready: Value,
}

impl ChildServer {
    /// Runs this binary with `args` (see [`ChildServer::spawn_program`]).
    pub fn spawn(args: &[&str]) -> anyhow::Result<ChildServer> {
        let exe = std::env::current_exe().context("locating the headroom binary")?;
        ChildServer::spawn_program(&exe, args)
    }

    /// Runs `program args`; its first stdout line is JSON naming the
    /// address in `listen` (or `http` for `serve --http` alone).
    pub fn spawn_program(program: &Path, args: &[&str]) -> anyhow::Result<ChildServer> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        let ready: anyhow::Result<(SocketAddr, Value)> = (|| {
            read?;
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("{}: ready line {line:?}", program.display()))?;
            let addr = v["listen"]
                .as_str()
                .or(v["http"].as_str())
                .context("no listen address in the ready line")?
                .parse()?;
            Ok((addr, v))
        })();
        match ready {
            Ok((addr, ready)) => Ok(ChildServer { child, addr, ready }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// `headroom serve` on a free loopback port, with an idle timeout no
    /// benchmark reaches, and `extra` arguments.
    pub fn serve(extra: &[&str]) -> anyhow::Result<ChildServer> {
        let mut a = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--idle-timeout",
            "3600",
        ];
        a.extend_from_slice(extra);
        ChildServer::spawn(&a)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident set size, bytes.
    pub fn rss(&self) -> u64 {
        super::measure::rss_of(self.child.id())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
