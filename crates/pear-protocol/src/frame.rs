//! Splits a TCP byte stream into candidate request objects.
//!
//! The original server took each socket read as one message, so a request split
//! across reads, or two requests in one read, were lost. Clients send JSON
//! objects back to back with nothing, spaces or newlines between them, so the
//! only reliable boundary is the object's own closing brace. This module finds
//! it (string- and escape-aware) without any I/O, so it can be fuzzed.

use super::json_string::StringScanner;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The bytes of one balanced `{...}` object (not yet validated as JSON).
    Object(Vec<u8>),
    /// Bytes that cannot start a request; `reason` says why. The stream goes on.
    Garbage { len: usize, reason: &'static str },
    /// A request grew past the size limit; the connection should be closed.
    TooLarge { limit: usize },
}

/// Incremental framer: `push` bytes as they arrive, then drain `next_frame`.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max: usize,
    /// Scan state of the object at the head of `buf`, so a slow client sending
    /// one byte at a time costs O(n), not O(n^2).
    scanned: usize,
    depth: usize,
    strings: StringScanner,
    /// Answers hold objects (entries); requests never do, so for requests a
    /// `{` inside an unfinished object starts the next one.
    nested: bool,
    /// Requests: the last frame was garbage that did not reach a line end,
    /// so garbage that follows belongs to the same run and is not reported
    /// again (a client reading one answer per request stays in step).
    in_garbage_run: bool,
    /// The bytes of the garbage just cut held a newline.
    cut_newline: bool,
}

impl Framer {
    pub fn new(max_request_bytes: usize) -> Self {
        Framer {
            buf: Vec::new(),
            max: max_request_bytes.max(2),
            scanned: 0,
            depth: 0,
            strings: StringScanner::default(),
            nested: false,
            in_garbage_run: false,
            cut_newline: false,
        }
    }

