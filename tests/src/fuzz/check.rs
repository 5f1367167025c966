//! What a program's output frame must be: expected bytes, the bytes left free (an
//! outer IP ID, a chosen port, a checksum), and the checksum rules that bind the free
//! checksums. Checksums are judged by their invariant, not recomputed the programs'
//! way: an incremental update (RFC 1624) keeps the one's-complement sum over what it
//! covers, so a bad checksum stays exactly as bad and a good one stays good.

use std::ops::{Range, RangeInclusive};

/// A rule binding a checksum the program rewrote.
#[derive(Clone, Debug)]
pub enum Sum {
    /// The one's-complement sum over these input bytes equals the one over these
    /// output bytes (each list is a sequence of ranges, each summed from its start).
    Kept { input: Vec<Range<usize>>, output: Vec<Range<usize>> },
    /// These output bytes (a header with its checksum) sum to zero: a fresh checksum.
    Valid(Range<usize>),
}

/// The expected output of a run.
#[derive(Clone, Debug, Default)]
pub struct OutSpec {
    pub expect: Vec<u8>,
    /// Output bytes that may hold anything (bound by `sums` or `ports`, or not compared:
    /// the outer IP ID and DF bit, which encapsulation may set as it likes).
    pub free: Vec<Range<usize>>,
    pub sums: Vec<Sum>,
    /// 16-bit big-endian output fields whose value must lie in one of these ranges.
    pub ports: Vec<(usize, Vec<RangeInclusive<u16>>)>,
    /// A dropped frame: whatever the program left in it is never sent, so not compared.
    pub dropped: bool,
}

impl OutSpec {
    pub fn same(input: &[u8]) -> OutSpec {
        OutSpec { expect: input.to_vec(), ..Default::default() }
    }

    /// Why `out` is not what this spec allows, or None.
    pub fn mismatch(&self, input: &[u8], out: &[u8]) -> Option<String> {
        if self.dropped {
            return None;
        }
        if out.len() != self.expect.len() {
            return Some(format!("output length {} != {}", out.len(), self.expect.len()));
        }
        let free = |i: usize| self.free.iter().any(|r| r.contains(&i));
        if let Some(i) = (0..out.len()).find(|&i| !free(i) && out[i] != self.expect[i]) {
            return Some(format!("output byte {i}: {:#04x}, expected {:#04x}", out[i], self.expect[i]));
        }
        for (at, ranges) in &self.ports {
            if at + 2 > out.len() {
                return Some(format!("output too short for the field at {at}"));
            }
            let v = u16::from_be_bytes([out[*at], out[*at + 1]]);
            if !ranges.iter().any(|r| r.contains(&v)) {
                return Some(format!("output field at {at}: {v} outside {ranges:?}"));
            }
        }
        for s in &self.sums {
            match s {
                Sum::Kept { input: i, output: o } => {
                    let (a, b) = (residue(input, i), residue(out, o));
                    if a != b {
                        return Some(format!("checksum over {o:?} not kept (sum {a:#x} before, {b:#x} after)"));
                    }
                }
                Sum::Valid(r) => {
                    if residue(out, std::slice::from_ref(r)) != 0 {
                        return Some(format!("checksum over {r:?} does not verify"));
                    }
                }
            }
        }
        None
    }
}

/// One's-complement sum of the ranges (each padded to even length), modulo 0xffff
/// (so the two zeros, 0 and 0xffff, are one). A range is cut at the frame's end (a
/// header whose IHL claims more than the frame holds).
pub fn residue(bytes: &[u8], ranges: &[Range<usize>]) -> u64 {
    let mut sum = 0u64;
    for r in ranges {
        let r = r.start.min(bytes.len())..r.end.min(bytes.len());
        for c in bytes[r].chunks(2) {
            sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    sum % 0xffff
}

/// Lowercase hex of a frame, for mismatch reports.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
