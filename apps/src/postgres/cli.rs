//! The postmaster's command line (its getopt string), postmaster.opts, and
//! the data directory (`-D`, PGDATA, the working directory).

use crate::host::Host;
use headroom_core::AppInfo;

/// The postmaster's command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    /// `-D`.
    pub data_dir: Option<String>,
    /// `-c name=value`, `--name=value`, `-N`, in order (names lowercased,
    /// dashes made underscores).
    pub settings: Vec<(String, String, String)>,
    pub problems: Vec<String>,
}

/// Parses the postmaster's options as its getopt string
/// `B:bC:c:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:W:-:` does.
pub fn parse_args(argv: &[String]) -> Args {
    const WITH_ARG: &[u8] = b"BCcDdfhkNprStW-";
    let mut a = Args::default();
    let mut i = 1;
    while i < argv.len() {
        let w = argv[i].as_bytes();
        i += 1;
        if w.len() < 2 || w[0] != b'-' {
            continue;
        }
        let mut j = 1;
        while j < w.len() {
            let opt = w[j];
            j += 1;
            if !WITH_ARG.contains(&opt) {
                continue;
            }
            let value = if j < w.len() {
                String::from_utf8_lossy(&w[j..]).into_owned()
            } else if i < argv.len() {
                i += 1;
                argv[i - 1].clone()
            } else {
                a.problems.push(format!(
                    "option -{} without a value in the command line",
                    opt as char
                ));
                break;
            };
            let written = if opt == b'-' {
                format!("--{value}")
            } else {
                format!("-{} {value}", opt as char)
            };
            match opt {
                b'D' => a.data_dir = Some(value),
                b'N' => a.settings.push(("max_connections".into(), value, written)),
                b'B' => a.settings.push(("shared_buffers".into(), value, written)),
                b'c' | b'-' => match value.split_once('=') {
                    Some((n, v)) => a.settings.push((guc_name(n), v.to_string(), written)),
                    None => a.problems.push(format!("{written}: no value")),
                },
                _ => {}
            }
            break;
        }
    }
    a
}

/// GUC names are case-insensitive; on the command line dashes stand for
/// underscores.
fn guc_name(n: &str) -> String {
    n.trim().to_ascii_lowercase().replace('-', "_")
}

/// postmaster.opts: the program, then each argument in double quotes.
pub fn parse_postmaster_opts(text: &str) -> Vec<String> {
    let line = text.lines().next().unwrap_or("");
    let mut out = Vec::new();
    let (prog, rest) = line.split_once(" \"").map_or((line, ""), |(p, r)| (p, r));
    out.push(prog.trim().to_string());
    if !rest.is_empty() {
        let rest = format!("\"{rest}");
        for part in rest.split("\" \"") {
            out.push(part.trim().trim_matches('"').to_string());
        }
    }
    out
}

/// The data directory: `-D`, else PGDATA in the environment, else the
/// postmaster's working directory.
pub(super) fn data_dir(host: &Host, pm: u32, args: &Args, info: &mut AppInfo) -> Option<String> {
    let cwd = || {
        std::fs::read_link(host.path(&format!("/proc/{pm}/cwd")))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    if let Some(d) = &args.data_dir {
        if d.starts_with('/') {
            return Some(d.trim_end_matches('/').to_string());
        }
        // A relative -D is made absolute at start; the postmaster then
        // changes into it.
        if let Some(c) = cwd() {
            return Some(c);
        }
    }
    let env = std::fs::read(host.path(&format!("/proc/{pm}/environ"))).ok();
    if let Some(pgdata) = env.as_ref().and_then(|e| {
        e.split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"PGDATA="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }) {
        if pgdata.starts_with('/') {
            return Some(pgdata.trim_end_matches('/').to_string());
        }
    }
    let c = cwd()?;
    info.notes.push(format!(
        "data directory taken from the postmaster's working directory ({c})"
    ));
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::tests::{proc_tree, run};
    use crate::testkit::{strings as s, Root};

    #[test]
    fn command_line_options_in_every_spelling_last_wins() {
        let a = parse_args(&s(&[
            "/usr/lib/postgresql/15/bin/postgres",
            "-D",
            "/d",
            "-c",
            "max_connections=10",
            "--Superuser-Reserved-Connections=5",
            "-N",
            "7",
            "-cport=5433",
            "-Fi",
            "-k/tmp",
        ]));
        assert_eq!(a.data_dir.as_deref(), Some("/d"));
        let names: Vec<(&str, &str)> = a
            .settings
            .iter()
            .map(|(n, v, _)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("max_connections", "10"),
                ("superuser_reserved_connections", "5"),
                ("max_connections", "7"),
                ("port", "5433")
            ]
        );
        assert!(a.problems.is_empty());
        assert_eq!(
            parse_args(&s(&["postgres", "-c", "novalue"]))
                .problems
                .len(),
            1
        );
    }

    #[test]
    fn postmaster_opts_is_split_on_its_quotes() {
        let t = "/usr/lib/postgresql/15/bin/postgres \"-D\" \"/tmp/pg 1/data\" \"-c\" \"max_connections=10\"\n";
        assert_eq!(
            parse_postmaster_opts(t),
            s(&[
                "/usr/lib/postgresql/15/bin/postgres",
                "-D",
                "/tmp/pg 1/data",
                "-c",
                "max_connections=10"
            ])
        );
    }

    #[test]
    fn data_dir_from_pgdata_or_cwd_and_opts_when_cmdline_is_empty() {
        let r = Root::new("pgdata");
        proc_tree(&r, "/usr/lib/postgresql/15/bin/postgres", "unlimited");
        r.process(300, "postgres")
            .environ(b"HOME=/x\0PGDATA=/data\0");
        let (info, _, _) = run(&r);
        assert_eq!(info.caps[0].limit, 200);
        std::fs::remove_file(r.path("/proc/300/environ")).unwrap();
        r.link("/proc/300/cwd", r.path("/data"));
        let host = r.host();
        let mut info = AppInfo::default();
        let d = data_dir(&host, 300, &Args::default(), &mut info).unwrap();
        assert!(d.ends_with("/data"), "{d}");
        assert_eq!(info.notes.len(), 1);
    }
}
