//! HAProxy's command line.

/// What HAProxy's command line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `-f` files or directories and those after `--`, in order.
    pub files: Vec<String>,
    /// `-n N`: overrides global maxconn.
    pub maxconn: Option<u64>,
    /// `-N N`: the default maxconn of proxies.
    pub maxpconn: Option<u64>,
    /// `-W` / `-Ws`.
    pub master_worker: bool,
    /// `-S` master CLI sockets.
    pub master_sockets: u64,
    /// `-C DIR`: where relative paths start.
    pub chdir: Option<String>,
    /// `-m MB`: a memory cap that also sizes a derived maxconn.
    pub memmax: Option<u64>,
}

/// Parses HAProxy 2.6's command line (haproxy.c init_args()).
pub fn parse_args(cmdline: &[String]) -> Args {
    let mut a = Args::default();
    let mut i = 1;
    while i < cmdline.len() {
        let w = cmdline[i].as_str();
        let next = cmdline.get(i + 1).cloned();
        let Some(flag) = w.strip_prefix('-') else {
            i += 1;
            continue;
        };
        match flag {
            "-" => {
                a.files.extend(cmdline[i + 1..].iter().cloned());
                break;
            }
            "W" | "Ws" => a.master_worker = true,
            "sf" | "st" => {
                while cmdline.get(i + 1).is_some_and(|n| !n.starts_with('-')) {
                    i += 1;
                }
            }
            "x" | "cc" | "L" | "p" => i += 1,
            "S" => {
                a.master_sockets += 1;
                i += 1;
            }
            "f" => {
                if let Some(n) = next {
                    a.files.push(n);
                }
                i += 1;
            }
            "n" => {
                a.maxconn = next.and_then(|n| n.parse().ok());
                i += 1;
            }
            "N" => {
                a.maxpconn = next.and_then(|n| n.parse().ok());
                i += 1;
            }
            "m" => {
                a.memmax = next.and_then(|n| n.parse().ok());
                i += 1;
            }
            "C" => {
                a.chdir = next;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_files_flags_and_master_sockets() {
        let c = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let a = parse_args(&c("/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg -p /run/haproxy.pid -S /run/haproxy-master.sock"));
        assert_eq!(a.files, vec!["/etc/haproxy/haproxy.cfg"]);
        assert!(a.master_worker);
        assert_eq!(a.master_sockets, 1);
        let a = parse_args(&c(
            "haproxy -db -n 77 -N 5 -sf 12 13 -f a.cfg -C /etc -x /s -- b.cfg conf.d",
        ));
        assert_eq!(a.files, vec!["a.cfg", "b.cfg", "conf.d"]);
        assert_eq!(
            (a.maxconn, a.maxpconn, a.chdir.as_deref()),
            (Some(77), Some(5), Some("/etc"))
        );
        assert!(!a.master_worker);
        assert_eq!(parse_args(&c("haproxy -f")).files, Vec::<String>::new());
    }
}
