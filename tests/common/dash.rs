//! A `serve --http` for tests of the dashboard and the HTTP API: started
//! on a random loopback port, with helpers to call it as a browser or an
//! API client would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Bin, exe, wait_until};

/// A serve with its dashboard, stopped when dropped.
pub struct Dash {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub token: String,
    pub bin: Bin,
    _dir: tempfile::TempDir,
}

impl Drop for Dash {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = Bin::terminate(c);
        }
    }
}

pub const FAILING: &str = "[handlers.invalid]\ncommand = [\"sh\", \"-c\", \"echo 'bad input <b>' >&2; exit 65\"]\n[workers]\npoll_interval = \"50ms\"\n";

impl Dash {
    /// A new home with `config`, served with `--http 127.0.0.1:0` and
    /// `args`.
    pub fn start(config: &str, args: &[&str]) -> Dash {
        let (dir, bin) = Bin::init_with(config);
        Dash::serve(dir, bin, args)
    }

    pub fn serve(dir: tempfile::TempDir, bin: Bin, args: &[&str]) -> Dash {
        let mut all = vec!["serve"];
        all.extend(args);
        Dash::launch(dir, bin, &all)
    }

    /// `bundleq web` (no workers) on the home of `bin`.
    pub fn web(dir: tempfile::TempDir, bin: Bin, args: &[&str]) -> Dash {
        let mut all = vec!["web"];
        all.extend(args);
        Dash::launch(dir, bin, &all)
    }

    /// `bundleq web` (no workers) on the home of `bin`, with `env` set.
    pub fn web_with_env(
        dir: tempfile::TempDir,
        bin: Bin,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Dash {
        let mut all = vec!["web"];
        all.extend(args);
        Dash::launch_with_env(dir, bin, &all, env)
    }

    /// Kills the server with SIGKILL (no clean-up of its own) and waits
    /// for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// `bundleq --json COMMAND --http 127.0.0.1:0 ARGS…`.
    fn launch(dir: tempfile::TempDir, bin: Bin, command: &[&str]) -> Dash {
        Dash::launch_with_env(dir, bin, command, &[])
    }

    fn launch_with_env(
        dir: tempfile::TempDir,
        bin: Bin,
        command: &[&str],
        env: &[(&str, &Path)],
    ) -> Dash {
        let mut child = Command::new(exe())
            .arg("--home")
            .arg(&bin.home)
            .arg("--json")
            .arg(command[0])
            .args(["--http", "127.0.0.1:0"])
            .args(&command[1..])
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        let started: Value = serde_json::from_str(&line).unwrap();
        let addr: SocketAddr = started["listening"].as_str().unwrap().parse().unwrap();
        let token = std::fs::read_to_string(bin.home.join("http-token"))
            .unwrap()
            .trim()
            .to_owned();
        assert!(
            started["url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("?token={token}")),
            "{started}"
        );
        Dash {
            child: Some(child),
            addr,
            token,
            bin,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// GET without credentials: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut r = Dash::agent().get(self.url(path)).call().unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// GET of an API path, as JSON (status must be 200).
    pub fn api(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// POST with the token as a bearer: (status, body).
    pub fn post_bearer(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let mut r = Dash::agent()
            .post(self.url(path))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", content_type)
            .send(body)
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// A form POST as the browser sends it: the cookie, and these headers.
    pub fn post_cookie(&self, path: &str, headers: &[(&str, &str)], form: &str) -> (u16, String) {
        let mut req = Dash::agent()
            .post(self.url(path))
            .header("Cookie", &format!("bundleq_token={}", self.token))
            .header("Content-Type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut r = req.send(form.as_bytes()).unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }
}

pub fn first_line(child: &mut Child) -> String {
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    // Keep the pipe open (serve may print more) on a thread of its own.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    String::from_utf8(line).unwrap()
}

/// Sends raw bytes, reads the whole answer: (status, head and body).
pub fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

pub fn bundle(title: &str, job_type: &str, word: &str) -> String {
    let content = format!("Field notes: {word} observed near the terminus.");
    serde_json::json!({
        "bundle_version": 1,
        "run_id": uuid::Uuid::now_v7(),
        "job_type": job_type,
        "title": title,
        "created_at": "2026-11-28T10:00:00Z",
        "sources": [{
            "uri": "https://example.org/notes",
            "title": format!("<img src=x onerror=alert(2)> {word}"),
            "content": content,
            "sha256": bundleq::digest::Sha256Hex::of(content.as_bytes()).as_str(),
        }],
        "findings": [{"text": "<script>alert(3)</script> a finding", "source_refs": [0]}]
    })
    .to_string()
}

pub fn submit(bin: &Bin, dir: &Path, name: &str, text: &str) -> Value {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    let v = bin.json_lines(&["submit", p.to_str().unwrap()]);
    v[0].clone()
}

/// The job of type `invalid` (the step after process_bundle) of the run
/// `submitted` names, once it exists.
pub fn failing_job(dash: &Dash, submitted: &Value) -> String {
    let run = submitted["run_id"].as_str().unwrap();
    let mut id = String::new();
    wait_until("the invalid step failed", || {
        let jobs = dash.api(&format!(
            "/api/v1/jobs?run={run}&type=invalid&status=failed"
        ));
        match jobs.as_array().and_then(|a| a.first()) {
            Some(j) => {
                id = j["id"].as_str().unwrap().to_owned();
                true
            }
            None => false,
        }
    });
    id
}

pub fn wait_for_jobs(dash: &Dash, status: bundleq::JobStatus, n: u64) {
    wait_until(&format!("{n} {status} jobs"), || {
        dash.bin.jobs_with(status) >= n
    });
}
