//! The postmaster's children told apart by their titles: client backends,
//! connections not yet started, the rest.

/// What a child of the postmaster is, from its title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// `postgres: USER DB HOST(PORT) ACTIVITY` (or `[local]`): holds one of
    /// max_connections.
    Client,
    /// Forked for a connection that has not sent its startup message yet:
    /// still the postmaster's title; holds a process, not a slot.
    Starting,
    /// Background processes, walsenders, autovacuum and parallel workers.
    Other,
}

/// Classifies a child by its title (`cluster_name` prefixes titles with
/// `NAME: `).
pub fn classify(title: &str, postmaster_title: &str, cluster: Option<&str>) -> Child {
    let title = title.trim();
    if title == postmaster_title.trim() {
        return Child::Starting;
    }
    let Some(mut rest) = title.strip_prefix("postgres: ") else {
        return Child::Other;
    };
    if let Some(c) = cluster.filter(|c| !c.is_empty()) {
        rest = rest.strip_prefix(&format!("{c}: ")).unwrap_or(rest);
    }
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    if words.len() > 3 && words[0].ends_with(':') && !is_host(words[2]) && is_host(words[3]) {
        words.remove(0);
    }
    if words.first() == Some(&"walsender") || words.len() < 3 {
        return Child::Other;
    }
    if is_host(words[2]) {
        Child::Client
    } else {
        Child::Other
    }
}

fn is_host(w: &str) -> bool {
    w == "[local]"
        || w.strip_suffix(')')
            .and_then(|x| x.rsplit_once('('))
            .is_some_and(|(h, p)| {
                !h.is_empty() && !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_tell_client_backends_from_the_rest() {
        let pm = "/usr/lib/postgresql/15/bin/postgres -D /d";
        assert_eq!(
            classify("postgres: app postgres 127.0.0.1(40466) idle", pm, None),
            Child::Client
        );
        assert_eq!(
            classify("postgres: app db [local] SELECT", pm, None),
            Child::Client
        );
        assert_eq!(
            classify(
                "postgres: 15/main: app db 10.0.0.1(5) idle in transaction",
                pm,
                Some("15/main")
            ),
            Child::Client
        );
        assert_eq!(
            classify("postgres: 15/main: app db 10.0.0.1(5) idle", pm, None),
            Child::Client
        );
        assert_eq!(classify(pm, pm, None), Child::Starting);
        for other in [
            "postgres: checkpointer ",
            "postgres: background writer ",
            "postgres: walwriter ",
            "postgres: autovacuum launcher ",
            "postgres: autovacuum worker postgres",
            "postgres: logical replication launcher ",
            "postgres: walsender rep 10.0.0.2(40000) streaming 0/3000148",
            "postgres: parallel worker for PID 1234",
            "postgres: 15/main: checkpointer",
        ] {
            assert_eq!(classify(other, pm, None), Child::Other, "{other}");
        }
    }
}
