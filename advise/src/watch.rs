//! `--watch`: advice is re-evaluated every interval and printed only when it
//! changes. "Changes" means what an operator would act on: which advice,
//! how urgent, and which remedy with which value; not the numbers that move
//! with every connection.

use crate::Advice;

/// What identifies an evaluation's advice.
pub fn fingerprint(advice: &[Advice]) -> Vec<String> {
    advice
        .iter()
        .map(|a| {
            let remedies: Vec<String> = a
                .remedies
                .iter()
                .map(|r| format!("{}={}", r.key, r.value))
                .collect();
            format!("{}|{}|{}", a.id, a.severity.as_str(), remedies.join(","))
        })
        .collect()
}

/// Remembers the last advice printed.
#[derive(Debug, Default)]
pub struct Watcher {
    last: Option<Vec<String>>,
}

impl Watcher {
    /// True when `advice` differs from the last one printed (always for the
    /// first); it then becomes the last one.
    pub fn changed(&mut self, advice: &[Advice]) -> bool {
        let f = fingerprint(advice);
        if self.last.as_ref() == Some(&f) {
            return false;
        }
        self.last = Some(f);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, listener, Owned};
    use crate::{advise, Config};

    #[test]
    fn only_a_change_of_advice_is_an_event() {
        let cfg = Config::default();
        let mut s = fixture::host();
        let mut w = Watcher::default();
        let quiet = advise(&s, None, &Owned::default(), &cfg);
        assert!(w.changed(&quiet), "the first evaluation is an event");
        s.processes[0].connections = 5; // numbers move, advice does not
        assert!(!w.changed(&advise(&s, None, &Owned::default(), &cfg)));
        s.listeners = vec![listener(80, 9, 9, 8)];
        assert!(w.changed(&advise(&s, None, &Owned::default(), &cfg)));
        assert!(!w.changed(&advise(&s, None, &Owned::default(), &cfg)));
        s.listeners.clear();
        assert!(w.changed(&advise(&s, None, &Owned::default(), &cfg)));
    }
}
