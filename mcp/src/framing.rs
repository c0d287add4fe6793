//! Newline-delimited framing with a hard size limit: a line longer than the
//! limit is rejected as soon as the limit is crossed, never buffered whole.

/// Partial-line state of one connection. Empty (no allocation) between
/// messages, so an idle session costs nothing here.
#[derive(Debug, Default)]
pub struct Framer {
    pending: Vec<u8>,
}

/// A line went past `max` bytes before its newline.
#[derive(Debug, PartialEq, Eq)]
pub struct Oversize;

impl Framer {
    /// True while a line has started but not ended.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Splits `chunk` into complete lines (without `\n` and a trailing
    /// `\r`; blank lines skipped) and calls `on_line` for each; keeps the
    /// tail. `on_line` returns false to stop (connection closing); the rest
    /// of the chunk is then dropped.
    pub fn push(
        &mut self,
        mut chunk: &[u8],
        max: usize,
        mut on_line: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), Oversize> {
        while let Some(nl) = memchr(b'\n', chunk) {
            let (head, rest) = (&chunk[..nl], &chunk[nl + 1..]);
            chunk = rest;
            let go = if self.pending.is_empty() {
                if head.len() > max {
                    return Err(Oversize);
                }
                emit(head, &mut on_line)
            } else {
                if self.pending.len() + head.len() > max {
                    return Err(Oversize);
                }
                self.pending.extend_from_slice(head);
                let line = std::mem::take(&mut self.pending);
                let go = emit(&line, &mut on_line);
                // Keep a modest buffer for the next partial line, drop big ones.
                if line.capacity() <= 4096 {
                    self.pending = line;
                    self.pending.clear();
                }
                go
            };
            if !go {
                return Ok(());
            }
        }
        if !chunk.is_empty() {
            if self.pending.len() + chunk.len() > max {
                return Err(Oversize);
            }
            self.pending.extend_from_slice(chunk);
        } else if self.pending.is_empty() && self.pending.capacity() > 0 {
            // Idle: give the buffer back.
            self.pending = Vec::new();
        }
        Ok(())
    }
}

fn emit(line: &[u8], on_line: &mut impl FnMut(&[u8]) -> bool) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    on_line(line)
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &mut Framer, chunk: &[u8], max: usize) -> Result<Vec<String>, Oversize> {
        let mut v = Vec::new();
        f.push(chunk, max, |l| {
            v.push(String::from_utf8_lossy(l).into_owned());
            true
        })?;
        Ok(v)
    }

    #[test]
    fn splits_and_joins_across_chunks() {
        let mut f = Framer::default();
        assert_eq!(lines(&mut f, b"a\nbb", 10).unwrap(), ["a"]);
        assert!(f.has_partial());
        assert_eq!(lines(&mut f, b"b\r\n\n  \nc\n", 10).unwrap(), ["bbb", "c"]);
        assert!(!f.has_partial());
    }

    #[test]
    fn oversize_is_caught_before_the_newline() {
        let mut f = Framer::default();
        assert_eq!(lines(&mut f, b"12345", 8).unwrap(), Vec::<String>::new());
        assert_eq!(lines(&mut f, b"6789", 8), Err(Oversize));
        let mut f = Framer::default();
        assert_eq!(lines(&mut f, b"123456789\n", 8), Err(Oversize));
        let mut f = Framer::default();
        assert_eq!(lines(&mut f, b"12345678\n", 8).unwrap(), ["12345678"]);
    }

    #[test]
    fn stop_drops_the_rest() {
        let mut f = Framer::default();
        let mut n = 0;
        f.push(b"a\nb\nc\n", 8, |_| {
            n += 1;
            false
        })
        .unwrap();
        assert_eq!(n, 1);
    }
}
