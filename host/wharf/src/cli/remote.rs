//! Commands that talk to a running `wharf serve` over its HTTP API:
//! `wharf status` and `wharf dlq list|replay|purge`.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct Server {
    /// Base URL of the running sidecar's HTTP API.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7070", env = "WHARF_URL")]
    pub server: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum DlqCmd {
    /// List dead-lettered messages of a namespace.
    List {
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this message id (the `next_after` of the last page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Put entries back on their partition (all, or the given ids).
    Replay {
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
        /// Message ids to replay; all entries when none are given.
        ids: Vec<String>,
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Dead-letter a message that is stuck pending or retrying (audited).
    Move {
        namespace: String,
        message_id: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
        /// Why; kept in the DLQ entry and the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Delete every entry of the namespace's DLQ, or only the given ids.
    Purge {
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
        ids: Vec<String>,
    },
}

struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(600)))
            .build()
            .into();
        Self { base: base.trim_end_matches('/').to_string(), agent }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.send(method, path, body.map(|b| b.to_string().into_bytes()))
    }

    /// Sends a request (with `WHARF_TOKEN` as bearer token when set).
    fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = std::env::var("WHARF_TOKEN").ok().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), &auth).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), &auth).call(),
            ("PUT", Some(b)) => {
                with_auth(self.agent.put(&url), &auth).header("content-type", "application/wasm").send(&b[..])
            }
            (_, Some(b)) => with_auth(self.agent.post(&url), &auth)
                .header("content-type", "application/json")
                .send(&b[..]),
            (_, None) => with_auth(self.agent.post(&url), &auth).send_empty(),
        };
        let mut resp = result.with_context(|| format!("cannot reach wharf at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().context("reading the reply")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let msg = value["error"]["message"].as_str().unwrap_or("");
            bail!("{method} {path}: {status} {code}: {msg}");
        }
        Ok(value)
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("authorization", a),
        None => req,
    }
}

#[derive(Subcommand, Debug)]
pub enum PluginAdmin {
    /// Validate a plugin and make it the namespace's target, while running.
    Register {
        #[arg(long)]
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
        file: std::path::PathBuf,
    },
    /// Go back to the namespace's previous plugin.
    Rollback {
        #[arg(long)]
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
    },
    /// Remove the namespace's plugin: writes stay durable, delivery pauses.
    Remove {
        #[arg(long)]
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
    },
}

