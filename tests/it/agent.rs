//! Shared helper: runs the real `gpulse` binary on a free loopback port and speaks HTTP/1.0 to it.
//!
//! [`Agent::start`] picks a free port, spawns the binary with `--listen 127.0.0.1:PORT` plus the
//! given arguments and environment, and waits (bounded) until `/readyz` answers 200. The child's
//! stderr goes to a temp file so that every panic can show what the agent logged. The child is
//! killed when the [`Agent`] is dropped. [`http_get`] is a dependency-free blocking GET that any
//! test can use against any local HTTP server.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`Agent::start`] waits for `/readyz` by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times a spawn is retried when another process grabbed the chosen port first.
const PORT_ATTEMPTS: usize = 5;

/// A free TCP port on 127.0.0.1: bind port 0, read the port, release it.
///
/// Another process may take the port before the caller binds it; [`Agent::start`] retries on
/// a "cannot listen" exit, other callers should do the same.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the address of a bound socket: {e}"))
        .port()
}

/// Status, headers and body of one HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names are lower-cased; values are trimmed.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.0 with `Connection: close`; the body is read to EOF.
///
/// Errors are connection or parse errors; any status (including 5xx) is `Ok`.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<HttpResponse> {
    http_get_with(addr, path, &[], timeout)
}

/// [`http_get`] with extra request headers (`("authorization", "Bearer ...")`).
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(get_request(&addr.to_string(), path, headers).as_bytes())?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// The text of an HTTP/1.0 `GET` with `Connection: close` and the given headers.
pub fn get_request(host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Parses a raw HTTP/1.x response read to EOF.
pub fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no end of headers in {} bytes", raw.len())))?;
    let head = std::str::from_utf8(&raw[..split])
        .map_err(|e| invalid(format!("headers are not UTF-8: {e}")))?;
    let body = String::from_utf8(raw[split + 4..].to_vec())
        .map_err(|e| invalid(format!("body is not UTF-8: {e}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// A running `gpulse` child process; killed on drop.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    addr: SocketAddr,
    stderr: tempfile::NamedTempFile,
}

impl Agent {
    /// [`Agent::start`] on the NVML library `lib` (a fake), sampling GPUs every `interval`.
    pub fn on_nvml<E, K, V>(lib: &std::path::Path, interval: &str, env: E) -> Agent
    where
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let args: [&OsStr; 4] = [
            "--nvml-lib".as_ref(),
            lib.as_os_str(),
            "--interval".as_ref(),
            interval.as_ref(),
        ];
        Agent::start(args, env)
    }

    /// Spawns `gpulse <args> --listen 127.0.0.1:PORT` with `env` added (inherited `GPULSE_*`
    /// config variables and systemd's are removed so the caller's environment cannot change the test) and
    /// waits up to [`READY_TIMEOUT`] for `/readyz` to answer 200.
    pub fn start<A, E, K, V>(args: A, env: E) -> Agent
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let env: Vec<(OsString, OsString)> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let mut last_stderr = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut agent = Agent::spawn(&args, &env);
            match agent.wait_ready(READY_TIMEOUT) {
                Ok(()) => return agent,
                // The port was taken between free_port() and the agent's bind: try another.
                Err(stderr) if stderr.contains("cannot listen") => last_stderr = stderr,
                Err(stderr) => panic!(
                    "gpulse {args:?} did not become ready on {} within {READY_TIMEOUT:?}.\n\
                     --- agent stderr ---\n{stderr}",
                    agent.addr
                ),
            }
        }
        panic!(
            "gpulse {args:?} could not bind a free port in {PORT_ATTEMPTS} attempts.\n\
             --- last agent stderr ---\n{last_stderr}"
        );
    }

    /// Spawns the agent on a fresh free port without waiting for it.
    pub fn spawn(args: &[OsString], env: &[(OsString, OsString)]) -> Agent {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stderr = tempfile::NamedTempFile::new()
            .unwrap_or_else(|e| panic!("cannot create a temp file for the agent's stderr: {e}"));
        let stderr_file = stderr
            .reopen()
            .unwrap_or_else(|e| panic!("cannot reopen the agent's stderr file: {e}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_gpulse"));
        command
            .args(args)
            .arg("--listen")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr_file));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GPULSE_") {
                command.env_remove(name);
            }
        }
        // Nor a systemd service manager's (a test run inside a unit): notify socket, watchdog,
        // state directory.
        for name in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "STATE_DIRECTORY",
        ] {
            command.env_remove(name);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", env!("CARGO_BIN_EXE_gpulse")));
        Agent {
            child,
            addr,
            stderr,
        }
    }

    /// Polls `/readyz` until it answers 200. On timeout or an early exit, returns the agent's
    /// stderr (with the reason appended) as the error.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{}\n(agent exited early: {status})", self.stderr()));
            }
            let last = match http_get(self.addr, "/readyz", Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("/readyz answered {}: {}", r.status, r.body.trim()),
                Err(e) => format!("/readyz failed: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(format!("{}\n(last attempt: {last})", self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Address the agent listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// OS process id of the agent.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path` from the agent; panics (with the agent's stderr) on a connection error.
    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.addr, path, Duration::from_secs(10)).unwrap_or_else(|e| {
            panic!(
                "GET {} failed: {e}\n--- agent stderr ---\n{}",
                self.url(path),
                self.stderr()
            )
        })
    }

    /// `GET path`, asserting status 200; returns the body.
    pub fn get_ok(&self, path: &str) -> String {
        let response = self.get(path);
        assert_eq!(
            response.status,
            200,
            "GET {} answered {}: {}\n--- agent stderr ---\n{}",
            self.url(path),
            response.status,
            response.body,
            self.stderr()
        );
        response.body
    }

    /// Sends SIGTERM and waits (at most `limit`) for the agent to exit: how long it took
    /// and its exit status. Panics, killing it, past the limit.
    pub fn terminate(&mut self, limit: Duration) -> (Duration, std::process::ExitStatus) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .unwrap_or_else(|e| panic!("cannot send SIGTERM: {e}"));
        let sent = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (sent.elapsed(), status);
            }
            assert!(
                sent.elapsed() < limit,
                "gpulse did not exit within {limit:?} of SIGTERM\n--- agent stderr ---\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(self.stderr.path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read the agent's stderr: {e})"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `#[ignore]`d test `name` of this test binary as a child process with `var` set to
/// `dir`, kills it with SIGKILL after `after`, and reaps it: the kill -9 loops' writer.
pub fn kill_test_child_after(name: &str, var: &str, dir: &std::path::Path, after: Duration) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env(var, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}
