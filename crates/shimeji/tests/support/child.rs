//! A test that runs part of itself in a child process: the test binary
//! starts itself again for that one test, with an environment variable
//! telling the child what to do. The child's services can then be killed,
//! signalled or crash without taking the test with them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// This test binary running one of its tests in a child process, its stdout
/// read a line at a time. The child is killed and reaped when this is
/// dropped, so a failing test leaves none behind.
pub struct TestChild {
    /// The child process.
    pub process: Child,
    /// What the child prints on stdout, a line at a time.
    pub lines: mpsc::Receiver<String>,
}

/// Starts this test binary again running only test `test`
/// (`--exact --nocapture --test-threads=1`), with the variables `env` set.
pub fn spawn_test(test: &str, env: &[(&str, &str)]) -> TestChild {
    let mut process = Command::new(std::env::current_exe().expect("this test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = process.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    TestChild { process, lines }
}

impl TestChild {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Waits up to `within` for a line that `done` accepts, and returns the
    /// lines before it. Fails the test, saying it waited for `what`, when
    /// the time is up or the child exits first.
    pub fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if done(&line) => return before,
                Ok(line) => before.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the child did not print {what} within {within:?}: {before:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.process.wait();
                    panic!("the child exited ({status:?}) before it printed {what}: {before:?}")
                }
            }
        }
    }

    /// The lines the child prints until none comes for `gap`, or its stdout
    /// closes (it exited).
    pub fn lines_until_quiet(&self, gap: Duration) -> Vec<String> {
        std::iter::from_fn(|| self.lines.recv_timeout(gap).ok()).collect()
    }

    /// Sends `signal` (`TERM`, `INT`, …) to the child with kill(1); whether
    /// kill succeeded.
    pub fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.id().to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for TestChild {
    fn drop(&mut self) {
        // Both do nothing once the child has been reaped.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
