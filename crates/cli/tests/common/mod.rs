//! What the tests of `hearth serve` share: a server process on a free
//! port (killed when dropped, its log echoed into the test's) and reading
//! its `/metrics`.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub url: String,
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
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["serve", "--port", &port.to_string(), "--no-ui"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth serve starts");
    // Echo the server's log into the test's, for a failure's story.
    let log = child.stderr.take().expect("stderr");
    std::thread::spawn(move || BufReader::new(log).lines().map_while(Result::ok).for_each(|l| eprintln!("[serve] {l}")));
    let url = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while ureq::get(&format!("{url}/health")).call().is_err() {
        assert!(t0.elapsed() < Duration::from_mins(1), "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, url }
}

pub fn metric(url: &str, name: &str, model: &str) -> f64 {
    let text = ureq::get(&format!("{url}/metrics")).call().expect("metrics").into_string().expect("text");
    let label = format!("model=\"{model}\"");
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
