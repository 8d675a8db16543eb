//! The write time a partition stamps on each message as it appends it.
//!
//! Rule, per partition, in sequence order (the log calls the stamp under
//! its append lock, see `wharf_log::Partition::append_stamped`), over the
//! client writes it stamps (a DLQ replay keeps the write time it had):
//! `ms = max(now, last ms)`, plus one when that is the last stamp's
//! millisecond and a multiple of 1000 lies between the two sequences.
//!
//! So the write time never goes back along a partition, even when the wall
//! clock steps back (it waits at the last value until the clock catches
//! up), and `ms * 1000 + seq % 1000` — the microsecond timestamp the
//! Cassandra plugin writes with `USING TIMESTAMP` — strictly increases
//! from one stamped record to the next: within one millisecond `seq %
//! 1000` only grows. After a restart the clock starts from the log's last
//! record.

use std::sync::Mutex;

/// One partition's write clock.
#[derive(Debug, Default)]
pub struct WriteClock {
    /// The last stamp: `(ms, seq)` (`None`: none yet).
    last: Mutex<Option<(u64, u64)>>,
}

impl WriteClock {
    /// A clock whose last record, `seq`, was written at `ms` (`None`: an
    /// empty log, or its last record is gone).
    pub fn after(last: Option<(u64, u64)>) -> Self {
        Self { last: Mutex::new(last) }
    }

    /// The write time of record `seq`, appended when the wall clock reads
    /// `now_ms`.
    pub fn stamp(&self, seq: u64, now_ms: u64) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let ms = match *last {
            None => now_ms,
            Some((prev, _)) if now_ms > prev => now_ms,
            Some((prev, prev_seq)) if seq / 1000 != prev_seq / 1000 => prev + 1,
            Some((prev, _)) => prev,
        };
        *last = Some((ms, seq));
        ms
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The Cassandra plugin's `USING TIMESTAMP` (plugins/cassandra,
    /// `mapping::timestamp_micros`).
    fn micros(written_at_ms: u64, seq: u64) -> u64 {
        written_at_ms * 1000 + seq % 1000
    }

    proptest! {
        /// Whatever the wall clock does (steps back, stands still, many
        /// records per millisecond), the derived timestamps strictly increase
        /// and the write time never goes back or runs ahead of the clock by
        /// more than it must.
        #[test]
        fn timestamps_strictly_increase_along_a_partition(
            start_seq in 1u64..5000,
            last in proptest::option::of(0u64..2_000),
            steps in proptest::collection::vec((0u64..3, -50i64..50, 1u64..4), 1..3000),
        ) {
            let last = last.map(|ms| (ms, start_seq - 1));
            let clock = WriteClock::after(last);
            let mut now: i64 = 1_000;
            let mut prev = last;
            let mut seq = start_seq;
            // `gap`: replays between stamped records take sequences too.
            for (records, jump, gap) in &steps {
                now = (now + jump).max(0);
                seq += gap - 1;
                for _ in 0..=*records {
                    let ms = clock.stamp(seq, now as u64);
                    if let Some((pms, pseq)) = prev {
                        prop_assert!(ms >= pms, "write time went back at {seq}");
                        prop_assert!(micros(ms, seq) > micros(pms, pseq), "timestamp not increasing at {seq}");
                    }
                    prop_assert!(ms >= now as u64);
                    prev = Some((ms, seq));
                    seq += 1;
                }
            }
        }
    }

    #[test]
    fn a_thousand_and_one_records_in_one_millisecond_move_to_the_next() {
        let clock = WriteClock::after(None);
        let stamps: Vec<u64> = (0..1001).map(|seq| clock.stamp(seq, 500)).collect();
        assert_eq!(stamps[0], 500);
        assert_eq!(stamps[999], 500);
        assert_eq!(stamps[1000], 501, "seq 1000 would wrap to micros 500_000 otherwise");
        let after_step_back = clock.stamp(1001, 100);
        assert_eq!(after_step_back, 501, "a clock stepping back waits");
        assert_eq!(clock.stamp(2003, 100), 502, "2000 lies between, skipped by replays");
    }
}
