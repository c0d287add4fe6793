//! Profiles: YAML files naming the limits a host needs for a target number of
//! connections. Parsing is strict (unknown keys are errors) and every error
//! names the file, the line and the key; `extends` chains are resolved here.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a failed rule counts: `fail` makes `check` exit 1, `warn` exit 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Fail,
    Warn,
}

/// A requirement on one sysctl: `min`, `max`, both, `exact`, or (for the
/// port range) `range: [low, high]`, which the current range must cover.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(u64, u64)>,
    #[serde(default)]
    pub level: Level,
}

/// RLIMIT_NOFILE the target's processes need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NofileRule {
    pub soft: u64,
    pub hard: u64,
    #[serde(default)]
    pub level: Level,
}

/// Memory the target needs: `target_connections * bytes_per_connection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryAdvice {
    pub bytes_per_connection: u64,
}

/// nf_conntrack_max, checked only when the conntrack module is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackAdvice {
    pub min: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RlimitsDoc {
    #[serde(default)]
    nofile: Option<NofileRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvisoryDoc {
    #[serde(default)]
    memory: Option<MemoryAdvice>,
    #[serde(default)]
    conntrack: Option<ConntrackAdvice>,
}

/// One file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileDoc {
    name: String,
    description: String,
    #[serde(default)]
    extends: Option<String>,
    #[serde(default)]
    target_connections: Option<u64>,
    #[serde(default)]
    observe_only: bool,
    #[serde(default)]
    sysctls: BTreeMap<String, SysctlRule>,
    #[serde(default)]
    rlimits: RlimitsDoc,
    #[serde(default)]
    advisory: AdvisoryDoc,
}

/// A profile with its `extends` chain resolved: children override their
/// parent key by key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Where each link of the chain came from, this profile first.
    pub chain: Vec<String>,
    pub target_connections: u64,
    /// Never applied (`baseline`): `apply` refuses it.
    pub observe_only: bool,
    /// Sorted by key, which is also the order `apply` writes them in.
    pub sysctls: BTreeMap<String, SysctlRule>,
    pub nofile: Option<NofileRule>,
    pub memory: Option<MemoryAdvice>,
    pub conntrack: Option<ConntrackAdvice>,
}

/// Sysctls whose value is a pair; only these take `range`.
pub const RANGE_KEYS: &[&str] = &["net.ipv4.ip_local_port_range"];

/// Profiles shipped inside the binary, found when no file of that name is.
const BUILTIN: &[(&str, &str)] = &[
    ("baseline", include_str!("../../profiles/baseline.yaml")),
    ("c10k", include_str!("../../profiles/c10k.yaml")),
    ("c100k", include_str!("../../profiles/c100k.yaml")),
    ("c1m", include_str!("../../profiles/c1m.yaml")),
];

/// Where profiles are looked up by name.
#[derive(Debug, Clone)]
pub struct Loader {
    pub dirs: Vec<PathBuf>,
    /// Fall back to the profiles compiled into the binary.
    pub builtin: bool,
}

impl Default for Loader {
    /// `./profiles`, then `/etc/headroom/profiles` (the admin's), then
    /// `/usr/share/headroom/profiles` (the package's), then built in.
    fn default() -> Self {
        Loader {
            dirs: vec![
                PathBuf::from("profiles"),
                PathBuf::from("/etc/headroom/profiles"),
                PathBuf::from("/usr/share/headroom/profiles"),
            ],
            builtin: true,
        }
    }
}

struct Source {
    /// Shown in errors: a path, or `builtin:NAME`.
    label: String,
    text: String,
    /// Directory `extends` is looked up in first.
    dir: Option<PathBuf>,
}

fn is_path(s: &str) -> bool {
    s.contains('/') || s.ends_with(".yaml") || s.ends_with(".yml")
}

