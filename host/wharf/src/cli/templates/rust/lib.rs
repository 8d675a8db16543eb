//! {{name}}: a Wharf target plugin. It logs every message through the host
//! and delivers it; replace `deliver_one` with your own delivery.

use wharf_sdk::{Config, Error, Message, Target, log};

#[derive(Debug)]
pub struct {{class}} {
    prefix: String,
}

impl Target for {{class}} {
    fn init(config: Config) -> Result<Self, Error> {
        Ok({{class}} { prefix: config.get_or("prefix", "got").to_string() })
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        if msg.payload.is_empty() {
            return Err(Error::reject("empty payload"));
        }
        log::info(format!("{} {} key={:?}: {}", self.prefix, msg.id, msg.key, msg.payload_lossy()));
        Ok(())
    }
}

wharf_sdk::export_target!({{class}});

#[cfg(test)]
mod tests {
    use wharf_sdk::testing::{Harness, message};

    #[test]
    fn delivers_a_message_and_rejects_an_empty_one() {
        let mut plugin = Harness::<super::{{class}}>::init(&[("prefix", "test")]).expect("init");
        let outcomes = plugin.deliver(vec![message("hello").with_key("k"), message("")]);
        assert!(outcomes[0].is_delivered(), "{outcomes:?}");
        assert!(outcomes[1].is_reject(), "{outcomes:?}");
    }
}
