//! Whether a byte of JSON text is inside a string: the one scanner the
//! framer (finding a request's closing brace) and the hex rewriter (touching
//! only what is outside strings) share.

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StringScanner {
    in_string: bool,
    escaped: bool,
}

impl StringScanner {
    /// Feeds the next byte; true if it belongs to a string (its quotes included).
    pub fn step(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            true
        } else if b == b'"' {
            self.in_string = true;
            true
        } else {
            false
        }
    }

    /// True between an opening quote and its closing one.
    #[cfg(test)]
    pub fn in_string(&self) -> bool {
        self.in_string
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_quotes() {
        let text = br#"a"b\"c\\"d"#;
        let mut s = StringScanner::default();
        let inside: Vec<bool> = text.iter().map(|&b| s.step(b)).collect();
        // a " b \ " c \ \ " d
        assert_eq!(inside, [false, true, true, true, true, true, true, true, true, false]);
        assert!(!s.in_string());
    }
}
