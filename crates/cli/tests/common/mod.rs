//! What the tests of `hearth serve` share: a server process on a free
//! port (killed when dropped, its log echoed into the test's) and reading
//! its `/metrics`.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub fn start(args: &[String]) -> Server {
    start_with_env(args, &[])
}

/// [`start`] with environment variables set for the server.
pub fn start_with_env(args: &[String], env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["serve", "--port", &port.to_string(), "--no-ui"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth serve starts");
    // Echo the server's log into the test's, for a failure's story, and keep it.
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let kept = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[serve] {line}");
            if let Ok(mut k) = kept.lock() {
                k.push_str(&line);
                k.push('\n');
            }
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while ureq::get(&format!("{url}/health")).call().is_err() {
        assert!(t0.elapsed() < Duration::from_mins(1), "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, url, log }
}

pub fn metric(url: &str, name: &str, model: &str) -> f64 {
    let text = ureq::get(&format!("{url}/metrics")).call().expect("metrics").into_string().expect("text");
    let label = format!("model=\"{model}\"");
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
