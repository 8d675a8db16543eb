//! The namespace's `target.config` table.

use std::fmt::Display;
use std::str::FromStr;

use crate::{Error, is_secret_key, redact_url};

/// The plugin's configuration: the namespace's `target.config` table, every
/// value a string. Errors from these helpers name the key and the problem,
/// ready to be returned from `init`.
///
/// A key whose name ends in `password`, `token`, `secret`, `key` (so
/// `api_key`) and the like ([`is_secret_key`]) holds a secret: these errors
/// never echo its value, and neither should the plugin's own. Other values
/// they echo go through [`redact_url`] first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// A config from key/value pairs.
    pub fn new<K: Into<String>, V: Into<String>>(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { entries: entries.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The value of `key`, if set (the last one wins if a key repeats).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default` if it is not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`; an error if it is missing or blank.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        match self.get(key) {
            None => Err(Error::reject(format!("config key `{key}` is required but missing"))),
            Some(v) if v.trim().is_empty() => {
                Err(Error::reject(format!("config key `{key}` is required but empty")))
            }
            Some(v) => Ok(v),
        }
    }

    /// The value of a required `key`, parsed as `T`.
    pub fn parse<T>(&self, key: &str) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        parse_value(key, self.require(key)?)
    }

    /// The value of an optional `key`, parsed as `T`; `None` if not set.
    pub fn parse_opt<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(key).map(|v| parse_value(key, v)).transpose()
    }

    /// The value of an optional `key`, parsed as `T`, or `default` if not set.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse_opt(key)?.unwrap_or(default))
    }

    /// Every key/value pair, in the order the host gave them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn parse_value<T>(key: &str, value: &str) -> Result<T, Error>
where
    T: FromStr,
    T::Err: Display,
{
    let ty = short_type_name::<T>();
    let text = value.trim();
    text.parse::<T>().map_err(|e| {
        // The parse error may quote the value too.
        if is_secret_key(key) {
            return Error::reject(format!(
                "config key `{key}`: cannot parse its value (a secret, not shown) as {ty}"
            ));
        }
        let detail = e.to_string().replace(text, &redact_url(text));
        Error::reject(format!("config key `{key}`: cannot parse {:?} as {ty}: {detail}", redact_url(value)))
    })
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    // "core::time::Duration" -> "Duration"; keeps generics readable enough.
    full.rsplit("::").next().unwrap_or(full)
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Config::new(iter)
    }
}
