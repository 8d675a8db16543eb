//! Snapshots for replication: bootstrap and rebuild of a replica partition
//! (docs/replication.md, "Snapshots").
//!
//! - On the primary, [`page`] serves a partition's retained history: each
//!   record with its CRC-32C and its chained digests, from the digest at the
//!   page's start.
//! - On the replica, [`rebuild`] discards a replica partition and installs
//!   the primary's retained history in its place. It fetches it page by
//!   page and verifies every record before it is staged: contiguous
//!   sequences from the snapshot's base, the CRC-32C, the digest chain from
//!   the base digest, a decodable record. It then fsyncs the staged log and
//!   marks it ready, and switches it in while the namespace is reopened
//!   (`storage::snapshot_stage`). An invalid page rejects the snapshot whole:
//!   the stage is removed and the replica is unchanged (seed 003, row 7.1).
//!   A crash before the switch leaves the partition as it was (row 4.3).
//!   The log that follows the snapshot is checked against its end digest
//!   like any batch, so a boundary that does not meet it halts (row 7.2).

use std::sync::Arc;
use std::time::Duration;

use crate::engine::namespace::Namespace;
use crate::error::{Error, ErrorKind};
use crate::services::node::Node;
use crate::services::replication::{RecordJson, ShippedRecord};
use crate::storage::chain;
use crate::storage::envelope::Envelope;
use crate::storage::snapshot_stage::{self, Bounds, Paths};

/// Records per page, at most.
pub const MAX_PAGE_RECORDS: usize = 4096;
const MAX_PAGE_BYTES: usize = 8 << 20;

/// One page of a partition's retained history.
#[derive(Debug, Clone)]
pub struct Page {
    pub partition: u32,
    /// The oldest record the primary still holds.
    pub first_seq: u64,
    /// Every record below is durable on the primary.
    pub end: u64,
    /// Where this page starts, and the chained digest of everything below.
    pub from: u64,
    pub from_digest: u64,
    pub records: Vec<ShippedRecord>,
}

fn no_chain(ns: &Namespace) -> Error {
    Error::new(
        ErrorKind::Conflict,
        "no_chain",
        format!(
            "namespace {} keeps no chained digest (it has no target with ordering = \"partition\" and is not a replica): it cannot serve a snapshot",
            ns.name
        ),
    )
}

/// A page of partition `p`'s retained history from `from` (default: the
/// oldest record retained).
pub fn page(ns: &Namespace, p: u32, from: Option<u64>, max_records: usize) -> Result<Page, Error> {
    let part = ns.partitions.get(p as usize).ok_or_else(|| {
        Error::new(ErrorKind::NotFound, "partition_not_found", format!("{} has no partition {p}", ns.name))
    })?;
    let log = part.log.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::Unavailable,
            "partition_halted",
            format!("partition {p} of {} is not open", ns.name),
        )
    })?;
    if part.chain.is_none() {
        return Err(no_chain(ns));
    }
    let max = max_records.clamp(1, MAX_PAGE_RECORDS);
    let digests = part
        .with_chain_mut(|c| -> Result<_, Error> {
            c.catch_up(p, &log).map_err(|e| Error::internal(e.to_string()))?;
            let oldest = c.base_seq().max(log.first_seq());
            let from = from.unwrap_or(oldest);
            if from < oldest || from > c.end() {
                return Err(Error::new(
                    ErrorKind::Gone,
                    "not_retained",
                    format!(
                        "partition {p} of {} holds records {oldest}..{}; {from} is outside",
                        ns.name,
                        c.end()
                    ),
                ));
            }
            let records = log.read(from, max, MAX_PAGE_BYTES).map_err(|e| Error::internal(e.to_string()))?;
            let shipped = records
                .into_iter()
                .filter(|r| r.seq < c.end())
                .map(|r| ShippedRecord {
                    seq: r.seq,
                    checksum: crc32c::crc32c(&r.payload),
                    prev_digest: chain::to_hex(c.at(r.seq).unwrap_or_default()),
                    digest: chain::to_hex(c.at(r.seq + 1).unwrap_or_default()),
                    bytes: r.payload,
                })
                .collect();
            Ok((oldest, c.end(), from, c.at(from).unwrap_or_default(), shipped))
        })
        .map_err(|_| no_chain(ns))??;
    let (first_seq, end, from, from_digest, records) = digests;
    Ok(Page { partition: p, first_seq, end, from, from_digest, records })
}

/// Where the replica fetches the snapshot from.
#[derive(Debug, Clone)]
pub struct Primary {
    /// Base URL of the primary Wharf.
    pub url: String,
    /// Its namespace (default: the replica's).
    pub namespace: Option<String>,
    pub token: Option<String>,
}

/// What a rebuild installed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebuilt {
    pub partition: u32,
    pub base_seq: u64,
    pub base_digest: String,
    pub end: u64,
    pub end_digest: String,
    pub records: u64,
}

