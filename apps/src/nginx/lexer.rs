//! nginx's configuration tokenizer (`ngx_conf_read_token`).

#[derive(Debug, PartialEq)]
pub(super) enum Tok {
    Word(String),
    End,
    Open,
    Close,
}

/// nginx's tokenizer (`ngx_conf_read_token`): words split on blanks, `;`
/// ends a directive, `{`/`}` open and close blocks, `#` starts a comment at
/// the start of a word, quotes with backslash escapes, `${var}`.
pub(super) struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    pub(super) line: u32,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str) -> Lexer<'a> {
        Lexer {
            s: text.as_bytes(),
            i: 0,
            line: 1,
        }
    }

    fn bump(&mut self) -> Option<u8> {
        let c = *self.s.get(self.i)?;
        self.i += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    pub(super) fn next(&mut self) -> Result<Option<(Tok, u32)>, (u32, String)> {
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Ok(None);
            };
            let line = self.line;
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    self.bump();
                }
                b'#' => {
                    while let Some(c) = self.bump() {
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                b';' => {
                    self.bump();
                    return Ok(Some((Tok::End, line)));
                }
                b'{' => {
                    self.bump();
                    return Ok(Some((Tok::Open, line)));
                }
                b'}' => {
                    self.bump();
                    return Ok(Some((Tok::Close, line)));
                }
                b'"' | b'\'' => {
                    self.bump();
                    let start = self.i;
                    loop {
                        match self.bump() {
                            None => {
                                return Err((line, format!("unterminated {} quote", c as char)))
                            }
                            Some(b'\\') => {
                                self.bump();
                            }
                            Some(q) if q == c => break,
                            Some(_) => {}
                        }
                    }
                    let word = unescape(&self.s[start..self.i - 1]);
                    match self.s.get(self.i) {
                        None | Some(b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b')') => {}
                        Some(&x) => {
                            return Err((self.line, format!("unexpected \"{}\"", x as char)))
                        }
                    }
                    return Ok(Some((Tok::Word(word), line)));
                }
                _ => {
                    let start = self.i;
                    let mut prev = 0u8;
                    while let Some(&x) = self.s.get(self.i) {
                        match x {
                            b'\\' => {
                                self.bump();
                                self.bump();
                                prev = 0;
                                continue;
                            }
                            b'{' if prev == b'$' => {}
                            b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' => break,
                            _ => {}
                        }
                        prev = x;
                        self.bump();
                    }
                    let end = self.i.min(self.s.len());
                    return Ok(Some((Tok::Word(unescape(&self.s[start..end])), line)));
                }
            }
        }
    }
}

/// `\"`, `\'`, `\\` give the character, `\t` `\r` `\n` control characters;
/// any other backslash stays.
fn unescape(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'"' | b'\'' | b'\\' => {
                    out.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                b't' => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                b'r' => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