pub fn plugin_admin(server: &Server, cmd: PluginAdmin) -> anyhow::Result<ExitCode> {
    let c = Client::new(&server.server);
    let v = match cmd {
        PluginAdmin::Register { namespace, target, file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            if !server.json {
                eprintln!("uploading {} ({} bytes) and validating ...", file.display(), bytes.len());
            }
            c.send(
                "PUT",
                &format!("/v1/admin/namespaces/{namespace}/plugin{}", query(&target, '?')),
                Some(bytes),
            )?
        }
        PluginAdmin::Rollback { namespace, target } => c.call(
            "POST",
            &format!("/v1/admin/namespaces/{namespace}/plugin/rollback{}", query(&target, '?')),
            None,
        )?,
        PluginAdmin::Remove { namespace, target } => c.call(
            "DELETE",
            &format!("/v1/admin/namespaces/{namespace}/plugin{}", query(&target, '?')),
            None,
        )?,
    };
    if server.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if v["already_current"] == json!(true) {
        println!(
            "namespace {}: plugin {} already current; nothing changed",
            v["namespace"].as_str().unwrap_or("?"),
            v["digest"].as_str().unwrap_or("")
        );
    } else {
        println!(
            "namespace {}: plugin {} {}",
            v["namespace"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            v["digest"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `wharf reload`: re-read the config of a running sidecar.
pub fn reload(server: &Server) -> anyhow::Result<ExitCode> {
    let v = Client::new(&server.server).call("POST", "/v1/admin/reload", None)?;
    if server.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for k in ["added", "removed", "plugin_changed", "errors"] {
            let items: Vec<&str> =
                v[k].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            println!("{k:<15} {}", if items.is_empty() { "-".to_string() } else { items.join(", ") });
        }
    }
    let failed = v["errors"].as_array().is_some_and(|e| !e.is_empty());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub fn status(server: &Server) -> anyhow::Result<ExitCode> {
    let s = Client::new(&server.server).call("GET", "/v1/status", None)?;
    if server.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "wharf {} at {} (durability: {})",
        s["version"].as_str().unwrap_or("?"),
        server.server,
        s["durability"]
    );
    let empty = serde_json::Map::new();
    for (name, ns) in s["namespaces"].as_object().unwrap_or(&empty) {
        let p = &ns["plugin"];
        println!();
        println!(
            "namespace {name}: plugin {} {} ({}), dlq {}",
            p["state"].as_str().unwrap_or("?"),
            p["wit"].as_str().unwrap_or("?"),
            p["digest"].as_str().map(|d| &d[..d.len().min(19)]).unwrap_or("-"),
            ns["dlq_size"]
        );
        if let Some(r) = p["reason"].as_str() {
            println!("  reason: {r}");
        }
        println!(
            "  {:>4} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>6}  state",
            "part", "head", "durable", "watermark", "backlog", "inflight", "retrykey", "breaker", "batch"
        );
        for part in ns["partitions"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let d = &part["delivery"];
            let state = match part["halted_reason"].as_str() {
                Some(r) => format!("HALTED: {r}"),
                None => "ok".into(),
            };
            println!(
                "  {:>4} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>6}  {state}",
                part["partition"],
                part["head_sequence"],
                part["durable_sequence"],
                part["delivered_watermark"],
                part["backlog"],
                d["in_flight"],
                d["retrying_keys"],
                d["breaker"]["state"].as_str().unwrap_or("-"),
                d["batch_limit"],
            );
        }
        print_targets(&ns["targets"]);
    }
    Ok(ExitCode::SUCCESS)
}

/// One block per target: its plugin, DLQ and lanes.
fn print_targets(targets: &Value) {
    let empty = serde_json::Map::new();
    for (name, t) in targets.as_object().unwrap_or(&empty) {
        let p = &t["plugin"];
        println!(
            "  target {name}: plugin {} {}, dlq {}",
            p["state"].as_str().unwrap_or("?"),
            p["wit"].as_str().unwrap_or("?"),
            t["dlq_size"]
        );
        for lane in t["partitions"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let d = &lane["delivery"];
            println!(
                "    lane {:>3}  watermark {:>10}  backlog {:>8}  lag {:>7} ms  window {:>5}  delivered {:>9}  retrying keys {:>4}  breaker {}",
                lane["partition"],
                lane["delivered_watermark"],
                lane["backlog"],
                lane["lag_ms"],
                d["window"],
                d["delivered_total"],
                d["retrying_keys"],
                d["breaker"]["state"].as_str().unwrap_or("-"),
            );
        }
    }
}

/// `?target=NAME` (or `&target=NAME`), or nothing.
fn query(target: &Option<String>, sep: char) -> String {
    target.as_ref().map(|t| format!("{sep}target={}", encode(t))).unwrap_or_default()
}

/// One URL path segment or query value: Kafka message ids hold `/` and `@`.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every entry id of a target's DLQ, page by page.
fn all_dlq_ids(c: &Client, namespace: &str, target: &Option<String>) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/namespaces/{namespace}/dlq?limit=1000{}", query(target, '&'));
        if let Some(a) = &after {
            path.push_str(&format!("&after={}", encode(a)));
        }
        let page = c.call("GET", &path, None)?;
        for e in page["entries"].as_array().map(Vec::as_slice).unwrap_or_default() {
            if let Some(id) = e["message_id"].as_str() {
                ids.push(id.to_string());
            }
        }
        match page["next_after"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return Ok(ids),
        }
    }
}

pub fn dlq(server: &Server, cmd: DlqCmd) -> anyhow::Result<ExitCode> {
    let c = Client::new(&server.server);
    let out = match cmd {
        DlqCmd::List { namespace, target, limit, after } => {
            let mut path = format!("/v1/namespaces/{namespace}/dlq?limit={limit}{}", query(&target, '&'));
            if let Some(a) = after {
                path.push_str(&format!("&after={}", encode(&a)));
            }
            let v = c.call("GET", &path, None)?;
            if !server.json {
                println!(
                    "{} entries in the dlq of {namespace} (target {})",
                    v["total"],
                    v["target"].as_str().unwrap_or("?")
                );
                for e in v["entries"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let last = e["failures"].as_array().and_then(|f| f.last()).cloned().unwrap_or_default();
                    println!(
                        "  {:<14} key={:<20} attempts={:<3} replays={} last: {} {}",
                        e["message_id"].as_str().unwrap_or("?"),
                        e["key"].as_str().unwrap_or("-"),
                        e["failures"].as_array().map(Vec::len).unwrap_or(0),
                        e["replays"],
                        last["kind"].as_str().unwrap_or(""),
                        last["reason"].as_str().unwrap_or(""),
                    );
                }
                if let Some(n) = v["next_after"].as_str() {
                    println!("more: --after {n}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            v
        }
        DlqCmd::Replay { namespace, target, ids, rate } => {
            // Replays in chunks so a long replay shows progress.
            let ids = if ids.is_empty() { all_dlq_ids(&c, &namespace, &target)? } else { ids };
            let total = ids.len();
            let mut merged = json!({"replayed": [], "skipped": [], "not_found": []});
            for (n, chunk) in ids.chunks(50).enumerate() {
                let mut body = json!({"ids": chunk});
                if let Some(r) = rate {
                    body["rate_per_sec"] = json!(r);
                }
                let path = format!("/v1/namespaces/{namespace}/dlq/replay{}", query(&target, '?'));
                let part = c.call("POST", &path, Some(body))?;
                for k in ["replayed", "skipped", "not_found"] {
                    if let (Some(all), Some(more)) = (merged[k].as_array_mut(), part[k].as_array()) {
                        all.extend(more.iter().cloned());
                    }
                }
                if !server.json {
                    eprintln!("replay: {}/{total}", (n * 50 + chunk.len()).min(total));
                }
            }
            let v = merged;
            if !server.json {
                let n = |k: &str| v[k].as_array().map(Vec::len).unwrap_or(0);
                println!(
                    "replayed {}, skipped {}, not found {}",
                    n("replayed"),
                    n("skipped"),
                    n("not_found")
                );
                for s in v["skipped"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    println!("  skipped {}: {}", s["message_id"], s["reason"]);
                }
                return Ok(ExitCode::SUCCESS);
            }
            v
        }
        DlqCmd::Move { namespace, message_id, target, reason } => {
            let path = format!("/v1/namespaces/{namespace}/dlq/move{}", query(&target, '?'));
            let v = c.call("POST", &path, Some(json!({"message_id": message_id, "reason": reason})))?;
            if !server.json {
                println!("moved {message_id} to the dlq of target {}", v["target"].as_str().unwrap_or("?"));
                return Ok(ExitCode::SUCCESS);
            }
            v
        }
        DlqCmd::Purge { namespace, target, ids } if ids.is_empty() => {
            c.call("DELETE", &format!("/v1/namespaces/{namespace}/dlq{}", query(&target, '?')), None)?
        }
        DlqCmd::Purge { namespace, target, ids } => {
            for (i, id) in ids.iter().enumerate() {
                let path = format!("/v1/namespaces/{namespace}/dlq/{}{}", encode(id), query(&target, '?'));
                c.call("DELETE", &path, None)?;
                if !server.json {
                    eprintln!("deleted {id} ({}/{})", i + 1, ids.len());
                }
            }
            json!({"purged": ids.len()})
        }
    };
    if server.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}
