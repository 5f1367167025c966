//! One count per packet, by verdict.

use weft_common::counters::Verdict;

use crate::maps::WEFT_COUNTERS;

#[inline(always)]
pub fn count(verdict: Verdict, bytes: u32) {
    if let Some(c) = WEFT_COUNTERS.get_ptr_mut(verdict.index()) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so it points
        // at this CPU's slot; no other CPU writes it and this program is not re-entered
        // on the same CPU while it runs, so the plain adds do not race.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(bytes);
        }
    }
}
