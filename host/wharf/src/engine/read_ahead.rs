//! Read-ahead: a log lane's next records, read and decoded while its plugin
//! call waits on the target.
//!
//! A lane reads, decodes and admits the next messages between two calls.
//! Done only there, that work is serial with the target's round trip. So
//! once a call has started (its first poll is pending: the guest waits on
//! its target), the lane reads up to one batch from the window's
//! `next_read` on (`Source::read_ahead`: the embedded log's active segment
//! only, no blocking I/O) and keeps it here. The next `fill` admits it
//! before it pulls.
//!
//! Invariants:
//! - nothing read ahead is in the window: the watermark, status and the
//!   source's reservations never count it, and dropping it loses nothing
//!   (the records are still in the log);
//! - it is admitted only where it was read from: `from` must be the
//!   window's `next_read`. If the window moved meanwhile (a rewind), the
//!   read-ahead is dropped and the records are read again;
//! - it is admitted in order, up to the window's room; the rest stays
//!   here, with `from` moved past what was admitted.

use std::collections::VecDeque;

use super::source::Pulled;

/// Records read ahead of the window, from `from` on.
#[derive(Debug)]
pub struct ReadAhead {
    from: u64,
    pulled: VecDeque<Pulled>,
}

impl ReadAhead {
    /// `None` when nothing was read.
    pub fn new(from: u64, pulled: Vec<Pulled>) -> Option<Self> {
        (!pulled.is_empty()).then(|| Self { from, pulled: pulled.into() })
    }

    /// What a window whose next read is `next_read`, with room for `room`
    /// messages, admits now (in order), and what stays read ahead. Nothing,
    /// and nothing stays, if the window no longer reads from here.
    pub fn take(mut self, next_read: u64, room: usize) -> (Vec<Pulled>, Option<Self>) {
        if self.from != next_read {
            return (Vec::new(), None);
        }
        let mut now = Vec::new();
        let mut messages = 0;
        while let Some(item) = self.pulled.front() {
            let is_message = matches!(item, Pulled::Message(..));
            if is_message && messages == room {
                break;
            }
            messages += usize::from(is_message);
            if let Some(seq) = item.seq() {
                self.from = seq + 1;
            }
            now.extend(self.pulled.pop_front());
        }
        let rest = (!self.pulled.is_empty()).then_some(self);
        (now, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::window::Pending;
    use crate::storage::envelope::Envelope;

    fn message(seq: u64) -> Pulled {
        Pulled::Message(seq, Box::new(Pending::new(format!("0-{seq}"), Envelope::raw(None, Vec::new()))))
    }

    fn seqs(items: &[Pulled]) -> Vec<u64> {
        items.iter().filter_map(Pulled::seq).collect()
    }

    #[test]
    fn admits_in_order_up_to_the_room_and_keeps_the_rest_from_where_it_stopped() {
        let ahead = ReadAhead::new(10, vec![message(10), Pulled::Skip(11), message(12), message(13)]);
        let (now, rest) = ahead.expect("read").take(10, 2);
        assert_eq!(seqs(&now), vec![10, 11, 12]);
        let rest = rest.expect("one left");
        let (later, none) = rest.take(13, 5);
        assert_eq!(seqs(&later), vec![13]);
        assert!(none.is_none());
    }

    #[test]
    fn a_window_that_moved_drops_the_read_ahead() {
        let ahead = ReadAhead::new(10, vec![message(10), message(11)]).expect("read");
        let (now, rest) = ahead.take(4, 10);
        assert!(now.is_empty() && rest.is_none());
    }

    #[test]
    fn no_room_admits_nothing_and_keeps_everything() {
        let ahead = ReadAhead::new(7, vec![message(7)]).expect("read");
        let (now, rest) = ahead.take(7, 0);
        assert!(now.is_empty());
        let (now, rest) = rest.expect("kept").take(7, 1);
        assert_eq!((seqs(&now), rest.is_none()), (vec![7], true));
        assert!(ReadAhead::new(1, Vec::new()).is_none());
    }
}
