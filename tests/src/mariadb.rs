//! A real MariaDB (`mariadbd`, Debian package mariadb-server) on a free
//! loopback port, with its own data dir and socket in a temporary
//! directory, killed by PID on drop. Password authentication is on (no
//! `--skip-grant-tables`): [`MariaDb::start`] creates a database and a user
//! that logs in with `mysql_native_password` over TCP, which is what a
//! plugin does; the harness itself talks to the server as `root` over the
//! Unix socket with the `mariadb` command-line client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The database and the TCP user [`MariaDb::start`] creates.
pub const DATABASE: &str = "revs";
pub const USER: &str = "wharf";
pub const PASSWORD: &str = "wharf-pw";

/// A running (or stopped, between [`MariaDb::stop`] and
/// [`MariaDb::start_again`]) MariaDB server.
#[derive(Debug)]
pub struct MariaDb {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn bin(candidates: &[&str]) -> PathBuf {
    for c in candidates {
        for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
            let p = Path::new(dir).join(c);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{} not found: install the Debian package mariadb-server (scripts/install-deps.sh)",
        candidates[0]
    );
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl MariaDb {
    /// Initialises a data dir, starts the server on a free port, waits
    /// until it answers queries, and creates [`DATABASE`] and [`USER`].
    pub fn start() -> MariaDb {
        let dir = tempfile::tempdir().expect("tempdir");
        // Its own tmpdir: bootstraps running at once collide in /tmp.
        std::fs::create_dir(dir.path().join("tmp")).expect("tmpdir");
        let mut install = Command::new(bin(&["mariadb-install-db", "mysql_install_db"]));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if running_as_root() {
            install.arg("--user=root");
        }
        let out = install.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = MariaDb { port: free_port(), dir, child: None };
        let mut tries = 0;
        while let Err(why) = db.launch() {
            tries += 1;
            assert!(tries < 5, "mariadbd never started: {why}");
            db.port = free_port();
        }
        db.sql_in(
            None,
            &format!(
                "CREATE DATABASE IF NOT EXISTS {DATABASE}; \
                 CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{PASSWORD}'); \
                 GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';"
            ),
        )
        .expect("create the database and user");
        db
    }

    /// `ip:port` for a plugin's config.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Starts `mariadbd` over the data dir on `self.port` and waits until
    /// it answers a query over its socket and listens on the port; `Err`
    /// if it exits first (the port was taken, most likely).
    fn launch(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let mut cmd = Command::new(bin(&["mariadbd", "mysqld"]));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-use-native-aio=0",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let mut child = cmd.spawn().expect("spawn mariadbd");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("mariadbd exited: {status}\n{}", self.log()));
            }
            if self.sql_in(None, "SELECT 1").is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mariadbd did not answer within 120 s\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (committed transactions survive: InnoDB's redo log).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again over the same data dir and port.
    pub fn start_again(&mut self) {
        self.stop();
        if let Err(why) = self.launch() {
            panic!("mariadbd did not start again on port {}: {why}", self.port);
        }
    }

    /// Runs SQL as root over the socket in [`DATABASE`]: the rows of the
    /// last statement, tab-separated fields.
    pub fn sql(&self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        self.client().sql(sql)
    }

    fn sql_in(&self, database: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>, String> {
        self.client().sql_in(database, sql)
    }

    /// A client for another thread (it fails while the server is stopped).
    pub fn client(&self) -> SqlClient {
        SqlClient { socket: self.socket() }
    }
}

/// Runs SQL as root over a [`MariaDb`]'s Unix socket with the `mariadb`
/// command-line client.
#[derive(Debug, Clone)]
pub struct SqlClient {
    socket: PathBuf,
}

impl SqlClient {
    /// Runs SQL in [`DATABASE`]: the rows of the last statement,
    /// tab-separated fields.
    pub fn sql(&self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        self.sql_in(Some(DATABASE), sql)
    }

    fn sql_in(&self, database: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let out = Command::new(bin(&["mariadb", "mysql"]))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "--batch", "--skip-column-names", "--connect-timeout=5", "-e", sql])
            .args(database)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run mariadb: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}
