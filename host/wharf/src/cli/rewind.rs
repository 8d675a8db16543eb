//! `wharf rewind`: re-deliver retained history to a namespace's targets
//! (docs/operations.md, "Restore a target from backup and replay"), then
//! follow the rewind in status with a progress bar until it is done.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::output::{CliError, Progress, outln};
use super::remote::{Client, Server, encode};

/// How often the progress is read from `/v1/status`.
const POLL: Duration = Duration::from_millis(250);

#[derive(clap::Args, Debug)]
pub struct RewindArgs {
    /// The namespace.
    pub namespace: String,
    /// Only this target (default: every target but replica shippers).
    #[arg(long)]
    pub target: Option<String>,
    #[command(flatten)]
    pub from: From,
    /// Start the rewind and return; follow it with `wharf status`.
    #[arg(long)]
    pub no_wait: bool,
}

/// Where to start: exactly one.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct From {
    /// The first record written at or after this RFC 3339 time, in every partition.
    #[arg(long, value_name = "RFC3339")]
    pub from_time: Option<String>,
    /// These partitions from these sequences (the others are not rewound).
    #[arg(long, value_name = "P:SEQ", num_args = 1..)]
    pub from_seq: Vec<String>,
    /// The oldest record every partition retains.
    #[arg(long)]
    pub earliest: bool,
}

impl From {
    fn body(&self) -> Result<Value, CliError> {
        if self.earliest {
            return Ok(json!({"earliest": true}));
        }
        if let Some(t) = &self.from_time {
            return Ok(json!({"from_time": t}));
        }
        let mut seqs = serde_json::Map::new();
        for item in &self.from_seq {
            let parsed = item
                .split_once(':')
                .and_then(|(p, s)| Some((p.parse::<u32>().ok()?, s.parse::<u64>().ok()?)));
            let (p, s) = parsed.ok_or_else(|| {
                CliError::new(
                    "invalid_rewind",
                    format!("--from-seq {item:?}: expected PARTITION:SEQUENCE, e.g. 0:1200"),
                )
            })?;
            seqs.insert(p.to_string(), json!(s));
        }
        Ok(json!({"from_seq": seqs}))
    }
}

pub fn rewind(server: &Server, args: RewindArgs) -> anyhow::Result<ExitCode> {
    let mut body = args.from.body()?;
    if let Some(t) = &args.target {
        body["target"] = json!(t);
    }
    let client = Client::new(server)?;
    let path = format!("/v1/admin/namespaces/{}/rewind", encode(&args.namespace));
    let started = client.call("POST", &path, Some(body))?;
    let lanes = started["rewinds"].as_array().cloned().unwrap_or_default();
    if !server.json {
        for l in &lanes {
            outln!(
                "{}/{} partition {}: rewound to sequence {} ({} replays)",
                args.namespace,
                l["target"].as_str().unwrap_or("?"),
                l["partition"],
                l["from"],
                l["end"].as_u64().unwrap_or(0).saturating_sub(l["from"].as_u64().unwrap_or(0))
            )?;
        }
    }
    if !args.no_wait {
        follow(&client, server, &args.namespace, &lanes)?;
    }
    if server.json {
        let mut out = started;
        out["finished"] = json!(!args.no_wait);
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
    } else if !args.no_wait {
        outln!("{}: history re-delivered", args.namespace)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls status until none of `lanes` rewinds any more, with a progress
/// line (on stderr, once a second) showing a bar of what is re-delivered.
fn follow(client: &Client, server: &Server, ns: &str, lanes: &[Value]) -> anyhow::Result<()> {
    let total: u64 = lanes.iter().map(replays).sum();
    let mut progress = Progress::new(!server.json);
    loop {
        let status = client.call("GET", "/v1/status", None)?;
        let remaining: Vec<u64> = lanes.iter().filter_map(|l| lane_remaining(&status, ns, l)).collect();
        if remaining.is_empty() {
            return Ok(());
        }
        let left: u64 = remaining.iter().sum();
        progress.tick(|| bar(total.saturating_sub(left), total, remaining.len()));
        std::thread::sleep(POLL);
    }
}

fn replays(lane: &Value) -> u64 {
    lane["end"].as_u64().unwrap_or(0).saturating_sub(lane["from"].as_u64().unwrap_or(0))
}

/// What a lane has left to re-deliver; `None` once its rewind is over.
fn lane_remaining(status: &Value, ns: &str, lane: &Value) -> Option<u64> {
    let target = lane["target"].as_str()?;
    let partitions = status["namespaces"][ns]["targets"][target]["partitions"].as_array()?;
    let p = partitions.iter().find(|p| p["partition"] == lane["partition"])?;
    p["rewind"]["remaining"].as_u64()
}

/// `[=========>          ]  45%  450/1000 replays, 2 lanes rewinding`.
fn bar(done: u64, total: u64, lanes: usize) -> String {
    const WIDTH: u64 = 30;
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH) as usize;
    let head = if filled < WIDTH as usize { ">" } else { "" };
    let rest = (WIDTH as usize).saturating_sub(filled + head.len());
    format!(
        "[{}{head}{}] {pct:>3}%  {done}/{total} replays, {lanes} lane{} rewinding",
        "=".repeat(filled),
        " ".repeat(rest),
        if lanes == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_share_done() {
        assert_eq!(bar(0, 10, 2), format!("[>{}]   0%  0/10 replays, 2 lanes rewinding", " ".repeat(29)));
        assert_eq!(
            bar(5, 10, 1),
            format!("[{}>{}]  50%  5/10 replays, 1 lane rewinding", "=".repeat(15), " ".repeat(14))
        );
        assert_eq!(bar(10, 10, 1), format!("[{}] 100%  10/10 replays, 1 lane rewinding", "=".repeat(30)));
        assert_eq!(bar(0, 0, 1), format!("[{}] 100%  0/0 replays, 1 lane rewinding", "=".repeat(30)));
    }

    #[test]
    fn a_sequence_is_partition_colon_sequence() {
        let from = |seqs: &[&str]| From {
            from_time: None,
            from_seq: seqs.iter().map(|s| s.to_string()).collect(),
            earliest: false,
        };
        assert_eq!(from(&["0:12", "3:40"]).body().expect("valid"), json!({"from_seq": {"0": 12, "3": 40}}));
        assert!(from(&["0-12"]).body().is_err());
        assert!(from(&["x:1"]).body().is_err());
    }
}