    /// The client side: cuts answers, whose objects nest.
    pub fn for_answers(max_bytes: usize) -> Self {
        Framer { nested: true, ..Self::new(max_bytes) }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// True when bytes of an unfinished request are waiting.
    pub fn has_partial(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// The first byte not yet cut into a frame, if any.
    pub fn peek_byte(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Next complete frame, or `None` when more bytes are needed. For
    /// requests, one run of garbage (bytes up to a line end, or up to a valid
    /// request, that hold none) is one `Garbage` frame however it was cut:
    /// `garbage{` followed by a request gives one error, then the request.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let frame = self.next_cut()?;
            if !matches!(frame, Frame::Garbage { .. }) || self.nested {
                self.in_garbage_run = false;
                return Some(frame);
            }
            let repeat = self.in_garbage_run;
            self.in_garbage_run = !self.cut_newline;
            if !repeat {
                return Some(frame);
            }
        }
    }

    /// Cuts the next frame, garbage runs not yet merged.
    fn next_cut(&mut self) -> Option<Frame> {
        let start = self.buf.iter().position(|b| !b.is_ascii_whitespace());
        // A line end between frames ends a garbage run too.
        let blank = start.unwrap_or(self.buf.len());
        if self.buf[..blank].contains(&b'\n') {
            self.in_garbage_run = false;
        }
        match start {
            None => {
                self.buf.clear();
                self.reset_scan();
                return None;
            }
            Some(0) => {}
            Some(n) => {
                self.buf.drain(..n);
                self.scanned = 0;
            }
        }
        match self.buf[0] {
            b'{' => self.scan_container(b'{', b'}'),
            b'[' => self.scan_container(b'[', b']'),
            _ => {
                // Garbage runs to the next plausible request start or line end.
                // Until that is seen, wait for more bytes (up to the request
                // limit): one bad line is one error however it was split.
                // Only the first `max` bytes count, so where garbage is cut
                // never depends on how much had arrived. The search resumes
                // where the last one stopped, so a slow sender costs O(n).
                let (from, to) = (self.scanned.max(1), self.buf.len().min(self.max));
                let found = self.buf.get(from..to).and_then(|w| w.iter().position(|&b| b == b'{' || b == b'[' || b == b'\n'));
                let end = match found.map(|i| from + i) {
                    Some(i) => i + usize::from(self.buf[i] == b'\n'),
                    None if self.buf.len() >= self.max => self.max,
                    None => {
                        self.scanned = to;
                        return None;
                    }
                };
                self.cut_newline = self.buf.drain(..end).any(|b| b == b'\n');
                self.reset_scan();
                Some(Frame::Garbage { len: end, reason: "expected a JSON object starting with '{'" })
            }
        }
    }

    /// Called at end of stream: whatever is left is an incomplete request.
    /// Part of a garbage run already reported is not reported again.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.has_partial() {
            let len = self.buf.len();
            self.buf.clear();
            self.reset_scan();
            if self.in_garbage_run && !self.nested {
                return None;
            }
            Some(Frame::Garbage { len, reason: "connection closed in the middle of a request" })
        } else {
            None
        }
    }

    fn reset_scan(&mut self) {
        self.scanned = 0;
        self.depth = 0;
        self.strings = StringScanner::default();
    }

    /// Finds the matching `close` for the `open` at buf[0]. Only that pair is
    /// counted, so `{"a": [}` still ends at its brace and is reported as bad JSON
    /// instead of swallowing the requests after it. A request never holds an
    /// object, so a `{` inside an unfinished one starts the next request: the
    /// unfinished part is garbage. At most `max` bytes make a request.
    fn scan_container(&mut self, open: u8, close: u8) -> Option<Frame> {
        let mut i = self.scanned;
        while i < self.buf.len() {
            if i >= self.max {
                self.buf.clear();
                self.reset_scan();
                return Some(Frame::TooLarge { limit: self.max });
            }
            let b = self.buf[i];
            if self.strings.step(b) {
                if b == b'\n' {
                    // JSON strings cannot hold a raw newline: the quote was never closed.
                    self.buf.drain(..=i);
                    self.cut_newline = true;
                    self.reset_scan();
                    return Some(Frame::Garbage { len: i + 1, reason: "unterminated string in request" });
                }
            } else if b == b'{' && open == b'{' && i > 0 && !self.nested {
                self.cut_newline = self.buf.drain(..i).any(|b| b == b'\n');
                self.reset_scan();
                return Some(Frame::Garbage { len: i, reason: "unfinished request (a new one began before it ended)" });
            } else if b == open {
                self.depth += 1;
            } else if b == close {
                self.depth -= 1;
                if self.depth == 0 {
                    let frame: Vec<u8> = self.buf.drain(..=i).collect();
                    self.reset_scan();
                    if open == b'[' {
                        self.cut_newline = frame.contains(&b'\n');
                        return Some(Frame::Garbage { len: frame.len(), reason: "expected a JSON object, got an array" });
                    }
                    return Some(Frame::Object(frame));
                }
            }
            i += 1;
        }
        self.scanned = i;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &mut Framer) -> Vec<Frame> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    #[test]
    fn splits_back_to_back_objects() {
        let mut f = Framer::new(1024);
        f.push(br#"{"a":1}{"b":"}"} {"c":[1]}"#);
        let frames = all(&mut f);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1], Frame::Object(br#"{"b":"}"}"#.to_vec()));
    }

    #[test]
    fn byte_by_byte() {
        let mut f = Framer::new(1024);
        let msg = br#"{"cmd": 0x22, "request_data": ["a\"}b"]}"#;
        let mut out = vec![];
        for b in msg.iter() {
            f.push(&[*b]);
            out.extend(all(&mut f));
        }
        assert_eq!(out, vec![Frame::Object(msg.to_vec())]);
    }

    #[test]
    fn garbage_then_object_resyncs() {
        let mut f = Framer::new(1024);
        f.push(b"hello\n{\"a\":1}");
        let frames = all(&mut f);
        assert!(matches!(frames[0], Frame::Garbage { .. }));
        assert_eq!(frames[1], Frame::Object(b"{\"a\":1}".to_vec()));
    }

    #[test]
    fn unterminated_string_resyncs_at_newline() {
        let mut f = Framer::new(1024);
        f.push(b"{\"a: 1}\n{\"b\":2}");
        let frames = all(&mut f);
        assert!(matches!(frames[0], Frame::Garbage { .. }));
        assert_eq!(frames[1], Frame::Object(b"{\"b\":2}".to_vec()));
    }

    /// One run of garbage, one frame, however it ends: `garbage{` then a
    /// request is one error and the request; a line end starts a new run.
    #[test]
    fn a_garbage_run_is_one_frame() {
        let req = br#"{"cmd": 34, "request_data": null}"#;
        for cut in [&b"garbage{"[..], b"garbage{{", b"[1]{", b"x{a:", b"{{{"] {
            let mut f = Framer::new(1024);
            f.push(cut);
            f.push(req);
            let frames = all(&mut f);
            assert_eq!(frames.len(), 2, "{:?}: {frames:?}", String::from_utf8_lossy(cut));
            assert!(matches!(frames[0], Frame::Garbage { .. }));
            assert_eq!(frames[1], Frame::Object(req.to_vec()));
        }
        // Lines are runs of their own: each is reported.
        let mut f = Framer::new(1024);
        f.push(b"garbage{\nmore{\n");
        f.push(req);
        let frames = all(&mut f);
        assert_eq!(frames.iter().filter(|x| matches!(x, Frame::Garbage { .. })).count(), 2, "{frames:?}");
        assert_eq!(frames.last(), Some(&Frame::Object(req.to_vec())));
        // Ending the connection inside a reported run adds nothing; a new line's partial request is reported.
        let mut f = Framer::new(1024);
        f.push(b"garbage{");
        assert!(matches!(all(&mut f)[..], [Frame::Garbage { .. }]));
        assert_eq!(f.finish(), None, "the rest of a reported run");
        let mut f = Framer::new(1024);
        f.push(b"garbage{");
        assert!(matches!(all(&mut f)[..], [Frame::Garbage { .. }]));
        f.push(b"\n{\"cmd\"");
        assert_eq!(all(&mut f), vec![], "the run's rest ends at its line end, unreported");
        assert!(matches!(f.finish(), Some(Frame::Garbage { .. })), "the next line's unfinished request is reported");
        // A line end between frames ends a run as well.
        let mut f = Framer::new(1024);
        f.push(b"[1]\n{{\"cmd\": 34, \"request_data\": null}");
        assert_eq!(all(&mut f).iter().filter(|x| matches!(x, Frame::Garbage { .. })).count(), 2);
    }

    #[test]
    fn too_large() {
        let mut f = Framer::new(16);
        f.push(b"{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(f.next_frame(), Some(Frame::TooLarge { limit: 16 }));
    }

    #[test]
    fn limit_is_exact() {
        let req = br#"{"cmd": 34, "request_data": null}"#;
        let mut f = Framer::new(req.len());
        f.push(req);
        assert_eq!(f.next_frame(), Some(Frame::Object(req.to_vec())));
        let mut f = Framer::new(req.len() - 1);
        f.push(req);
        assert_eq!(f.next_frame(), Some(Frame::TooLarge { limit: req.len() - 1 }));
    }

    #[test]
    fn unfinished_request_does_not_swallow_the_next() {
        let mut f = Framer::new(1024);
        f.push(b"{\"cmd\": 1, \"request_data\": [\"a.jpg\" {\"cmd\": 34, \"request_data\": null}");
        let frames = all(&mut f);
        assert!(matches!(frames[0], Frame::Garbage { reason, .. } if reason.contains("unfinished")), "{frames:?}");
        assert_eq!(frames[1], Frame::Object(b"{\"cmd\": 34, \"request_data\": null}".to_vec()));
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn array_is_reported() {
        let mut f = Framer::new(64);
        f.push(b"[1,{\"a\":2}] {\"x\":1}");
        let frames = all(&mut f);
        assert!(matches!(frames[0], Frame::Garbage { reason, .. } if reason.contains("array")));
        assert_eq!(frames[1], Frame::Object(b"{\"x\":1}".to_vec()));
    }

    #[test]
    fn answers_nest_and_split_anywhere() {
        let answer = br#"{"cmd": 2, "response_data": [{"file_name": "a{.jpg", "result": 0, "error_code": 0}], "request_data": null}"#;
        let mut f = Framer::for_answers(1 << 20);
        for b in answer.iter().chain(b"\n").chain(answer.iter()) {
            f.push(&[*b]);
        }
        assert_eq!(all(&mut f), vec![Frame::Object(answer.to_vec()), Frame::Object(answer.to_vec())]);
    }
}