impl Loader {
    /// Loads a profile by name (`c100k`) or path (`./my.yaml`) and resolves
    /// its `extends` chain.
    pub fn load(&self, name_or_path: &str) -> Result<Profile, Error> {
        let first = if is_path(name_or_path) {
            read_source(Path::new(name_or_path))?
        } else {
            self.find(name_or_path, None)?
        };
        let mut docs: Vec<(Source, ProfileDoc)> = Vec::new();
        let mut src = first;
        loop {
            let doc = parse(&src)?;
            if docs.iter().any(|(_, d)| d.name == doc.name) {
                let mut names: Vec<&str> = docs.iter().map(|(_, d)| d.name.as_str()).collect();
                names.push(&doc.name);
                let (last_src, _) = docs.last().expect("a cycle needs a link before it");
                return Err(at(
                    last_src,
                    &["extends"],
                    "extends",
                    format!("cycle: {}", names.join(" -> ")),
                ));
            }
            let parent = doc.extends.clone();
            let dir = src.dir.clone();
            docs.push((src, doc));
            match parent {
                None => break,
                Some(p) => {
                    let (child_src, _) = docs.last().unwrap();
                    src = if is_path(&p) {
                        let base = dir.unwrap_or_else(|| PathBuf::from("."));
                        read_source(&base.join(&p))
                    } else {
                        self.find(&p, dir.as_deref())
                    }
                    .map_err(|e| at(child_src, &["extends"], "extends", e.to_string()))?;
                }
            }
        }
        resolve(docs)
    }

    fn find(&self, name: &str, near: Option<&Path>) -> Result<Source, Error> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Usage(format!(
                "profile name {name:?}: use letters, digits, - and _, or give a path"
            )));
        }
        let mut looked = Vec::new();
        for dir in near
            .into_iter()
            .chain(self.dirs.iter().map(PathBuf::as_path))
        {
            for ext in ["yaml", "yml"] {
                let p = dir.join(format!("{name}.{ext}"));
                if p.is_file() {
                    return read_source(&p);
                }
            }
            looked.push(dir.display().to_string());
        }
        if self.builtin {
            if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) {
                return Ok(Source {
                    label: format!("builtin:{name}"),
                    text: text.to_string(),
                    dir: None,
                });
            }
            looked.push("the built-in profiles".into());
        }
        Err(Error::NotFound {
            name: name.to_string(),
            looked: looked.join(", "),
        })
    }

    /// Names of every profile this loader can find, for `--help` and errors.
    pub fn available(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for dir in &self.dirs {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                        if let Some(s) = p.file_stem().and_then(|s| s.to_str()) {
                            names.push(s.to_string());
                        }
                    }
                }
            }
        }
        if self.builtin {
            names.extend(BUILTIN.iter().map(|(n, _)| n.to_string()));
        }
        names.sort();
        names.dedup();
        names
    }
}

fn read_source(path: &Path) -> Result<Source, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    Ok(Source {
        label: path.display().to_string(),
        text,
        dir: path.parent().map(Path::to_path_buf),
    })
}

/// Line and column (1-based) of a key path in YAML text: each segment is
/// looked for as `segment:` at or after the line of the one before it.
fn locate(text: &str, path: &[&str]) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let (mut line, mut col) = (0usize, 0usize);
    let mut found = false;
    for seg in path {
        let start = if found { line + 1 } else { 0 };
        let hit = lines.iter().enumerate().skip(start).find_map(|(i, l)| {
            let body = l.trim_start();
            let key = body
                .strip_prefix(*seg)
                .or_else(|| body.strip_prefix(&format!("\"{seg}\"") as &str))
                .or_else(|| body.strip_prefix(&format!("'{seg}'") as &str))?;
            key.trim_start()
                .starts_with(':')
                .then_some((i, l.len() - body.len()))
        });
        if let Some((i, c)) = hit {
            (line, col, found) = (i, c, true);
        }
    }
    if found {
        (line + 1, col + 1)
    } else {
        (1, 1)
    }
}

fn at(src: &Source, path: &[&str], key: &str, message: String) -> Error {
    let (line, column) = locate(&src.text, path);
    Error::Profile {
        file: src.label.clone(),
        line,
        column,
        key: key.to_string(),
        message,
    }
}

fn parse(src: &Source) -> Result<ProfileDoc, Error> {
    let doc: ProfileDoc = serde_yaml::from_str(&src.text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        // serde_yaml's message is "path: what at line L column C"; we print
        // the location first, so drop its copy.
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        let (key, message) = match msg.split_once(": ") {
            Some((k, m)) if !k.contains(' ') => (k.to_string(), m.to_string()),
            _ => ("(document)".to_string(), msg),
        };
        Error::Profile {
            file: src.label.clone(),
            line,
            column,
            key,
            message,
        }
    })?;
    validate(src, &doc)?;
    Ok(doc)
}

