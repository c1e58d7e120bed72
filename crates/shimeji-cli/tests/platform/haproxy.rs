//! A throwaway HAProxy for a test: the sample configuration
//! `haproxy/haproxy.cfg` run as it is, listening on a free loopback port,
//! its runtime API socket in a temporary directory; killed and its
//! directory removed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long HAProxy may take to answer on its socket after it started.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// The `haproxy` program: on the PATH, else Debian's `/usr/sbin/haproxy`.
/// Fails the test with instructions when it is not installed.
pub fn haproxy_program() -> PathBuf {
    for candidate in ["haproxy", "/usr/sbin/haproxy"] {
        let ran = Command::new(candidate)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if ran.is_ok_and(|s| s.success()) {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "cannot run `haproxy`: install it with `apt-get install haproxy` \
         (or run `bash .ci/run`, which does)"
    );
}

/// A running HAProxy of one test.
pub struct Haproxy {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    config: PathBuf,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The sample configuration the tests run.
pub fn sample_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("haproxy/haproxy.cfg")
}

impl Haproxy {
    /// Starts HAProxy on the sample configuration and waits until its
    /// runtime API answers.
    pub fn start() -> Haproxy {
        Haproxy::start_with(&sample_config())
    }

    /// Starts HAProxy on `config` (which binds `SHIMEJI_HAPROXY_BIND` and
    /// serves its runtime API on `SHIMEJI_HAPROXY_SOCKET`, as the sample
    /// does) and waits until its runtime API answers.
    pub fn start_with(config: &Path) -> Haproxy {
        let dir = std::env::temp_dir().join(format!(
            "shimeji-haproxy-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create HAProxy's directory");
        let mut haproxy = Haproxy {
            child: None,
            dir,
            port: free_port(),
            config: config.to_path_buf(),
        };
        haproxy.launch();
        haproxy
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("haproxy.log"))
            .expect("HAProxy's log file");
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new(haproxy_program())
            .arg("-db")
            .arg("-f")
            .arg(&self.config)
            .env("SHIMEJI_HAPROXY_SOCKET", self.socket())
            .env("SHIMEJI_HAPROXY_BIND", format!("127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("haproxy exited ({status}) at start:\n{}", self.log());
            }
            if self
                .try_command("show info")
                .is_ok_and(|a| a.contains("Name: HAProxy"))
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "haproxy did not answer within {READY_WITHIN:?}:\n{}",
            self.log()
        );
    }

    /// Its runtime API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    fn try_command(&self, command: &str) -> std::io::Result<String> {
        let mut stream = UnixStream::connect(self.socket())?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// Sends `command` over the runtime API; its answer.
    pub fn command(&self, command: &str) -> String {
        self.try_command(command)
            .unwrap_or_else(|e| panic!("HAProxy's runtime API: {e}"))
    }

    /// The servers of `backend`: `(name, srv_admin_state)`.
    pub fn servers(&self, backend: &str) -> Vec<(String, u32)> {
        let answer = self.command(&format!("show servers state {backend}"));
        answer
            .lines()
            .skip(2)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                Some((fields.get(3)?.to_string(), fields.get(6)?.parse().ok()?))
            })
            .collect()
    }

    /// Kills HAProxy and starts it again on the same port and socket (its
    /// servers added at run time are gone).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
