//! Reading an nginx configuration: directives and blocks, `include`s
//! (globs, relative to the configuration's directory), and the limits on
//! include depth, block depth, files and directives.

use super::glob::glob;
use super::lexer::{Lexer, Tok};
use crate::host::Host;

/// Deepest nesting of `include` followed.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Most files read for one configuration.
pub const MAX_FILES: usize = 256;
/// Most directives kept from one configuration.
pub const MAX_DIRECTIVES: usize = 200_000;
/// Deepest nesting of blocks.
const MAX_BLOCK_DEPTH: usize = 64;

/// One directive, with the file and line it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub file: String,
    pub line: u32,
    /// The directives inside its `{ ... }`, for a block.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// `file:line`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    pub(super) fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or_default()
    }
}

/// A configuration read with its includes.
#[derive(Debug, Default, Clone)]
pub struct Config {
    /// Main-level directives, `-g` ones first (nginx parses those first).
    pub directives: Vec<Directive>,
    /// Files read, in order.
    pub files: Vec<String>,
    /// What could not be read or parsed, one line each.
    pub problems: Vec<String>,
}

/// Reads `conf` (absolute) and its includes; relative includes are taken
/// from `conf`'s directory, as nginx's conf prefix.
pub fn load(host: &Host, conf: &str, globals: Option<&str>) -> Config {
    let conf_prefix = match conf.rfind('/') {
        Some(i) => conf[..=i].to_string(),
        None => "/".to_string(),
    };
    let mut p = Parser {
        host,
        conf_prefix,
        cfg: Config::default(),
        chain: Vec::new(),
        count: 0,
        dropped: 0,
        base: 0,
    };
    let mut main = Vec::new();
    if let Some(g) = globals {
        p.parse_text(g, "-g", 0, &mut main);
    }
    p.parse_file(conf, 0, &mut main);
    p.cfg.directives = main;
    if p.dropped > 0 {
        p.cfg.problems.push(format!(
            "... and {} more problems of the same kind",
            p.dropped
        ));
    }
    p.cfg
}

/// Most problem lines kept from one configuration; the rest are counted.
const MAX_PROBLEMS: usize = 20;

struct Parser<'h> {
    host: &'h Host,
    conf_prefix: String,
    cfg: Config,
    /// Problems past [`MAX_PROBLEMS`].
    dropped: usize,
    /// Block nesting at the include being read (nesting counts across files).
    base: usize,
    /// Files being read now, outermost first (include loops).
    chain: Vec<String>,
    /// Directives kept so far.
    count: usize,
}