fn invalid(message: String) -> Error {
    Error::new(
        ErrorKind::Unprocessable,
        "invalid_snapshot",
        format!("{message}; the snapshot was rejected, the replica is unchanged"),
    )
}

/// Discards replica partition `p` of `ns_name` and installs the primary's
/// retained history in its place (see the module doc).
pub async fn rebuild(node: &Arc<Node>, ns_name: &str, p: u32, primary: Primary) -> Result<Rebuilt, Error> {
    let _control = node.control.lock().await;
    let ns = node.namespace(ns_name).ok_or_else(|| {
        Error::new(ErrorKind::NotFound, "namespace_not_found", format!("no namespace {ns_name}"))
    })?;
    if ns.cfg.mode != crate::config::NamespaceMode::Replica {
        return Err(Error::new(
            ErrorKind::Conflict,
            "not_a_replica",
            format!("namespace {ns_name} is not a replica (mode = \"replica\"): there is nothing to rebuild"),
        ));
    }
    if p as usize >= ns.partitions.len() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "partition_not_found",
            format!("{ns_name} has no partition {p}"),
        ));
    }
    let paths = Paths::new(&node.data_dir.join(ns_name), p);
    let opts = node.log_options();
    let (stage_paths, name) = (paths.clone(), ns_name.to_string());
    let bounds = tokio::task::spawn_blocking(move || stage(&stage_paths, &name, p, &primary, opts))
        .await
        .map_err(|e| Error::internal(format!("snapshot staging panicked: {e}")))?
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&paths.stage);
        })?;
    tracing::warn!(namespace = %ns_name, partition = p, base = bounds.base_seq, end = bounds.end_seq, "snapshot staged and verified; switching it in");
    switch_in(node, ns, &paths).await?;
    Ok(Rebuilt {
        partition: p,
        base_seq: bounds.base_seq,
        base_digest: chain::to_hex(bounds.base_digest),
        end: bounds.end_seq,
        end_digest: chain::to_hex(bounds.end_digest),
        records: bounds.end_seq - bounds.base_seq,
    })
}

/// Fetches, verifies and stages the primary's retained history of `p`.
fn stage(
    paths: &Paths,
    ns: &str,
    p: u32,
    primary: &Primary,
    opts: wharf_log::LogOptions,
) -> Result<Bounds, Error> {
    let fetch = Fetcher::new(primary, ns, p);
    let first = fetch.page(None)?;
    snapshot_stage::begin(paths, first.from).map_err(|e| Error::internal(e.to_string()))?;
    let (log, _) = wharf_log::Partition::open(&paths.stage_log(), opts)
        .map_err(|e| Error::internal(format!("opening the snapshot stage: {e}")))?;
    if log.next_seq() != first.from {
        return Err(Error::internal(format!("the stage starts at {}, not {}", log.next_seq(), first.from)));
    }
    log.advance_watermark(first.from).map_err(|e| Error::internal(e.to_string()))?;
    let (base_seq, base_digest) = (first.from, first.from_digest);
    let (target_end, mut next, mut digest) = (first.end, first.from, first.from_digest);
    let mut page = first;
    loop {
        if page.from != next || page.from_digest != digest {
            return Err(invalid(format!(
                "page at {} does not start where the last one ended ({next})",
                page.from
            )));
        }
        let fresh: Vec<&ShippedRecord> = page.records.iter().filter(|r| r.seq < target_end).collect();
        for r in &fresh {
            verify(r, next, digest)?;
            digest = chain::from_hex(&r.digest).unwrap_or_default();
            next += 1;
        }
        if !fresh.is_empty() {
            let bytes: Vec<&[u8]> = fresh.iter().map(|r| r.bytes.as_slice()).collect();
            let appended = log.append(&bytes).map_err(|e| Error::internal(format!("staging: {e}")))?;
            if appended.first_seq != page.from {
                return Err(Error::internal(format!(
                    "the stage put {} at {}",
                    page.from, appended.first_seq
                )));
            }
            crate::storage::fault_point("snapshot.staging");
        }
        if next >= target_end {
            break;
        }
        if fresh.is_empty() {
            return Err(invalid(format!(
                "the primary sent no records from {next} on, below its end {target_end}"
            )));
        }
        page = fetch.page(Some(next))?;
    }
    log.flush().map_err(|e| Error::internal(format!("staging: {e}")))?;
    drop(log);
    let bounds = Bounds { base_seq, base_digest, end_seq: next, end_digest: digest };
    snapshot_stage::mark_ready(paths, bounds).map_err(|e| Error::internal(e.to_string()))?;
    Ok(bounds)
}

