//! The Prometheus text exposition format (version 0.0.4), read and written
//! in one place: `headroom top --source http://...` reads a remote probe's
//! page with it, the `serve --workers` supervisor merges its workers' pages
//! with it. Pure like the rest of core, and bounded: a broken or hostile
//! endpoint gives a [`ParseError`] naming the line, never a panic or an
//! allocation larger than the page itself.
//!
//! Samples are `name{label="value",...} value [timestamp]`. `# HELP` and
//! `# TYPE` lines are kept by [`parse_families`] (which groups samples into
//! their families, histogram and summary `_bucket`/`_sum`/`_count` series
//! with their family) and skipped by [`parse`]; other comments are ignored.
//! Writing ([`Sample`]'s and [`Family`]'s `Display`) is the exact inverse
//! for what the prometheus crate writes, so a page parsed and written again
//! reads the same.

use std::collections::HashMap;
use std::fmt;

/// Largest page parsed. A probe's page is a few KiB; ureq stops reading a
/// body at 10 MiB, and a worker's reply is at most 256 KiB.
pub const MAX_PAGE: usize = 16 << 20;
/// Longest line parsed. headroom's longest label values are error messages.
pub const MAX_LINE: usize = 64 << 10;
/// Longest excerpt of the offending text quoted in an error.
const EXCERPT: usize = 40;

/// One sample line: `name{label="value",...} 42`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In page order, values unescaped.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One metric family: its HELP and TYPE (when the page gives them) and its
/// samples, in page order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Family {
    pub name: String,
    /// The docstring, unescaped.
    pub help: Option<String>,
    /// As written: `counter`, `gauge`, `histogram`, `summary`, `untyped`.
    pub kind: Option<String>,
    pub samples: Vec<Sample>,
}

/// Where and why a page does not parse. `line` is 1-based; 0 means the page
/// as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => f.write_str(&self.what),
            n => write!(f, "line {n}: {}", self.what),
        }
    }
}

impl std::error::Error for ParseError {}

/// Every sample of the page, in order; HELP, TYPE and other comments skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for_each_line(text, |item| {
        if let Item::Sample(s) = item {
            out.push(s);
        }
    })?;
    Ok(out)
}

/// The page's families in the order they first appear. A sample belongs to
/// the family of the HELP/TYPE lines before it when it is that family's
/// (its name, or its name with `_bucket`, `_sum` or `_count`); otherwise to
/// a family of its own name, without HELP or TYPE. The first HELP and TYPE
/// of a family count.
pub fn parse_families(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut fams: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut current: Option<usize> = None;
    let mut at = |fams: &mut Vec<Family>, name: &str| -> usize {
        *index.entry(name.to_string()).or_insert_with(|| {
            fams.push(Family {
                name: name.to_string(),
                ..Family::default()
            });
            fams.len() - 1
        })
    };
    for_each_line(text, |item| match item {
        Item::Help(name, help) => {
            let i = at(&mut fams, name);
            fams[i].help.get_or_insert(help);
            current = Some(i);
        }
        Item::Type(name, kind) => {
            let i = at(&mut fams, name);
            fams[i].kind.get_or_insert_with(|| kind.to_string());
            current = Some(i);
        }
        Item::Sample(s) => {
            let i = match current {
                Some(i) if belongs(&s.name, &fams[i].name) => i,
                _ => at(&mut fams, &s.name),
            };
            fams[i].samples.push(s);
        }
    })?;
    Ok(fams)
}

/// Writes families back as one page.
pub fn render(families: &[Family]) -> String {
    families.iter().map(Family::to_string).collect()
}

fn belongs(sample: &str, family: &str) -> bool {
    match sample.strip_prefix(family) {
        Some(rest) => matches!(rest, "" | "_bucket" | "_sum" | "_count"),
        None => false,
    }
}

enum Item<'a> {
    Help(&'a str, String),
    Type(&'a str, &'a str),
    Sample(Sample),
}

