//! nginx's command line: the master's title, `-p`, `-c`, `-g`.

/// What the master's command line says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    /// The title was rewritten to `nginx: master process ...` (a master with
    /// workers); false: the process runs without a master (`master_process
    /// off`), or its title was not rewritten.
    pub master_title: bool,
    /// `-p prefix`.
    pub prefix: Option<String>,
    /// `-c file`.
    pub conf: Option<String>,
    /// `-g 'directives'`.
    pub globals: Option<String>,
}

const FLAGS: [&str; 12] = [
    "-c", "-p", "-g", "-e", "-s", "-q", "-t", "-T", "-v", "-V", "-h", "-?",
];

/// Parses nginx's command line. The master rewrites its title to
/// `nginx: master process` followed by its arguments joined with spaces, so
/// argument boundaries are gone: a `-g` value runs up to the next option.
pub fn parse_cmdline(cmdline: &[String]) -> Args {
    let joined = cmdline.join(" ");
    let (master_title, words): (bool, Vec<String>) =
        match joined.trim_start().strip_prefix("nginx: master process") {
            Some(rest) => (true, rest.split_whitespace().map(String::from).collect()),
            None => (false, cmdline.to_vec()),
        };
    let mut args = Args {
        master_title,
        ..Args::default()
    };
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        let Some(flag) = w
            .get(..2)
            .filter(|f| w.starts_with('-') && FLAGS.contains(f))
        else {
            continue;
        };
        let attached = &w[2..];
        let value = if !attached.is_empty() {
            Some(attached.to_string())
        } else if matches!(flag, "-c" | "-p" | "-g" | "-e" | "-s") && i < words.len() {
            if flag == "-g" && master_title {
                // Joined title: the directives run up to the next option.
                let start = i;
                while i < words.len() && !is_flag(&words[i]) {
                    i += 1;
                }
                Some(words[start..i].join(" "))
            } else {
                i += 1;
                Some(words[i - 1].clone())
            }
        } else {
            None
        };
        match flag {
            "-c" => args.conf = value,
            "-p" => args.prefix = value,
            "-g" => args.globals = value,
            _ => {}
        }
    }
    args
}

fn is_flag(w: &str) -> bool {
    w.get(..2)
        .is_some_and(|f| w.starts_with('-') && FLAGS.contains(&f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::strings as s;

    #[test]
    fn master_title_with_g_directives_and_prefix() {
        let a = parse_cmdline(&s(&[
            "nginx: master process /usr/sbin/nginx -p /srv/n/ -g daemon off; worker_processes 3; -c conf/n.conf",
        ]));
        assert!(a.master_title);
        assert_eq!(a.prefix.as_deref(), Some("/srv/n/"));
        assert_eq!(a.conf.as_deref(), Some("conf/n.conf"));
        assert_eq!(
            a.globals.as_deref(),
            Some("daemon off; worker_processes 3;")
        );
    }

    #[test]
    fn plain_argv_keeps_g_as_one_argument_and_attached_values() {
        let a = parse_cmdline(&s(&[
            "/usr/sbin/nginx",
            "-g",
            "daemon off; -x;",
            "-c/etc/x.conf",
        ]));
        assert!(!a.master_title);
        assert_eq!(a.globals.as_deref(), Some("daemon off; -x;"));
        assert_eq!(a.conf.as_deref(), Some("/etc/x.conf"));
        assert_eq!(
            parse_cmdline(&s(&["nginx: master process nginx"])),
            Args {
                master_title: true,
                ..Args::default()
            }
        );
    }
}