impl Parser<'_> {
    fn problem(&mut self, line: String) {
        if self.cfg.problems.len() < MAX_PROBLEMS {
            self.cfg.problems.push(line);
        } else {
            self.dropped += 1;
        }
    }

    fn parse_file(&mut self, path: &str, depth: usize, out: &mut Vec<Directive>) {
        if self.chain.iter().any(|f| f == path) {
            self.problem(format!(
                "include loop: {} includes {path} again; not followed",
                self.chain.join(" -> ")
            ));
            return;
        }
        if self.cfg.files.len() >= MAX_FILES {
            self.problem(format!(
                "{path}: not read, more than {MAX_FILES} configuration files"
            ));
            return;
        }
        let text = match self.host.read(path) {
            Ok(t) => t,
            Err(e) => {
                self.problem(format!("cannot read {e}"));
                return;
            }
        };
        self.cfg.files.push(path.to_string());
        self.chain.push(path.to_string());
        self.parse_text(&text, path, depth, out);
        self.chain.pop();
    }

    fn parse_text(&mut self, text: &str, file: &str, depth: usize, out: &mut Vec<Directive>) {
        let mut lx = Lexer::new(text);
        if let Err(e) = self.block(&mut lx, file, depth, 0, out) {
            self.problem(format!("{file}:{e}"));
        }
    }

    /// Directives up to the end of the block (`nested`) or of the file. An
    /// error is `line: what`; what was read before it is kept.
    fn block(
        &mut self,
        lx: &mut Lexer,
        file: &str,
        depth: usize,
        nested: usize,
        out: &mut Vec<Directive>,
    ) -> Result<(), String> {
        let mut words: Vec<String> = Vec::new();
        let mut start = 0;
        loop {
            let Some((tok, line)) = lx.next().map_err(|(l, e)| format!("{l}: {e}"))? else {
                if !words.is_empty() {
                    return Err(format!(
                        "{}: unexpected end of file, expecting \";\" or \"}}\"",
                        lx.line
                    ));
                }
                if nested > 0 {
                    return Err(format!(
                        "{}: unexpected end of file, expecting \"}}\"",
                        lx.line
                    ));
                }
                return Ok(());
            };
            if words.is_empty() {
                start = line;
            }
            match tok {
                Tok::Word(w) => words.push(w),
                Tok::End => {
                    if words.is_empty() {
                        return Err(format!("{line}: unexpected \";\""));
                    }
                    let name = words.remove(0);
                    if name == "include" {
                        let saved = self.base;
                        self.base += nested;
                        self.include(&words, file, start, depth, out);
                        self.base = saved;
                    } else {
                        self.push(out, name, std::mem::take(&mut words), file, start, None)?;
                    }
                    words.clear();
                }
                Tok::Open => {
                    if words.is_empty() {
                        return Err(format!("{line}: unexpected \"{{\""));
                    }
                    if self.base + nested + 1 > MAX_BLOCK_DEPTH {
                        return Err(format!(
                            "{line}: blocks nested deeper than {MAX_BLOCK_DEPTH}"
                        ));
                    }
                    let name = words.remove(0);
                    let mut inner = Vec::new();
                    let r = self.block(lx, file, depth, nested + 1, &mut inner);
                    self.push(
                        out,
                        name,
                        std::mem::take(&mut words),
                        file,
                        start,
                        Some(inner),
                    )?;
                    r?;
                }
                Tok::Close => {
                    if !words.is_empty() || nested == 0 {
                        return Err(format!("{line}: unexpected \"}}\""));
                    }
                    return Ok(());
                }
            }
        }
    }

    fn push(
        &mut self,
        out: &mut Vec<Directive>,
        name: String,
        args: Vec<String>,
        file: &str,
        line: u32,
        block: Option<Vec<Directive>>,
    ) -> Result<(), String> {
        if self.count >= MAX_DIRECTIVES {
            return Err(format!(
                "{line}: more than {MAX_DIRECTIVES} directives, rest not read"
            ));
        }
        self.count += 1;
        out.push(Directive {
            name,
            args,
            file: file.to_string(),
            line,
            block,
        });
        Ok(())
    }

    fn include(
        &mut self,
        args: &[String],
        file: &str,
        line: u32,
        depth: usize,
        out: &mut Vec<Directive>,
    ) {
        let [pattern] = args else {
            self.problem(format!(
                "{file}:{line}: include takes one argument, got {}",
                args.len()
            ));
            return;
        };
        if depth + 1 > MAX_INCLUDE_DEPTH {
            self.problem(format!(
                "{file}:{line}: include {pattern} not followed: includes nested deeper than {MAX_INCLUDE_DEPTH}"
            ));
            return;
        }
        let full = if pattern.starts_with('/') {
            pattern.clone()
        } else {
            format!("{}{pattern}", self.conf_prefix)
        };
        if full.contains(['*', '?', '[']) {
            match glob(self.host, &full, MAX_FILES) {
                Ok(paths) => {
                    for p in paths {
                        self.parse_file(&p, depth + 1, out);
                    }
                }
                Err(e) => self.problem(format!("{file}:{line}: include {pattern}: {e}")),
            }
        } else {
            self.parse_file(&full, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::settings;
    use crate::testkit::{fixtures, strings as s, Root};
    use std::path::Path;

    #[test]
    fn tokenizer_handles_comments_quotes_escapes_and_variables() {
        let host = Host::new(Path::new("/nonexistent"));
        let mut p = Parser {
            host: &host,
            conf_prefix: "/".into(),
            cfg: Config::default(),
            dropped: 0,
            base: 0,
            chain: vec![],
            count: 0,
        };
        let mut out = Vec::new();
        p.parse_text(
            "a \"x y\" 'q\\'s' b#c; # comment ; {\n set $v \"${host}x\"; e\\;f g;\nblk { inner 1; }",
            "t.conf",
            0,
            &mut out,
        );
        assert!(p.cfg.problems.is_empty(), "{:?}", p.cfg.problems);
        assert_eq!(out[0].name, "a");
        assert_eq!(out[0].args, s(&["x y", "q's", "b#c"]));
        assert_eq!(out[1].name, "set");
        assert_eq!(out[1].args, s(&["$v", "${host}x"]));
        assert_eq!(out[1].line, 2);
        // nginx keeps a backslash before any other character.
        assert_eq!(out[2].name, "e\\;f");
        assert_eq!(out[3].name, "blk");
        assert_eq!(out[3].block.as_ref().unwrap()[0].args, s(&["1"]));
    }

    #[test]
    fn include_loop_is_cut_and_reported_once_per_cycle() {
        let host = Host::new(&fixtures("nginx"));
        let cfg = load(&host, "/loop/a.conf", None);
        assert_eq!(cfg.files, s(&["/loop/a.conf", "/loop/b.conf"]));
        assert_eq!(cfg.problems.len(), 1, "{:?}", cfg.problems);
        assert!(
            cfg.problems[0]
                .starts_with("include loop: /loop/a.conf -> /loop/b.conf includes /loop/a.conf"),
            "{:?}",
            cfg.problems
        );
        assert_eq!(settings(&cfg).worker_connections.unwrap().value, 7);
    }

    #[test]
    fn glob_self_include_is_bounded_by_depth_and_file_count() {
        let r = Root::new("globloop");
        // Every file includes every file (glob), a new name each time: the
        // chain check alone would not stop it.
        for i in 0..20 {
            r.file(
                &format!("/c/f{i:02}.conf"),
                b"include /c/*.conf; events { worker_connections 10; }",
            );
        }
        let cfg = load(&r.host(), "/c/f00.conf", None);
        assert!(cfg.files.len() <= MAX_FILES);
        assert!(!cfg.problems.is_empty());
    }

    #[test]
    fn hostile_inputs_give_problem_lines_not_panics() {
        let r = Root::new("hostile");
        let mut garbage = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..100_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            garbage.push((x >> 16) as u8);
        }
        r.file("/garbage.conf", &garbage);
        r.file("/quote.conf", b"events { worker_connections \"512; }");
        r.file("/block.conf", b"events { worker_connections 64;");
        r.file("/close.conf", b"} events { }");
        r.file("/deep.conf", "a {".repeat(1000).as_bytes());
        // Nesting counts across includes: 10 files of 10 blocks each.
        for i in 0..10 {
            r.file(
                &format!("/n{i}.conf"),
                format!(
                    "{}include /n{}.conf;{}",
                    "b {".repeat(10),
                    i + 1,
                    "}".repeat(10)
                )
                .as_bytes(),
            );
        }
        let cfg = load(&r.host(), "/n0.conf", None);
        assert!(
            cfg.problems
                .iter()
                .any(|p| p.contains("blocks nested deeper than 64")),
            "{:?}",
            cfg.problems
        );
        r.file(
            "/huge.conf",
            vec![b'#'; crate::host::MAX_FILE_BYTES as usize + 10],
        );
        r.file("/many.conf", "x;".repeat(MAX_DIRECTIVES + 5).as_bytes());
        for f in [
            "/garbage.conf",
            "/quote.conf",
            "/block.conf",
            "/close.conf",
            "/deep.conf",
            "/huge.conf",
            "/many.conf",
            "/missing.conf",
        ] {
            let cfg = load(&r.host(), f, Some("'unterminated"));
            let _ = settings(&cfg);
            assert!(cfg.problems.len() >= 2, "{f}: {:?}", cfg.problems);
        }
        // What was read before an error is kept.
        let cfg = load(&r.host(), "/block.conf", None);
        assert_eq!(settings(&cfg).worker_connections.unwrap().value, 64);
        assert!(
            cfg.problems[0].contains("unexpected end of file"),
            "{:?}",
            cfg.problems
        );
    }
}