fn for_each_line<'a>(text: &'a str, mut f: impl FnMut(Item<'a>)) -> Result<(), ParseError> {
    if text.len() > MAX_PAGE {
        return Err(ParseError {
            line: 0,
            what: format!(
                "page is {} bytes, over the {MAX_PAGE} byte limit",
                text.len()
            ),
        });
    }
    for (i, raw) in text.lines().enumerate() {
        let err = |what: String| ParseError { line: i + 1, what };
        if raw.len() > MAX_LINE {
            return Err(err(format!(
                "line is {} bytes, over the {MAX_LINE} byte limit",
                raw.len()
            )));
        }
        let line = raw.trim();
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(item) = meta(comment) {
                f(item);
            }
        } else if !line.is_empty() {
            f(Item::Sample(sample(line).map_err(err)?));
        }
    }
    Ok(())
}

/// `# HELP name docstring` or `# TYPE name kind`; any other comment is None.
fn meta(comment: &str) -> Option<Item<'_>> {
    let comment = comment.trim_start();
    let (keyword, rest) = comment.split_once(' ')?;
    let rest = rest.trim_start();
    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    if name.is_empty() || metric_name_len(name) != name.len() {
        return None;
    }
    match keyword {
        "HELP" => Some(Item::Help(name, unescape_help(tail))),
        "TYPE" if !tail.trim().is_empty() => Some(Item::Type(name, tail.trim())),
        _ => None,
    }
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Length of the metric name at the start of `s` (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn metric_name_len(s: &str) -> usize {
    name_len(s, |b| b == b':')
}

/// Length of the label name at the start of `s` (`[a-zA-Z_][a-zA-Z0-9_]*`).
fn label_name_len(s: &str) -> usize {
    name_len(s, |_| false)
}

fn name_len(s: &str, extra: impl Fn(u8) -> bool) -> usize {
    s.bytes()
        .enumerate()
        .take_while(|&(i, b)| {
            b.is_ascii_alphabetic() || b == b'_' || extra(b) || (i > 0 && b.is_ascii_digit())
        })
        .count()
}

fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

fn sample(line: &str) -> Result<Sample, String> {
    let n = metric_name_len(line);
    if n == 0 {
        return Err(format!("no metric name at {}", excerpt(line)));
    }
    let (name, mut rest) = line.split_at(n);
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        (labels, rest) = parse_labels(after)?;
    }
    if rest.is_empty() {
        return Err("no value".to_string());
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("unexpected {} before the value", excerpt(rest)));
    }
    let mut tokens = rest.split_whitespace();
    let value = tokens.next().ok_or("no value")?;
    let value = value
        .parse::<f64>()
        .map_err(|_| format!("value {} is not a number", excerpt(value)))?;
    let timestamp_ms = match tokens.next() {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| format!("timestamp {} is not an integer", excerpt(t)))?,
        ),
        None => None,
    };
    if let Some(extra) = tokens.next() {
        return Err(format!("unexpected {} after the value", excerpt(extra)));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

type Labels = Vec<(String, String)>;

/// Parses `a="x",b="y"}` and returns the labels and what follows the brace.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let n = label_name_len(s);
        if n == 0 {
            return Err(if s.is_empty() {
                "unterminated label set".to_string()
            } else {
                format!("no label name at {}", excerpt(s))
            });
        }
        let key = &s[..n];
        s = s[n..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("label {key} without '='"))?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key}'s value is not quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        return Err(format!("label {key}'s value has an unknown escape \\{c}"))
                    }
                    None => return Err(format!("label {key}'s value is unterminated")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("label {key}'s value is unterminated")),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(if s.is_empty() {
                "unterminated label set".to_string()
            } else {
                format!("expected ',' or '}}' after label {key}")
            });
        }
    }
}

fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// One line, without its newline: what the prometheus crate writes for it.
impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            let sep = if i == 0 { '{' } else { ',' };
            write!(f, "{sep}{k}=\"{}\"", escape(v, true))?;
        }
        if !self.labels.is_empty() {
            f.write_str("}")?;
        }
        match self.value {
            v if v.is_nan() => f.write_str(" NaN")?,
            v if v == f64::INFINITY => f.write_str(" +Inf")?,
            v if v == f64::NEG_INFINITY => f.write_str(" -Inf")?,
            v => write!(f, " {v}")?,
        }
        match self.timestamp_ms {
            Some(t) => write!(f, " {t}"),
            None => Ok(()),
        }
    }
}

