//! Fixed-size history of one number, for sparklines.

use std::collections::VecDeque;

/// The last `capacity` values of one series, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    values: VecDeque<u64>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> History {
        History {
            values: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, v: u64) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(v);
    }

    pub fn last(&self) -> Option<u64> {
        self.values.back().copied()
    }

    pub fn max(&self) -> u64 {
        self.values.iter().copied().max().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The newest `n` values, oldest first (what fits in a sparkline `n` cells wide).
    pub fn tail(&self, n: usize) -> Vec<u64> {
        let skip = self.values.len().saturating_sub(n);
        self.values.iter().skip(skip).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_past_capacity() {
        let mut h = History::new(3);
        for v in 1..=5 {
            h.push(v);
        }
        assert_eq!(h.tail(10), vec![3, 4, 5]);
        assert_eq!(h.tail(2), vec![4, 5]);
        assert_eq!((h.len(), h.max(), h.last()), (3, 5, Some(5)));
    }
}
