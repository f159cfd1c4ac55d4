//! Redis's glob patterns (`KEYS`, `SCAN MATCH`, `CONFIG GET`): `*` any
//! bytes, `?` one byte, `[abc]`, `[^abc]`, `[a-z]` classes, `\x` a literal
//! `x`. Matching is byte-wise and iterative (no recursion, linear memory).

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Byte(u8),
    Any,
    Star,
    /// A class: ranges (inclusive) and whether it is negated.
    Class(Vec<(u8, u8)>, bool),
}

/// A compiled glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    toks: Vec<Tok>,
    literal_prefix: Vec<u8>,
}

impl Glob {
    /// Compiles `pat` the way Redis's `stringmatchlen` reads it.
    pub fn new(pat: &[u8]) -> Glob {
        let mut toks = Vec::new();
        let mut i = 0;
        while i < pat.len() {
            match pat[i] {
                b'*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                b'?' => toks.push(Tok::Any),
                b'\\' if i + 1 < pat.len() => {
                    i += 1;
                    toks.push(Tok::Byte(pat[i]));
                }
                b'[' => {
                    i += 1;
                    let neg = pat.get(i) == Some(&b'^');
                    if neg {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        if i >= pat.len() {
                            // Redis: an unterminated class ends the pattern.
                            i = pat.len() - 1;
                            break;
                        }
                        let c = pat[i];
                        if c == b'\\' && i + 1 < pat.len() {
                            i += 1;
                            ranges.push((pat[i], pat[i]));
                        } else if c == b']' {
                            break;
                        } else if i + 2 < pat.len() && pat[i + 1] == b'-' {
                            let (a, b) = (c, pat[i + 2]);
                            ranges.push(if a <= b { (a, b) } else { (b, a) });
                            i += 2;
                        } else {
                            ranges.push((c, c));
                        }
                        i += 1;
                    }
                    toks.push(Tok::Class(ranges, neg));
                }
                c => toks.push(Tok::Byte(c)),
            }
            i += 1;
        }
        let literal_prefix = toks
            .iter()
            .map_while(|t| match t {
                Tok::Byte(b) => Some(*b),
                _ => None,
            })
            .collect();
        Glob {
            toks,
            literal_prefix,
        }
    }

    /// The bytes every matching string starts with.
    pub fn literal_prefix(&self) -> &[u8] {
        &self.literal_prefix
    }

    /// Whether the pattern is `*` (matches everything).
    pub fn matches_all(&self) -> bool {
        self.toks == [Tok::Star]
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &[u8]) -> bool {
        let (mut p, mut i) = (0, 0);
        // Where to resume after the last `*`: (pattern index, string index).
        let mut back: Option<(usize, usize)> = None;
        loop {
            if p < self.toks.len() {
                let ok = match &self.toks[p] {
                    Tok::Star => {
                        back = Some((p + 1, i));
                        p += 1;
                        continue;
                    }
                    _ if i >= s.len() => false,
                    Tok::Any => true,
                    Tok::Byte(b) => s[i] == *b,
                    Tok::Class(ranges, neg) => {
                        let hit = ranges.iter().any(|&(a, b)| a <= s[i] && s[i] <= b);
                        hit != *neg
                    }
                };
                if ok {
                    p += 1;
                    i += 1;
                    continue;
                }
            } else if i == s.len() {
                return true;
            }
            // Mismatch: let the last `*` eat one more byte.
            match back {
                Some((bp, bi)) if bi < s.len() => {
                    back = Some((bp, bi + 1));
                    p = bp;
                    i = bi + 1;
                }
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p.as_bytes()).matches(s.as_bytes())
    }

    #[test]
    fn redis_examples() {
        // From the KEYS documentation.
        assert!(m("h?llo", "hello") && m("h?llo", "hallo") && m("h?llo", "hxllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hello") && m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && m("h[^e]llo", "hbllo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hallo") && m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("h[b-a]llo", "hallo"));
    }

    #[test]
    fn stars_escapes_edges() {
        assert!(m("*", "") && m("*", "anything"));
        assert!(m("", "") && !m("", "a"));
        assert!(m("a*", "a") && m("a*", "abc") && !m("a*", "ba"));
        assert!(m("*a", "ba") && !m("*a", "ab"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx") && !m("*a*b*c*", "xxcxxbxxa"));
        assert!(m("a**b", "ab"));
        assert!(m("\\*", "*") && !m("\\*", "a"));
        assert!(m("a\\?", "a?") && !m("a\\?", "ab"));
        assert!(m("[\\]]", "]"));
        assert!(m("?", "x") && !m("?", "") && !m("?", "xy"));
        assert!(m("{tag}*", "{tag}:1"));
        assert!(m("[abc", "a"));
        // Binary bytes.
        assert!(Glob::new(b"a*\xff").matches(b"a\x00\r\n\xff"));
        // No exponential blow-up.
        let s = "a".repeat(5000);
        assert!(!m("*a*a*a*a*a*a*a*b", &s));
    }

    #[test]
    fn prefix() {
        assert_eq!(Glob::new(b"user:*").literal_prefix(), b"user:");
        assert_eq!(Glob::new(b"a\\*b*").literal_prefix(), b"a*b");
        assert_eq!(Glob::new(b"*x").literal_prefix(), b"");
        assert_eq!(Glob::new(b"ab?").literal_prefix(), b"ab");
        assert!(Glob::new(b"*").matches_all());
        assert!(Glob::new(b"**").matches_all());
    }
}