/// The family's HELP and TYPE lines (those it has) and its samples, each
/// line ending in a newline.
impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(help) = &self.help {
            writeln!(f, "# HELP {} {}", self.name, escape(help, false))?;
        }
        if let Some(kind) = &self.kind {
            writeln!(f, "# TYPE {} {kind}", self.name)?;
        }
        for s in &self.samples {
            writeln!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            timestamp_ms: None,
        }
    }

    fn line_err(text: &str) -> (usize, String) {
        let e = parse(text).unwrap_err();
        (e.line, e.what)
    }

    #[test]
    fn parses_names_labels_values_and_escapes() {
        let ms = parse("a 1\nb{x=\"q\\\"uote\",y=\"n\\nl\"} -2.5e3 123\n# c 3\nd +Inf\n").unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0], s("a", &[], 1.0));
        assert_eq!(ms[1].label("x"), Some("q\"uote"));
        assert_eq!(ms[1].label("y"), Some("n\nl"));
        assert_eq!(ms[1].value, -2500.0);
        assert_eq!(ms[1].timestamp_ms, Some(123));
        assert_eq!(ms[2].value, f64::INFINITY);
        assert_eq!(parse("x{a=\"1\" 2").unwrap_err().line, 1);
        assert_eq!(parse("ok 1\nbad notanumber").unwrap_err().line, 2);
    }

    #[test]
    fn reads_what_the_prometheus_crate_writes() {
        let page = "# HELP x_total Things \\\\ and\\nmore\n# TYPE x_total counter\n\
                    x_total{reason=\"a \\\"b\\\"\",transport=\"tcp\"} 3\n\
                    # HELP h_seconds H\n# TYPE h_seconds histogram\n\
                    h_seconds_bucket{le=\"0.1\"} 2\nh_seconds_bucket{le=\"+Inf\"} 3\n\
                    h_seconds_sum 0.25\nh_seconds_count 3\n\
                    stray{a=\"\",} 0\n";
        let fams = parse_families(page).unwrap();
        assert_eq!(
            fams,
            vec![
                Family {
                    name: "x_total".into(),
                    help: Some("Things \\ and\nmore".into()),
                    kind: Some("counter".into()),
                    samples: vec![s(
                        "x_total",
                        &[("reason", "a \"b\""), ("transport", "tcp")],
                        3.0
                    )],
                },
                Family {
                    name: "h_seconds".into(),
                    help: Some("H".into()),
                    kind: Some("histogram".into()),
                    samples: vec![
                        s("h_seconds_bucket", &[("le", "0.1")], 2.0),
                        s("h_seconds_bucket", &[("le", "+Inf")], 3.0),
                        s("h_seconds_sum", &[], 0.25),
                        s("h_seconds_count", &[], 3.0),
                    ],
                },
                Family {
                    name: "stray".into(),
                    samples: vec![s("stray", &[("a", "")], 0.0)],
                    ..Family::default()
                },
            ]
        );
        // Written back, the page reads the same (the trailing comma aside).
        assert_eq!(render(&fams), page.replace("\"\",}", "\"\"}"));
    }

    #[test]
    fn a_sample_outside_the_family_before_it_gets_its_own() {
        let fams = parse_families(
            "# TYPE c gauge\nc 1\nc_other 2\nc_sum 3\n# TYPE d untyped\n# HELP d D\nd 4\n",
        )
        .unwrap();
        let shape: Vec<(&str, Option<&str>, usize)> = fams
            .iter()
            .map(|f| (f.name.as_str(), f.kind.as_deref(), f.samples.len()))
            .collect();
        assert_eq!(
            shape,
            [
                ("c", Some("gauge"), 2),
                ("c_other", None, 1),
                ("d", Some("untyped"), 1),
            ]
        );
        assert_eq!(fams[2].help.as_deref(), Some("D"));
    }

    #[test]
    fn comments_blank_lines_and_odd_meta_lines_are_skipped() {
        let ms = parse("\n# just a comment\n#HELP\n# HELP\n# TYPE x\n  y 7  \r\n# EOF\n").unwrap();
        assert_eq!(ms, [s("y", &[], 7.0)]);
        let fams = parse_families("# TYPE x\n# HELP 9bad x\nx 1\n").unwrap();
        assert_eq!(
            (fams[0].kind.as_deref(), fams[0].help.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn special_values_and_their_spelling() {
        let ms = parse("a NaN\nb -Inf\nc Inf\nd 1e3\ne -0\nf .5\n").unwrap();
        assert!(ms[0].value.is_nan());
        let v: Vec<f64> = ms[1..].iter().map(|m| m.value).collect();
        assert_eq!(v, [f64::NEG_INFINITY, f64::INFINITY, 1000.0, -0.0, 0.5]);
        let out: Vec<String> = ms.iter().map(Sample::to_string).collect();
        assert_eq!(
            out,
            ["a NaN", "b -Inf", "c +Inf", "d 1000", "e -0", "f 0.5"]
        );
        assert_eq!(
            s("big", &[], 18446744073709551615.0).to_string(),
            "big 18446744073709552000"
        );
    }

    #[test]
    fn bad_values_and_timestamps_are_named() {
        for (text, what) in [
            ("a 1.2.3", "value \"1.2.3\" is not a number"),
            ("a 0x10", "value \"0x10\" is not a number"),
            ("a 1_000", "value \"1_000\" is not a number"),
            ("a", "no value"),
            ("a{}", "no value"),
            ("a{b=\"c\"}   ", "no value"),
            ("a 1 12.5", "timestamp \"12.5\" is not an integer"),
            ("a 1 2 3", "unexpected \"3\" after the value"),
            ("a-b 1", "unexpected \"-b 1\" before the value"),
            ("{a=\"b\"} 1", "no metric name at \"{a=\\\"b\\\"} 1\""),
            ("9a 1", "no metric name at \"9a 1\""),
        ] {
            assert_eq!(line_err(text), (1, what.to_string()), "{text}");
        }
    }

    #[test]
    fn broken_label_sets_are_named() {
        for (text, what) in [
            ("x{a=\"1\" 2", "expected ',' or '}' after label a"),
            ("x{a=\"1", "label a's value is unterminated"),
            ("x{a=\"1\\", "label a's value is unterminated"),
            ("x{a=\"1\",", "unterminated label set"),
            ("x{", "unterminated label set"),
            ("x{a} 1", "label a without '='"),
            ("x{a=1} 1", "label a's value is not quoted"),
            ("x{=\"1\"} 1", "no label name at \"=\\\"1\\\"} 1\""),
            (
                "x{a=\"\\t\"} 1",
                "label a's value has an unknown escape \\t",
            ),
            ("x{a=\"1\"}2", "unexpected \"2\" before the value"),
        ] {
            assert_eq!(line_err(text), (1, what.to_string()), "{text}");
        }
    }

    #[test]
    fn hostile_sizes_are_refused_without_echoing_them() {
        let long = format!("ok 1\nx{{a=\"{}\"}} 1\n", "v".repeat(MAX_LINE));
        let (line, what) = line_err(&long);
        assert_eq!(
            (line, what),
            (
                2,
                format!("line is {} bytes, over the 65536 byte limit", MAX_LINE + 9)
            )
        );
        let page = "a 1\n".repeat(MAX_PAGE / 4 + 1);
        let e = parse_families(&page).unwrap_err();
        assert_eq!(
            (e.line, e.to_string()),
            (
                0,
                "page is 16777220 bytes, over the 16777216 byte limit".to_string()
            )
        );
        // A long bad token is quoted in part only.
        let (_, what) = line_err(&format!("a {}", "9".repeat(1000) + "x"));
        assert_eq!(
            what,
            format!("value \"{}\"... is not a number", "9".repeat(40))
        );
        // Just under the limits parses.
        let fits = format!("x{{a=\"{}\"}} 1", "v".repeat(MAX_LINE - 9));
        assert_eq!(
            parse(&fits).unwrap()[0].label("a").map(str::len),
            Some(MAX_LINE - 9)
        );
    }

    #[test]
    fn errors_display_their_line() {
        let e = parse("a 1\nb x").unwrap_err();
        assert_eq!(e.to_string(), "line 2: value \"x\" is not a number");
    }
}
