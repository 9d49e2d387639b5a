//! Support for tests in this and later crates: a deterministic mutator of DAG files.
//!
//! Not part of the DAG model; public only so that every crate's tests can share it.

/// Mutates bytes the ways a broken editor or a hostile user would: truncation, flipped bytes,
/// inserted YAML punctuation, duplicated and dropped lines. Seeded, so runs repeat exactly.
pub struct Mutator {
    state: u64,
}

const PUNCTUATION: [&[u8]; 18] = [
    b":", b"-", b"[", b"]", b"{", b"}", b"&", b"*", b"|", b">", b"'", b"\"", b"#", b"%", b"!",
    b"\n", b" ", b"\t",
];

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Mutator { state: seed.max(1) }
    }

    /// A number below `bound` (xorshift64).
    fn below(&mut self, bound: usize) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % bound.max(1) as u64) as usize
    }

    /// One to four random edits of `source`.
    pub fn mutate(&mut self, source: &[u8]) -> Vec<u8> {
        let mut bytes = source.to_vec();
        for _ in 0..1 + self.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = self.below(bytes.len());
            let line_end = bytes[at..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |p| at + p + 1);
            match self.below(5) {
                0 => bytes.truncate(at),
                1 => bytes[at] = self.below(256) as u8,
                2 => {
                    let p = PUNCTUATION[self.below(PUNCTUATION.len())];
                    bytes.splice(at..at, p.iter().copied());
                }
                3 => {
                    let line = bytes[at..line_end].to_vec();
                    bytes.splice(at..at, line);
                }
                _ => {
                    bytes.drain(at..line_end);
                }
            }
        }
        bytes
    }
}
