//! The smallest useful Wharf target: log every message, then deliver it.

use wharf_sdk::{Config, Error, Message, Target, log};

#[derive(Debug)]
pub struct LogTarget;

impl Target for LogTarget {
    fn init(_config: Config) -> Result<Self, Error> {
        Ok(LogTarget)
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        log::info(format!("{} key={:?}: {}", msg.id, msg.key, msg.payload_lossy()));
        Ok(())
    }
}

wharf_sdk::export_target!(LogTarget);

#[cfg(test)]
mod tests {
    use wharf_sdk::testing::{Harness, message};

    #[test]
    fn delivers_every_message() {
        let mut plugin = Harness::<super::LogTarget>::init(&[]).expect("init");
        let outcomes = plugin.deliver(vec![message("hello").with_key("k"), message("world")]);
        assert!(outcomes.iter().all(|o| o.is_delivered()), "{outcomes:?}");
    }
}