fn validate(src: &Source, doc: &ProfileDoc) -> Result<(), Error> {
    if let Some(stem) = Path::new(&src.label)
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|_| !src.label.starts_with("builtin:"))
    {
        if stem != doc.name {
            return Err(at(
                src,
                &["name"],
                "name",
                format!("{:?} does not match the file name {stem:?}", doc.name),
            ));
        }
    }
    if doc.target_connections == Some(0) {
        return Err(at(
            src,
            &["target_connections"],
            "target_connections",
            "must be at least 1".into(),
        ));
    }
    for (key, rule) in &doc.sysctls {
        let err = |m: String| at(src, &["sysctls", key], &format!("sysctls.{key}"), m);
        check_sysctl_name(key).map_err(err)?;
        validate_rule(key, rule).map_err(err)?;
    }
    if let Some(n) = &doc.rlimits.nofile {
        let err = |m: String| at(src, &["rlimits", "nofile"], "rlimits.nofile", m);
        if n.soft == 0 || n.soft > n.hard {
            return Err(err(format!("soft {} must be 1..=hard {}", n.soft, n.hard)));
        }
        if let Some(nr_open) = doc.sysctls.get("fs.nr_open").and_then(|r| r.min) {
            if n.hard > nr_open {
                return Err(err(format!(
                    "hard {} exceeds fs.nr_open min {nr_open}: the kernel refuses any RLIMIT_NOFILE above fs.nr_open",
                    n.hard
                )));
            }
        }
    }
    if let Some(m) = &doc.advisory.memory {
        if m.bytes_per_connection == 0 {
            return Err(at(
                src,
                &["advisory", "memory", "bytes_per_connection"],
                "advisory.memory.bytes_per_connection",
                "must be at least 1".into(),
            ));
        }
    }
    Ok(())
}

fn check_sysctl_name(key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let ok_chars = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) || !ok_chars {
        return Err("not a sysctl name (dotted, like net.core.somaxconn)".into());
    }
    if !matches!(parts[0], "fs" | "net" | "vm" | "kernel") {
        return Err(format!(
            "unknown sysctl tree {:?}: expected fs, net, vm or kernel",
            parts[0]
        ));
    }
    Ok(())
}

fn validate_rule(key: &str, r: &SysctlRule) -> Result<(), String> {
    let is_range_key = RANGE_KEYS.contains(&key);
    match (r.min, r.max, r.exact, r.range) {
        (None, None, None, None) => Err("needs one of min, max, exact or range".into()),
        (_, _, Some(_), _) if r.min.is_some() || r.max.is_some() || r.range.is_some() => {
            Err("exact cannot be combined with min, max or range".into())
        }
        (_, _, _, Some(_)) if r.min.is_some() || r.max.is_some() => {
            Err("range cannot be combined with min or max".into())
        }
        (Some(lo), Some(hi), _, _) if lo > hi => Err(format!("min {lo} > max {hi}")),
        (_, _, _, Some(_)) if !is_range_key => {
            Err(format!("range applies only to {}", RANGE_KEYS.join(", ")))
        }
        (_, _, _, Some((lo, hi))) => {
            if lo >= hi {
                Err(format!("range low {lo} >= high {hi}"))
            } else if lo < 1024 || hi > 65535 {
                Err(format!(
                    "range {lo}-{hi} outside 1024-65535 (ports below 1024 are privileged; 65535 is the last port)"
                ))
            } else {
                Ok(())
            }
        }
        _ if is_range_key => Err("takes a range: [low, high]".into()),
        _ => Ok(()),
    }
}