/// Checks one record of a snapshot: its place, its bytes, its digests.
fn verify(r: &ShippedRecord, expected: u64, prev: u64) -> Result<(), Error> {
    let seq = r.seq;
    if seq != expected {
        return Err(invalid(format!("record {seq} where {expected} was expected")));
    }
    let crc = crc32c::crc32c(&r.bytes);
    if crc != r.checksum {
        return Err(invalid(format!(
            "record {seq}: CRC-32C of the received bytes is {crc:08x}, the primary's is {:08x}",
            r.checksum
        )));
    }
    if chain::from_hex(&r.prev_digest) != Some(prev) {
        return Err(invalid(format!("record {seq} does not chain onto the record before it")));
    }
    if chain::from_hex(&r.digest) != Some(chain::link(prev, seq, &r.bytes)) {
        return Err(invalid(format!("record {seq}: its digest does not cover its bytes")));
    }
    Envelope::decode(&r.bytes).map_err(|e| invalid(format!("record {seq} is not a wharf record: {e}")))?;
    Ok(())
}

/// Reads snapshot pages from the primary (blocking).
struct Fetcher {
    agent: ureq::Agent,
    url: String,
    auth: Option<String>,
}

impl Fetcher {
    fn new(primary: &Primary, ns: &str, p: u32) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let ns = primary.namespace.as_deref().unwrap_or(ns);
        let base = primary.url.trim_end_matches('/');
        Self {
            agent,
            url: format!("{base}/v1/namespaces/{ns}/replication/partitions/{p}/snapshot"),
            auth: primary.token.as_ref().map(|t| format!("Bearer {t}")),
        }
    }

    fn page(&self, from: Option<u64>) -> Result<Page, Error> {
        let url = match from {
            Some(f) => format!("{}?from={f}&max_records={MAX_PAGE_RECORDS}", self.url),
            None => format!("{}?max_records={MAX_PAGE_RECORDS}", self.url),
        };
        let unreachable = |e: String| {
            Error::new(
                ErrorKind::Unavailable,
                "primary_unreachable",
                format!("fetching a snapshot page ({url}): {e}"),
            )
        };
        let mut req = self.agent.get(&url);
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let mut resp = req.call().map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| unreachable(e.to_string()))?;
        if status != 200 {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "primary_refused",
                format!(
                    "the primary answered {status} to {url}: {}",
                    text.chars().take(300).collect::<String>()
                ),
            ));
        }
        decode_page(&text).map_err(|e| invalid(format!("page from {url}: {e}")))
    }
}

/// A page as JSON (the shape `adapters::replication` serves).
fn decode_page(text: &str) -> Result<Page, String> {
    let v: PageJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let from_digest = chain::from_hex(&v.from_digest).ok_or("from_digest is not 16 hex digits")?;
    let records = v.records.into_iter().map(ShippedRecord::try_from).collect::<Result<_, _>>()?;
    Ok(Page {
        partition: v.partition,
        first_seq: v.first_seq,
        end: v.end,
        from: v.from,
        from_digest,
        records,
    })
}

/// A page on the wire: digests in hex, record bytes in base64.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PageJson {
    partition: u32,
    first_seq: u64,
    end: u64,
    from: u64,
    from_digest: String,
    records: Vec<RecordJson>,
}

impl From<&Page> for PageJson {
    fn from(p: &Page) -> Self {
        PageJson {
            partition: p.partition,
            first_seq: p.first_seq,
            end: p.end,
            from: p.from,
            from_digest: chain::to_hex(p.from_digest),
            records: p.records.iter().map(RecordJson::from).collect(),
        }
    }
}

/// Takes the namespace out of service, switches the stage in, and opens
/// the namespace again.
async fn switch_in(node: &Arc<Node>, ns: Arc<Namespace>, paths: &Paths) -> Result<(), Error> {
    let name = ns.name.clone();
    let cfg = ns.cfg.clone();
    let target_dirs: Vec<std::path::PathBuf> = ns.targets.iter().map(|t| t.dir.clone()).collect();
    node.remove(&name);
    wait_released(ns).await?;
    let switch_paths = paths.clone();
    tokio::task::spawn_blocking(move || snapshot_stage::switch(&switch_paths, &target_dirs))
        .await
        .map_err(|e| Error::internal(format!("snapshot switch panicked: {e}")))?
        .map_err(|e| {
            Error::internal(format!("switching the snapshot in: {e}; restart wharf to finish it"))
        })?;
    let reopened = node
        .open_namespace(&cfg)
        .map_err(|e| Error::internal(format!("reopening {name} after the snapshot: {e:#}")))?;
    node.insert(reopened.clone());
    crate::services::control::activate(node, &reopened).await;
    node.start_delivery(&reopened);
    Ok(())
}

/// Waits until nothing but `ns` holds the namespace any more (its lanes and
/// loops saw it removed), so that its logs are closed.
async fn wait_released(ns: Arc<Namespace>) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while Arc::strong_count(&ns) > 1 {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "namespace_busy",
                format!(
                    "namespace {} is still in use two minutes after it was taken out of service; the staged snapshot is kept until a restart discards it: restart wharf and rebuild again",
                    ns.name
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
