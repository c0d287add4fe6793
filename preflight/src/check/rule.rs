//! What a rule asks of a value: the value to write, the requirement in
//! words. Shared with apply, which writes the same targets.

use crate::profile::SysctlRule;

/// The value a rule wants written given the current one, or `None` when the
/// current value already satisfies it. Never moves a value that satisfies a
/// bound: a `min` never lowers, a `range` only widens.
pub fn target(rule: &SysctlRule, current: &[u64]) -> Option<Vec<u64>> {
    if let Some((lo, hi)) = rule.range {
        let (a, b) = match current {
            [a, b] => (*a, *b),
            _ => return Some(vec![lo, hi]),
        };
        return (a > lo || b < hi).then(|| vec![a.min(lo), b.max(hi)]);
    }
    let c = *current.first()?;
    if let Some(e) = rule.exact {
        return (c != e).then_some(vec![e]);
    }
    let want = c
        .max(rule.min.unwrap_or(0))
        .min(rule.max.unwrap_or(u64::MAX));
    (want != c).then_some(vec![want])
}

/// The requirement in words: `>= 65535`, `<= 30`, `= 1`, `covers 1024-65535`.
pub fn required_text(rule: &SysctlRule) -> String {
    match (rule.min, rule.max, rule.exact, rule.range) {
        (_, _, _, Some((lo, hi))) => format!("covers {lo}-{hi}"),
        (_, _, Some(e), _) => format!("= {e}"),
        (Some(lo), Some(hi), _, _) => format!("{lo}..={hi}"),
        (Some(lo), None, _, _) => format!(">= {lo}"),
        (None, Some(hi), _, _) => format!("<= {hi}"),
        _ => String::new(),
    }
}

pub fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}
