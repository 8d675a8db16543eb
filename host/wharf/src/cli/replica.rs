//! `wharf target resume` and `wharf replica status|resume`: the operator's
//! side of halts and replication (docs/replication.md).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::output::outln;
use super::remote::{Client, Server, encode};

#[derive(Subcommand, Debug)]
pub enum TargetCmd {
    /// Resume a target its plugin halted (e.g. a replica that diverged),
    /// on one partition or all.
    Resume {
        /// The namespace.
        namespace: String,
        /// The target.
        target: String,
        /// Only this partition (default: every halted partition).
        #[arg(long)]
        partition: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReplicaCmd {
    /// Replication state of every replica-shipping target and replica
    /// namespace: lag (messages, seconds), state, halt reason.
    Status,
    /// Clear a replica namespace's replication halt; the next batch is
    /// checked as any other (a divergence halts again).
    Resume {
        /// The replica namespace.
        namespace: String,
        /// Only this partition (default: every halted partition).
        #[arg(long)]
        partition: Option<u32>,
    },
    /// Discard one partition of a replica namespace and install the
    /// primary's retained history in its place (a snapshot: fetched,
    /// verified record by record, switched in atomically). Audited.
    Rebuild {
        /// The replica namespace.
        namespace: String,
        /// The partition to rebuild.
        #[arg(long)]
        partition: u32,
        /// Base URL of the primary Wharf (e.g. http://10.0.0.5:7070).
        #[arg(long = "from", value_name = "URL")]
        from: String,
        /// The primary's namespace, when its name differs.
        #[arg(long)]
        primary_namespace: Option<String>,
    },
}

fn partition_query(p: Option<u32>) -> String {
    p.map(|p| format!("?partition={p}")).unwrap_or_default()
}

pub fn target(server: &Server, cmd: TargetCmd) -> anyhow::Result<ExitCode> {
    let TargetCmd::Resume { namespace, target, partition } = cmd;
    let path = format!(
        "/v1/admin/namespaces/{}/targets/{}/resume{}",
        encode(&namespace),
        encode(&target),
        partition_query(partition)
    );
    let v = Client::new(server)?.call("POST", &path, None)?;
    print_resumed(server, &v, &format!("{namespace}/{target}"))
}

pub fn replica(server: &Server, cmd: ReplicaCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ReplicaCmd::Status => status(server),
        ReplicaCmd::Resume { namespace, partition } => {
            let path = format!(
                "/v1/admin/namespaces/{}/replication/resume{}",
                encode(&namespace),
                partition_query(partition)
            );
            let v = Client::new(server)?.call("POST", &path, None)?;
            print_resumed(server, &v, &namespace)
        }
        ReplicaCmd::Rebuild { namespace, partition, from, primary_namespace } => {
            rebuild(server, &namespace, partition, from, primary_namespace)
        }
    }
}

/// `wharf replica rebuild`: the primary's token, if it needs one, comes
/// from `WHARF_PRIMARY_TOKEN`.
fn rebuild(
    server: &Server,
    namespace: &str,
    partition: u32,
    from: String,
    primary_namespace: Option<String>,
) -> anyhow::Result<ExitCode> {
    let path =
        format!("/v1/admin/namespaces/{}/replication/rebuild?partition={partition}", encode(namespace));
    let body = serde_json::json!({
        "from": from,
        "namespace": primary_namespace,
        "token": std::env::var("WHARF_PRIMARY_TOKEN").ok(),
    });
    if !server.json {
        outln!("rebuilding {namespace} partition {partition} from {from} ...")?;
    }
    let v = Client::new(server)?.call("POST", &path, Some(body))?;
    if server.json {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let r = &v["rebuilt"];
    outln!(
        "rebuilt {namespace} partition {partition}: {} records installed ({}..{}), chained digest {} at {}",
        r["records"],
        r["base_seq"],
        r["end"],
        r["end_digest"].as_str().unwrap_or("?"),
        r["end"]
    )?;
    Ok(ExitCode::SUCCESS)
}

fn print_resumed(server: &Server, v: &Value, what: &str) -> anyhow::Result<ExitCode> {
    if server.json {
        outln!("{}", serde_json::to_string_pretty(v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let resumed = v["resumed"].as_array().cloned().unwrap_or_default();
    if resumed.is_empty() {
        outln!("{what}: nothing was halted")?;
    }
    for r in resumed {
        outln!("{what} partition {}: resumed (was: {})", r["partition"], r["was"].as_str().unwrap_or("?"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per partition of a shipping target (`ordering = "partition"`)
/// or of a replica namespace.
fn status(server: &Server) -> anyhow::Result<ExitCode> {
    let s = Client::new(server)?.call("GET", "/v1/status", None)?;
    let rows = rows(&s);
    if server.json {
        outln!("{}", serde_json::to_string_pretty(&Value::Array(rows))?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        outln!("no replication here: no target with ordering = \"partition\" and no replica namespace")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<16} {:<10} {:<12} {:>4} {:>10} {:>9} {:<12} REASON",
        "NAMESPACE",
        "ROLE",
        "TARGET",
        "PART",
        "LAG_MSGS",
        "LAG_S",
        "STATE"
    )?;
    for r in rows {
        outln!(
            "{:<16} {:<10} {:<12} {:>4} {:>10} {:>9} {:<12} {}",
            r["namespace"].as_str().unwrap_or("?"),
            r["role"].as_str().unwrap_or("?"),
            r["target"].as_str().unwrap_or("-"),
            r["partition"],
            r["lag_messages"].as_u64().map_or("-".to_string(), |n| n.to_string()),
            r["lag_seconds"].as_f64().map_or("-".to_string(), |s| format!("{s:.1}")),
            r["state"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("-"),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn rows(s: &Value) -> Vec<Value> {
    let mut rows = Vec::new();
    let empty = serde_json::Map::new();
    for (name, ns) in s["namespaces"].as_object().unwrap_or(&empty) {
        for (tname, t) in ns["targets"].as_object().unwrap_or(&empty) {
            if t["ordering"] != "partition" {
                continue;
            }
            for lane in t["partitions"].as_array().cloned().unwrap_or_default() {
                let halted = lane["halted"].as_bool().unwrap_or(false);
                rows.push(serde_json::json!({
                    "namespace": name, "role": "primary", "target": tname, "partition": lane["partition"],
                    "lag_messages": lane["backlog"], "lag_seconds": lane["lag_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                    "state": if halted { "halted" } else { "shipping" },
                    "reason": lane["halt"]["reason"],
                }));
            }
        }
        if ns["mode"] != "replica" {
            continue;
        }
        for p in ns["partitions"].as_array().cloned().unwrap_or_default() {
            rows.push(serde_json::json!({
                "namespace": name, "role": "replica", "target": null, "partition": p["partition"],
                "end": p["chain"]["end"], "digest": p["chain"]["digest"],
                "lag_messages": null, "lag_seconds": null,
                "state": p["replication"]["state"],
                "reason": p["replication"]["halt"]["reason"],
            }));
        }
    }
    rows
}
