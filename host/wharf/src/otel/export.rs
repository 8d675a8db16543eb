//! The export of ended spans over OTLP/HTTP (protobuf), with the SDK's
//! batch processor: a bounded queue and one background thread that posts a
//! batch every second (or when 512 are queued) through a blocking ureq
//! client. `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_TRACES_{HEADERS,TIMEOUT}`
//! apply as the OpenTelemetry SDKs document them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, OTEL_BSP_SCHEDULE_DELAY, SdkTracerProvider, SpanData,
    SpanExporter,
};

use crate::clock::now_ms;
use crate::config::Tracing;
use crate::metrics;

/// How often queued spans are posted (unless `OTEL_BSP_SCHEDULE_DELAY`).
const EVERY: Duration = Duration::from_secs(1);
/// One export, at most: a post, and up to 3 retries of a post that got no
/// answer or a 429/502/503/504.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// The flush on shutdown, at most.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed export is logged at most this often.
const LOG_EVERY_MS: u64 = 60_000;
/// A collector's answer is read up to this size.
const MAX_RESPONSE: u64 = 1 << 20;

/// Spans are being exported; [`Export::shutdown`] flushes them.
#[derive(Debug)]
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Posts what is queued (waiting at most 5 s) and stops the exporter.
    /// Blocks: call it off the async runtime.
    pub fn shutdown(self) {
        match self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            Ok(()) => tracing::debug!("spans flushed to the otlp collector"),
            Err(e) => tracing::warn!(error = %e, "spans not flushed to the otlp collector at shutdown"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("server.tracing.otlp_endpoint {url:?}: {reason}")]
pub struct StartError {
    url: String,
    reason: String,
}

/// Starts the export when `server.tracing.otlp_endpoint` is set; from
/// then on, traced messages get spans. Once per process.
pub fn start(cfg: &Tracing) -> Result<Option<Export>, StartError> {
    let Some(url) = cfg.traces_url() else { return Ok(None) };
    let fail = |reason: String| StartError { url: url.clone(), reason };
    let failures = Arc::new(Failures::default());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(POST_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient { agent, failures: failures.clone() })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(POST_TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os(OTEL_BSP_SCHEDULE_DELAY).is_none() {
        batch = batch.with_scheduled_delay(EVERY);
    }
    let processor = BatchSpanProcessor::builder(Counted { inner: exporter, failures })
        .with_batch_config(batch.build())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name(cfg.service_name.clone()).build())
        .build();
    let scope = InstrumentationScope::builder("wharf").with_version(env!("CARGO_PKG_VERSION")).build();
    if super::TRACER.set(provider.tracer_with_scope(scope)).is_err() {
        let _ = provider.shutdown();
        return Err(fail("span export was already started in this process".into()));
    }
    tracing::info!(%url, service_name = %cfg.service_name, "exporting spans over otlp/http");
    Ok(Some(Export { provider }))
}

/// Export failures: counted, and logged at most once a minute.
#[derive(Debug, Default)]
struct Failures {
    last_logged_ms: AtomicU64,
    since_logged: AtomicU64,
    /// The last transport error (the exporter reports only "network error").
    transport: Mutex<Option<String>>,
}

impl Failures {
    fn record(&self, spans: usize, e: &OTelSdkError) {
        metrics::get().otlp_export_failures.inc();
        // Exports are never concurrent (one background thread).
        let failed = self.since_logged.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < LOG_EVERY_MS {
            return;
        }
        self.last_logged_ms.store(now, Ordering::Relaxed);
        self.since_logged.store(0, Ordering::Relaxed);
        let cause = self.transport.lock().ok().and_then(|mut t| t.take()).unwrap_or_default();
        tracing::warn!(
            spans,
            failed_exports = failed,
            error = %e,
            %cause,
            "spans not exported to the otlp collector, dropped; writes and delivery go on (logged at most once a minute)"
        );
    }
}

/// The OTLP exporter, counting its failures.
#[derive(Debug)]
struct Counted {
    inner: opentelemetry_otlp::SpanExporter,
    failures: Arc<Failures>,
}

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.failures.record(spans, e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A blocking HTTP client for the exporter: it runs on the batch
/// processor's own thread, never on the async runtime.
#[derive(Debug)]
struct UreqClient {
    agent: ureq::Agent,
    failures: Arc<Failures>,
}

#[async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut response = match self.agent.run(request.map(|b| b.to_vec())) {
            Ok(r) => r,
            Err(e) => {
                if let Ok(mut t) = self.failures.transport.lock() {
                    *t = Some(e.to_string());
                }
                return Err(Box::new(e));
            }
        };
        let body = response.body_mut().with_config().limit(MAX_RESPONSE).read_to_vec()?;
        let (parts, _) = response.into_parts();
        Ok(Response::from_parts(parts, Bytes::from(body)))
    }
}