fn resolve(docs: Vec<(Source, ProfileDoc)>) -> Result<Profile, Error> {
    let chain: Vec<String> = docs.iter().map(|(s, _)| s.label.clone()).collect();
    let (first_src, first) = &docs[0];
    let mut p = Profile {
        name: first.name.clone(),
        description: first.description.clone(),
        chain,
        target_connections: 0,
        observe_only: first.observe_only,
        sysctls: BTreeMap::new(),
        nofile: None,
        memory: None,
        conntrack: None,
    };
    // Oldest ancestor first, so each child overrides what it inherits.
    for (_, d) in docs.iter().rev() {
        if let Some(t) = d.target_connections {
            p.target_connections = t;
        }
        p.sysctls
            .extend(d.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())));
        if d.rlimits.nofile.is_some() {
            p.nofile = d.rlimits.nofile.clone();
        }
        if d.advisory.memory.is_some() {
            p.memory = d.advisory.memory.clone();
        }
        if d.advisory.conntrack.is_some() {
            p.conntrack = d.advisory.conntrack.clone();
        }
    }
    if p.target_connections == 0 {
        return Err(at(
            first_src,
            &["name"],
            "target_connections",
            "missing, in this profile and every profile it extends".into(),
        ));
    }
    // A child may lower fs.nr_open below an inherited nofile: re-check the pair.
    if let (Some(n), Some(nr)) = (&p.nofile, p.sysctls.get("fs.nr_open").and_then(|r| r.min)) {
        if n.hard > nr {
            return Err(at(
                first_src,
                &["sysctls", "fs.nr_open"],
                "sysctls.fs.nr_open",
                format!(
                    "min {nr} is below the inherited rlimits.nofile hard {}",
                    n.hard
                ),
            ));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn loader(dir: &Path) -> Loader {
        Loader {
            dirs: vec![dir.to_path_buf()],
            builtin: false,
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
    }

    fn err(dir: &Path, name: &str) -> String {
        loader(dir).load(name).unwrap_err().to_string()
    }

    #[test]
    fn shipped_profiles_load_and_inherit() {
        let l = Loader {
            dirs: vec![],
            builtin: true,
        };
        let base = l.load("baseline").unwrap();
        assert!(base.observe_only);
        let c1m = l.load("c1m").unwrap();
        assert_eq!(c1m.target_connections, 1_000_000);
        assert!(!c1m.observe_only);
        assert_eq!(
            c1m.chain,
            [
                "builtin:c1m",
                "builtin:c100k",
                "builtin:c10k",
                "builtin:baseline"
            ]
        );
        for k in [
            "fs.nr_open",
            "fs.file-max",
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "net.core.netdev_max_backlog",
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_fin_timeout",
        ] {
            assert!(c1m.sysctls.contains_key(k), "c1m lacks {k}");
        }
        let n = c1m.nofile.unwrap();
        assert!(n.hard <= c1m.sysctls["fs.nr_open"].min.unwrap());
        assert!(n.soft >= 1_000_000);
    }

    #[test]
    fn child_overrides_parent_key_by_key() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "parent",
            "name: parent\ndescription: p\ntarget_connections: 10\nsysctls:\n  net.core.somaxconn: {min: 100}\n  net.ipv4.tcp_fin_timeout: {max: 30, level: warn}\nrlimits:\n  nofile: {soft: 100, hard: 200}\n",
        );
        write(
            t.path(),
            "child",
            "name: child\ndescription: c\nextends: parent\nsysctls:\n  net.core.somaxconn: {min: 500}\n",
        );
        let p = loader(t.path()).load("child").unwrap();
        assert_eq!(p.target_connections, 10);
        assert_eq!(p.sysctls["net.core.somaxconn"].min, Some(500));
        assert_eq!(p.sysctls["net.ipv4.tcp_fin_timeout"].max, Some(30));
        assert_eq!(p.sysctls["net.ipv4.tcp_fin_timeout"].level, Level::Warn);
        assert_eq!(p.nofile.unwrap().hard, 200);
        assert_eq!(p.chain.len(), 2);
        // By path too, with extends found beside it.
        let by_path = Loader {
            dirs: vec![],
            builtin: false,
        }
        .load(t.path().join("child.yaml").to_str().unwrap())
        .unwrap();
        assert_eq!(by_path.sysctls.len(), 2);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "bad",
            "name: bad\ndescription: d\ntarget_connections: 1\nsysctls:\n  net.core.somaxconn:\n    mn: 5\n",
        );
        let e = err(t.path(), "bad");
        assert!(e.contains("bad.yaml:6:"), "{e}");
        assert!(e.contains("sysctls.net.core.somaxconn"), "{e}");
        assert!(e.contains("unknown field `mn`"), "{e}");
        write(t.path(), "top", "name: top\ndescription: d\ntarget: 5\n");
        let e = err(t.path(), "top");
        assert!(e.contains("top.yaml:3:1: "), "{e}");
        assert!(e.contains("unknown field `target`"), "{e}");
    }

    #[test]
    fn bad_ranges_are_rejected_with_line() {
        let t = tempfile::tempdir().unwrap();
        let prof = |r: &str| {
            format!("name: r\ndescription: d\ntarget_connections: 1\nsysctls:\n  net.core.somaxconn: {{min: 1}}\n  net.ipv4.ip_local_port_range: {r}\n")
        };
        for (r, want) in [
            ("{range: [60000, 1024]}", "range low 60000 >= high 1024"),
            ("{range: [2000, 2000]}", "range low 2000 >= high 2000"),
            ("{range: [80, 65535]}", "range 80-65535 outside 1024-65535"),
            ("{range: [1024, 70000]}", "outside 1024-65535"),
            ("{min: 1024}", "takes a range"),
        ] {
            write(t.path(), "r", &prof(r));
            let e = err(t.path(), "r");
            assert!(
                e.starts_with(&format!(
                    "{}:6:3: sysctls.net.ipv4.ip_local_port_range: ",
                    t.path().join("r.yaml").display()
                )),
                "{e}"
            );
            assert!(e.contains(want), "{r}: {e}");
        }
    }

    #[test]
    fn rule_shapes_are_validated() {
        let t = tempfile::tempdir().unwrap();
        for (rule, want) in [
            ("{}", "needs one of min, max, exact or range"),
            ("{min: 5, max: 2}", "min 5 > max 2"),
            ("{exact: 1, min: 1}", "exact cannot be combined"),
            ("{range: [2000, 3000]}", "range applies only to"),
        ] {
            write(
                t.path(),
                "s",
                &format!("name: s\ndescription: d\ntarget_connections: 1\nsysctls:\n  net.core.somaxconn: {rule}\n"),
            );
            let e = err(t.path(), "s");
            assert!(
                e.contains("s.yaml:5:3: sysctls.net.core.somaxconn: "),
                "{e}"
            );
            assert!(e.contains(want), "{rule}: {e}");
        }
        write(
            t.path(),
            "s",
            "name: s\ndescription: d\ntarget_connections: 1\nsysctls:\n  dev.foo: {min: 1}\n",
        );
        assert!(err(t.path(), "s").contains("unknown sysctl tree \"dev\""));
        write(
            t.path(),
            "s",
            "name: s\ndescription: d\ntarget_connections: 1\nsysctls:\n  fs.nr_open: {min: 1000}\nrlimits:\n  nofile: {soft: 10, hard: 2000}\n",
        );
        let e = err(t.path(), "s");
        assert!(
            e.contains("s.yaml:7:3: rlimits.nofile: hard 2000 exceeds fs.nr_open"),
            "{e}"
        );
        write(
            t.path(),
            "s",
            "name: other\ndescription: d\ntarget_connections: 1\n",
        );
        assert!(err(t.path(), "s").contains("s.yaml:1:1: name: \"other\" does not match"));
        write(t.path(), "s", "name: s\ndescription: d\n");
        assert!(err(t.path(), "s").contains("target_connections: missing"));
    }

    #[test]
    fn extends_cycles_and_missing_parents_are_errors() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "a",
            "name: a\ndescription: d\ntarget_connections: 1\nextends: b\n",
        );
        write(t.path(), "b", "name: b\ndescription: d\nextends: c\n");
        write(t.path(), "c", "name: c\ndescription: d\n\nextends: a\n");
        let e = err(t.path(), "a");
        assert!(
            e.contains("c.yaml:4:1: extends: cycle: a -> b -> c -> a"),
            "{e}"
        );
        write(
            t.path(),
            "self",
            "name: self\ndescription: d\nextends: self\n",
        );
        assert!(err(t.path(), "self").contains("cycle: self -> self"));
        write(
            t.path(),
            "orphan",
            "name: orphan\ndescription: d\nextends: nobody\n",
        );
        let e = err(t.path(), "orphan");
        assert!(
            e.contains("orphan.yaml:3:1: extends: profile \"nobody\" not found"),
            "{e}"
        );
    }

    #[test]
    fn unknown_profile_lists_where_it_looked() {
        let t = tempfile::tempdir().unwrap();
        let e = err(t.path(), "nope");
        assert!(e.contains("profile \"nope\" not found"), "{e}");
        assert!(e.contains(&t.path().display().to_string()));
        assert!(loader(t.path()).load("../etc").is_err());
    }
}
