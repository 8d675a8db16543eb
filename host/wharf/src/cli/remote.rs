//! Commands that talk to a running `wharf serve` over its HTTP API:
//! `wharf status`, `wharf reload`, `wharf dlq …` and `wharf plugin
//! register|rollback|remove`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use super::output::{CliError, Progress, outln, while_slow};
use super::table;

#[derive(clap::Args, Debug)]
pub struct Server {
    /// Base URL of the running sidecar's HTTP API (`server.http`); without a
    /// scheme, `http://` is assumed.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7070", env = "WHARF_URL")]
    pub server: String,
    /// Print JSON instead of text; errors too, as {"error": {"code", "message"}} on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum DlqCmd {
    /// List dead-lettered messages of a namespace.
    List {
        /// The namespace.
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this message id (the `next_after` of the last page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Put entries back on their partition (all, or the given ids).
    Replay {
        /// The namespace.
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
        /// The namespace.
        namespace: String,
        /// The id of the message (from the write's acknowledgement).
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
        /// The namespace.
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
        /// Message ids to delete; every entry when none are given.
        ids: Vec<String>,
    },
}

/// The server URL to use: `HOST:PORT` means `http://HOST:PORT`.
fn base_url(server: &str) -> Result<String, CliError> {
    let s = server.trim().trim_end_matches('/');
    let hint = "pass the address of the sidecar's HTTP API (server.http in wharf.toml), e.g. --server http://127.0.0.1:7070";
    match s.split_once("://") {
        _ if s.is_empty() => Err(CliError::new("bad_server_url", "--server is empty").hint(hint)),
        None => Ok(format!("http://{s}")),
        Some((scheme, rest))
            if (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
                && !rest.is_empty() =>
        {
            Ok(s.to_string())
        }
        Some((scheme, _)) => Err(CliError::new(
            "bad_server_url",
            format!("--server {server}: only http:// and https:// are supported, not {scheme}://"),
        )
        .hint(hint)),
    }
}

pub(super) struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub(super) fn new(server: &Server) -> Result<Self, CliError> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(600)))
            .build()
            .into();
        Ok(Self { base: base_url(&server.server)?, agent })
    }

    pub(super) fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.send(method, path, body.map(|b| b.to_string().into_bytes()))
    }

    /// Sends a request (with `WHARF_TOKEN` as bearer token when set).
    fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let token = std::env::var("WHARF_TOKEN").ok();
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
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
        let mut resp = result.map_err(|e| {
            CliError::new("unreachable", format!("cannot reach wharf at {}: {e}", self.base)).hint(
                "is `wharf serve` running? Point --server (or WHARF_URL) at its HTTP address (server.http in wharf.toml)",
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().context("reading the reply")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let code = value["error"]["code"].as_str().unwrap_or("http_error");
            let msg = match (value["error"]["message"].as_str(), value.as_str()) {
                (Some(m), _) => m.to_string(),
                (None, Some(t)) if !t.trim().is_empty() => t.trim().chars().take(200).collect(),
                _ => "no reason given".to_string(),
            };
            let err = CliError::new(code, format!("{msg} ({method} {path}: {status})"));
            let err = match status {
                401 => err.hint(
                    "this server requires a token: set WHARF_TOKEN to one of server.admin_tokens (or of the \
                     namespace's tokens) in its wharf.toml",
                ),
                403 => err.hint(
                    "the server does not accept WHARF_TOKEN here: admin commands (status, reload, plugin) need \
                     one of server.admin_tokens",
                ),
                _ => err,
            };
            return Err(err.into());
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
        #[command(flatten)]
        server: Server,
        /// The namespace.
        #[arg(long)]
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
        /// The plugin: a Wasm component (`.wasm`).
        file: std::path::PathBuf,
    },
    /// Go back to the namespace's previous plugin.
    Rollback {
        #[command(flatten)]
        server: Server,
        /// The namespace.
        #[arg(long)]
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
    },
    /// Remove the namespace's plugin: writes stay durable, delivery pauses.
    Remove {
        #[command(flatten)]
        server: Server,
        /// The namespace.
        #[arg(long)]
        namespace: String,
        /// The target (may be left out when the namespace has one).
        #[arg(long)]
        target: Option<String>,
    },
}

impl PluginAdmin {
    pub fn json(&self) -> bool {
        match self {
            PluginAdmin::Register { server, .. }
            | PluginAdmin::Rollback { server, .. }
            | PluginAdmin::Remove { server, .. } => server.json,
        }
    }
}

/// The server names the copy it validated (`<data_dir>/…/<sha256>.wasm`):
/// say the user's file instead.
fn name_users_file(e: anyhow::Error, bytes: &[u8], file: &std::path::Path) -> anyhow::Error {
    use sha2::Digest as _;
    let copy = format!("{}.wasm", hex::encode(sha2::Sha256::digest(bytes)));
    let Some(cli) = e.downcast_ref::<CliError>() else { return e };
    let words: Vec<String> = cli
        .message
        .split(' ')
        .map(|w| match w.find(&copy) {
            Some(at) => {
                let start = w[..at].rfind(['"', '\'', '`']).map_or(0, |q| q + 1);
                format!("{}{}{}", &w[..start], file.display(), &w[at + copy.len()..])
            }
            None => w.to_string(),
        })
        .collect();
    let mut out = CliError::new(cli.code.clone(), words.join(" "));
    out.hint = cli.hint.clone();
    if !out.message.contains(&file.display().to_string()) {
        out.message = format!("{}: {}", file.display(), out.message);
    }
    out.into()
}

pub fn plugin_admin(cmd: PluginAdmin) -> anyhow::Result<ExitCode> {
    let json = cmd.json();
    let v = match cmd {
        PluginAdmin::Register { server, namespace, target, file } => {
            let c = Client::new(&server)?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let msg = format!("uploading {} ({} bytes) and validating ...", file.display(), bytes.len());
            let path = format!("/v1/admin/namespaces/{namespace}/plugin{}", query(&target, '?'));
            while_slow(!json, &msg, || c.send("PUT", &path, Some(bytes.clone())))
                .map_err(|e| name_users_file(e, &bytes, &file))?
        }
        PluginAdmin::Rollback { server, namespace, target } => Client::new(&server)?.call(
            "POST",
            &format!("/v1/admin/namespaces/{namespace}/plugin/rollback{}", query(&target, '?')),
            None,
        )?,
        PluginAdmin::Remove { server, namespace, target } => Client::new(&server)?.call(
            "DELETE",
            &format!("/v1/admin/namespaces/{namespace}/plugin{}", query(&target, '?')),
            None,
        )?,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else if v["already_current"] == json!(true) {
        outln!(
            "namespace {}: plugin {} already current; nothing changed",
            v["namespace"].as_str().unwrap_or("?"),
            v["digest"].as_str().unwrap_or("")
        )?;
    } else {
        outln!(
            "namespace {}: plugin {} {}",
            v["namespace"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            v["digest"].as_str().unwrap_or("")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `wharf reload`: re-read the config of a running sidecar.
pub fn reload(server: &Server) -> anyhow::Result<ExitCode> {
    let v = Client::new(server)?.call("POST", "/v1/admin/reload", None)?;
    if server.json {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for k in ["added", "removed", "plugin_changed", "errors"] {
            let items: Vec<&str> =
                v[k].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            outln!("{k:<15} {}", if items.is_empty() { "-".to_string() } else { items.join(", ") })?;
        }
    }
    let failed = v["errors"].as_array().is_some_and(|e| !e.is_empty());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub fn status(server: &Server) -> anyhow::Result<ExitCode> {
    let c = Client::new(server)?;
    let s = c.call("GET", "/v1/status", None)?;
    if server.json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "wharf {} at {} (durability: {})\n",
        s["version"].as_str().unwrap_or("?"),
        c.base,
        table::cell(&s["durability"])
    );
    let empty = serde_json::Map::new();
    for (name, ns) in s["namespaces"].as_object().unwrap_or(&empty) {
        let p = &ns["plugin"];
        out.push_str(&format!(
            "\nnamespace {name}: plugin {} {} ({}), dlq {}\n",
            p["state"].as_str().unwrap_or("?"),
            p["wit"].as_str().unwrap_or("?"),
            p["digest"].as_str().map(|d| &d[..d.len().min(19)]).unwrap_or("-"),
            table::cell(&ns["dlq_size"])
        ));
        if let Some(r) = p["reason"].as_str() {
            out.push_str(&format!("  reason: {r}\n"));
        }
        let parts = ns["partitions"].as_array().map(Vec::as_slice).unwrap_or_default();
        if !parts.is_empty() {
            let rows = parts
                .iter()
                .map(|part| {
                    let d = &part["delivery"];
                    let state = match part["halted_reason"].as_str() {
                        Some(r) => format!("HALTED: {r}"),
                        None => "ok".into(),
                    };
                    vec![
                        table::cell(&part["partition"]),
                        table::cell(&part["head_sequence"]),
                        table::cell(&part["durable_sequence"]),
                        table::cell(&part["delivered_watermark"]),
                        table::cell(&part["backlog"]),
                        table::cell(&d["in_flight"]),
                        table::cell(&d["retrying_keys"]),
                        table::cell(&d["breaker"]["state"]),
                        table::cell(&d["batch_limit"]),
                        state,
                    ]
                })
                .collect();
            let header = [
                "PART",
                "HEAD",
                "DURABLE",
                "WATERMARK",
                "BACKLOG",
                "IN FLIGHT",
                "RETRYING KEYS",
                "BREAKER",
                "BATCH",
                "STATE",
            ];
            out.push_str(&table::render("  ", &header, rows, &[0, 1, 2, 3, 4, 5, 6, 8]));
            out.push('\n');
        }
        targets_text(&ns["targets"], &mut out);
    }
    outln!("{}", out.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// One block per target: its plugin, DLQ and lanes.
fn targets_text(targets: &Value, out: &mut String) {
    let empty = serde_json::Map::new();
    for (name, t) in targets.as_object().unwrap_or(&empty) {
        let p = &t["plugin"];
        out.push_str(&format!(
            "  target {name}: plugin {} {}, dlq {}\n",
            p["state"].as_str().unwrap_or("?"),
            p["wit"].as_str().unwrap_or("?"),
            table::cell(&t["dlq_size"])
        ));
        let lanes = t["partitions"].as_array().map(Vec::as_slice).unwrap_or_default();
        if lanes.is_empty() {
            continue;
        }
        let rows = lanes
            .iter()
            .map(|lane| {
                let d = &lane["delivery"];
                vec![
                    table::cell(&lane["partition"]),
                    table::cell(&lane["delivered_watermark"]),
                    table::cell(&lane["backlog"]),
                    table::cell(&lane["lag_ms"]),
                    table::cell(&d["window"]),
                    table::cell(&d["delivered_total"]),
                    table::cell(&d["retrying_keys"]),
                    table::cell(&d["breaker"]["state"]),
                ]
            })
            .collect();
        let header =
            ["LANE", "WATERMARK", "BACKLOG", "LAG MS", "WINDOW", "DELIVERED", "RETRYING KEYS", "BREAKER"];
        out.push_str(&table::render("    ", &header, rows, &[0, 1, 2, 3, 4, 5, 6]));
        out.push('\n');
    }
}

/// `?target=NAME` (or `&target=NAME`), or nothing.
fn query(target: &Option<String>, sep: char) -> String {
    target.as_ref().map(|t| format!("{sep}target={}", encode(t))).unwrap_or_default()
}

/// One URL path segment or query value: Kafka message ids hold `/` and `@`.
pub(super) fn encode(s: &str) -> String {
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
    let c = Client::new(server)?;
    let out = match cmd {
        DlqCmd::List { namespace, target, limit, after } => {
            let mut path = format!("/v1/namespaces/{namespace}/dlq?limit={limit}{}", query(&target, '&'));
            if let Some(a) = after {
                path.push_str(&format!("&after={}", encode(&a)));
            }
            let v = c.call("GET", &path, None)?;
            if !server.json {
                outln!(
                    "{} entries in the dlq of {namespace} (target {})",
                    v["total"],
                    v["target"].as_str().unwrap_or("?")
                )?;
                for e in v["entries"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let last = e["failures"].as_array().and_then(|f| f.last()).cloned().unwrap_or_default();
                    outln!(
                        "  {:<14} key={:<20} attempts={:<3} replays={} last: {} {}",
                        e["message_id"].as_str().unwrap_or("?"),
                        e["key"].as_str().unwrap_or("-"),
                        e["failures"].as_array().map(Vec::len).unwrap_or(0),
                        e["replays"],
                        last["kind"].as_str().unwrap_or(""),
                        last["reason"].as_str().unwrap_or(""),
                    )?;
                }
                if let Some(n) = v["next_after"].as_str() {
                    outln!("more: --after {n}")?;
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
            let mut progress = Progress::new(!server.json);
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
                progress.tick(|| format!("replay: {}/{total}", (n * 50 + chunk.len()).min(total)));
            }
            let v = merged;
            if !server.json {
                let n = |k: &str| v[k].as_array().map(Vec::len).unwrap_or(0);
                outln!("replayed {}, skipped {}, not found {}", n("replayed"), n("skipped"), n("not_found"))?;
                for s in v["skipped"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    outln!("  skipped {}: {}", s["message_id"], s["reason"])?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            v
        }
        DlqCmd::Move { namespace, message_id, target, reason } => {
            let path = format!("/v1/namespaces/{namespace}/dlq/move{}", query(&target, '?'));
            let v = c.call("POST", &path, Some(json!({"message_id": message_id, "reason": reason})))?;
            if !server.json {
                outln!("moved {message_id} to the dlq of target {}", v["target"].as_str().unwrap_or("?"))?;
                return Ok(ExitCode::SUCCESS);
            }
            v
        }
        DlqCmd::Purge { namespace, target, ids } => {
            let purged = if ids.is_empty() {
                let path = format!("/v1/namespaces/{namespace}/dlq{}", query(&target, '?'));
                c.call("DELETE", &path, None)?
            } else {
                let mut progress = Progress::new(!server.json);
                for (i, id) in ids.iter().enumerate() {
                    let path =
                        format!("/v1/namespaces/{namespace}/dlq/{}{}", encode(id), query(&target, '?'));
                    c.call("DELETE", &path, None)?;
                    progress.tick(|| format!("purge: {}/{}", i + 1, ids.len()));
                }
                json!({"purged": ids.len()})
            };
            if !server.json {
                let n = purged["purged"].as_u64().unwrap_or(0);
                let target = purged["target"]
                    .as_str()
                    .map(str::to_string)
                    .or(target)
                    .map(|t| format!(" (target {t})"))
                    .unwrap_or_default();
                outln!(
                    "purged {n} {} from the dlq of {namespace}{target}",
                    if n == 1 { "entry" } else { "entries" }
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            purged
        }
    };
    outln!("{}", serde_json::to_string_pretty(&out)?)?;
    Ok(ExitCode::SUCCESS)
}
