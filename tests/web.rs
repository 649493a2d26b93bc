//! The dashboard and HTTP API against a real `serve --http` on a random
//! loopback port: every page and endpoint, the API's answers next to the
//! CLI's `--json`, uploads of every kind and their status codes, and every
//! refusal of the gate (no token, wrong token, bad Host, cross-site
//! posts, read-only, oversize, slow and too many clients).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::dash::{Dash, FAILING, bundle, failing_job, first_line, raw, submit, wait_for_jobs};
use common::{Bin, exe, wait_until};
use serde_json::Value;

/// Each API path answers what `bundleq --json` with those arguments prints.
fn assert_api_is_cli(dash: &Dash, pairs: &[(String, Vec<&str>)]) {
    for (api, cli) in pairs {
        let mut args = vec!["--json"];
        args.extend(cli);
        let out = dash.bin.run(&args);
        assert!(out.status.success(), "{args:?}");
        let from_cli: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(dash.api(api), from_cli, "{api}");
    }
}

#[test]
fn every_page_answers_and_bundle_text_is_escaped_everywhere() {
    let dash = Dash::start(FAILING, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let evil = "<script>alert(1)</script> survey";
    let ok = submit(
        &dash.bin,
        tmp.path(),
        "ok.json",
        &bundle(evil, "process_bundle", "moraine"),
    );
    let bad = submit(
        &dash.bin,
        tmp.path(),
        "bad.json",
        &bundle("fails", "invalid", "serac"),
    );
    // A rejected drop, for the inbox page.
    std::fs::write(dash.bin.home.join("inbox/<b>broken<b>.json"), "{ not json").unwrap();
    wait_for_jobs(&dash, bundleq::JobStatus::Succeeded, 1);
    wait_for_jobs(&dash, bundleq::JobStatus::Failed, 1);
    wait_until("the drop rejected", || {
        dash.get("/inbox").1.contains("rejected</span>")
    });
    let run = ok["run_id"].as_str().unwrap();
    let job = &failing_job(&dash, &bad);
    let pages = [
        "/".to_owned(),
        "/jobs".to_owned(),
        "/jobs?status=failed&type=invalid".to_owned(),
        "/jobs?q=exited+with+65".to_owned(),
        format!("/jobs/{job}"),
        format!("/jobs/{}", &job[..13]),
        "/runs".to_owned(),
        format!("/runs/{run}"),
        format!("/runs/{}", &run[..13]),
        "/search?q=moraine".to_owned(),
        "/search".to_owned(),
        "/inbox".to_owned(),
    ];
    for page in &pages {
        let (status, body) = dash.get(page);
        assert_eq!(status, 200, "{page}: {body}");
        assert!(body.starts_with("<!DOCTYPE html>"), "{page}");
        for raw_tag in ["<script>alert", "<img src=x", "<b>broken"] {
            assert!(!body.contains(raw_tag), "{page} holds {raw_tag} unescaped");
        }
    }
    let (_, run_page) = dash.get(&format!("/runs/{run}"));
    assert!(run_page.contains("&lt;script&gt;alert(1)&lt;/script&gt; survey"));
    assert!(run_page.contains("&lt;script&gt;alert(3)&lt;/script&gt; a finding"));
    let (_, job_page) = dash.get(&format!("/jobs/{job}"));
    // Handler output is text a bundle can steer: escaped too.
    assert!(job_page.contains("bad input &lt;b&gt;"), "{job_page}");
    let (_, search) = dash.get("/search?q=moraine");
    assert!(search.contains("<mark>moraine</mark>"), "{search}");
    let (_, inbox) = dash.get("/inbox");
    assert!(inbox.contains("&lt;b&gt;broken&lt;b&gt;.json"), "{inbox}");
    let (_, jobs) = dash.get("/jobs?q=exited+with+65");
    assert!(jobs.contains(&job[..13]), "{jobs}");
    assert!(
        !jobs.contains(&ok["job_id"].as_str().unwrap()[..13]),
        "{jobs}"
    );
    for (path, kind) in [
        ("/static/app.css", "text/css"),
        ("/static/app.js", "text/javascript"),
    ] {
        let r = Dash::agent().get(dash.url(path)).call().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    let (status, _) = dash.get("/no/such/page");
    assert_eq!(status, 404);
    let (status, _) = dash.get("/jobs/ffffffff");
    assert_eq!(status, 404);
    // Every answer carries the strict policy.
    let r = Dash::agent().get(dash.url("/")).call().unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
}

#[test]
fn the_api_answers_with_the_cli_json() {
    let dash = Dash::start(FAILING, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let ok = submit(
        &dash.bin,
        tmp.path(),
        "ok.json",
        &bundle("one", "process_bundle", "glacier"),
    );
    submit(
        &dash.bin,
        tmp.path(),
        "bad.json",
        &bundle("two", "invalid", "glacier"),
    );
    wait_for_jobs(&dash, bundleq::JobStatus::Failed, 1);
    wait_for_jobs(&dash, bundleq::JobStatus::Succeeded, 1);
    let run = ok["run_id"].as_str().unwrap();
    let job = ok["job_id"].as_str().unwrap();
    assert_api_is_cli(
        &dash,
        &[
            ("/api/v1/jobs".to_owned(), vec!["jobs"]),
            (
                "/api/v1/jobs?status=failed".to_owned(),
                vec!["jobs", "--status", "failed"],
            ),
            (format!("/api/v1/jobs/{job}"), vec!["job", "show", job]),
            ("/api/v1/runs".to_owned(), vec!["runs"]),
            (format!("/api/v1/runs/{run}"), vec!["run", "show", run]),
            (
                "/api/v1/search?q=glacier".to_owned(),
                vec!["search", "glacier"],
            ),
        ],
    );
    // Status moves (heartbeats): the same keys.
    let out = dash.bin.run(&["--json", "status"]);
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let api = dash.api("/api/v1/status");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&api), keys(&cli));
    assert_eq!(api["counts"], cli["counts"]);
    // Paging: the next page starts after the last job of the one before.
    let first = dash.api("/api/v1/jobs?limit=1");
    let last = first[0]["id"].as_str().unwrap();
    let next = dash.api(&format!("/api/v1/jobs?limit=1&before={last}"));
    assert_eq!(next.as_array().unwrap().len(), 1);
    assert_ne!(next[0]["id"], first[0]["id"]);
    let runs = dash.api("/api/v1/runs?limit=1");
    let older = dash.api(&format!(
        "/api/v1/runs?before={}",
        runs[0]["id"].as_str().unwrap()
    ));
    assert_eq!(older.as_array().unwrap().len(), 1);
    // Errors are JSON with a status that says what went wrong.
    for (path, status) in [
        ("/api/v1/jobs/ffffffff-0000", 404),
        ("/api/v1/jobs?status=sleeping", 400),
        ("/api/v1/jobs?limit=0", 400),
        ("/api/v1/search", 400),
        ("/api/v1/nothing", 404),
    ] {
        let (got, body) = dash.get(path);
        assert_eq!(got, status, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
}

#[test]
fn bundles_are_accepted_over_http_with_the_right_status() {
    let dash = Dash::start(
        "[workers]\npoll_interval = \"50ms\"\n[limits]\nmax_bundle_bytes = 4096\nmax_sources = 2\n",
        &["--workers", "1"],
    );
    let text = bundle("over http", "process_bundle", "calving");
    let (status, body) = dash.post_bearer("/api/v1/bundles", "application/json", text.as_bytes());
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["verdict"], "accepted");
    let run = created["run_id"].as_str().unwrap();
    assert!(created["job_id"].is_string());
    // The same bytes again: the run they were accepted as.
    let (status, body) = dash.post_bearer("/api/v1/bundles", "application/json", text.as_bytes());
    assert_eq!(status, 200, "{body}");
    let again: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (again["verdict"].as_str(), again["run_id"].as_str()),
        (Some("duplicate"), Some(run))
    );
    // Recorded as the CLI would: origin api, visible in runs.
    let shown = dash.bin.json(&["run", "show", run]);
    assert_eq!(shown["run"]["origin"], "api");
    // Every validation error, with its path.
    for name in [
        "content-hash-mismatch",
        "bundle-version-missing",
        "created-at-not-rfc3339",
    ] {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles/invalid");
        let bytes = std::fs::read(fixtures.join(format!("{name}.json"))).unwrap();
        let expect: Value = serde_json::from_slice(
            &std::fs::read(fixtures.join(format!("{name}.expect.json"))).unwrap(),
        )
        .unwrap();
        let (status, body) = dash.post_bearer("/api/v1/bundles", "application/json", &bytes);
        assert_eq!(status, 422, "{name}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let paths: Vec<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
                e["path"].as_str().unwrap()
            })
            .collect();
        let want: Vec<&str> = expect["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(paths, want, "{name}");
    }
    // Past the size limit: 413, declared or not, and nothing recorded.
    let runs_before = dash.bin.runs_total();
    let big = vec![b' '; 8192];
    let (status, _) = dash.post_bearer("/api/v1/bundles", "application/json", &big);
    assert_eq!(status, 413);
    assert_eq!(dash.bin.runs_total(), runs_before);
    // A NAME.bundle/ folder as a tar.
    let tmp = tempfile::tempdir().unwrap();
    let folder = common::text_file_bundle(tmp.path(), "survey", "ice ice ice");
    let tar_path = tmp.path().join("survey.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(tmp.path())
        .args([
            "-cf",
            tar_path.to_str().unwrap(),
            folder.file_name().unwrap().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let tar = std::fs::read(&tar_path).unwrap();
    let (status, body) = dash.post_bearer("/api/v1/bundles", "application/x-tar", &tar);
    assert_eq!(status, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "survey.bundle");
    // A tar whose entry leaves the bundle, or is a link: refused.
    for hostile in [
        tar_with("../escape.txt", b"x", tar::EntryType::Regular),
        tar_with("survey.bundle/link", b"", tar::EntryType::Symlink),
    ] {
        let (status, body) = dash.post_bearer("/api/v1/bundles", "application/x-tar", &hostile);
        assert_eq!(status, 400, "{body}");
    }
    // A tar of more entries than a bundle of at most 2 sources could need
    // (2 x 2 + 64): refused before they are unpacked.
    let mut many = tar::Builder::new(Vec::new());
    for i in 0..100 {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        many.append_data(&mut h, format!("many.bundle/f{i}.txt"), &b"x"[..])
            .unwrap();
    }
    let many = many.into_inner().unwrap();
    let (status, body) = dash.post_bearer("/api/v1/bundles", "application/x-tar", &many);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than 68 entries"), "{body}");
    // The form's multipart upload.
    let form_text = bundle("from the form", "process_bundle", "fjord");
    let boundary = "----bundleqTestBoundary7MA4YWxk";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"form.json\"\r\nContent-Type: application/json\r\n\r\n{form_text}\r\n--{boundary}--\r\n"
    );
    let (status, answer) = dash.post_bearer(
        "/api/v1/bundles",
        &format!("multipart/form-data; boundary={boundary}"),
        body.as_bytes(),
    );
    assert_eq!(status, 201, "{answer}");
    // Neither a JSON nor a tar nor a form.
    let (status, _) = dash.post_bearer("/api/v1/bundles", "image/png", b"\x89PNG");
    assert_eq!(status, 415);
}

/// The `stage-*` folders under the home's `objects/tmp/`.
fn staging_folders(home: &Path) -> Vec<String> {
    match std::fs::read_dir(home.join("objects/tmp")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("stage-"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn an_upload_is_staged_in_the_home_and_one_cut_off_by_a_kill_goes_at_the_next_prune() {
    let (dir, bin) = Bin::init_with("");
    // The server's own temp folder, which an upload must not use: it may be
    // a small RAM disk, and nothing would ever clear it after a kill.
    let tmp = tempfile::tempdir().unwrap();
    let mut dash = Dash::web_with_env(dir, bin, &[], &[("TMPDIR", tmp.path())]);
    assert!(staging_folders(&dash.bin.home).is_empty());
    // A tar upload that stops after its first entry's header and a little
    // of its bytes: the server is reading it into its staging folder.
    let mut header = tar::Header::new_gnu();
    header.set_path("survey.bundle/notes.txt").unwrap();
    header.set_size(100_000);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut stream = TcpStream::connect(dash.addr).unwrap();
    write!(
        stream,
        "POST /api/v1/bundles HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-tar\r\nContent-Length: 1048576\r\n\r\n",
        dash.addr, dash.token
    )
    .unwrap();
    stream.write_all(header.as_bytes()).unwrap();
    stream.write_all(&[b'x'; 4096]).unwrap();
    stream.flush().unwrap();
    wait_until("the upload's staging folder in the home", || {
        staging_folders(&dash.bin.home).len() == 1
    });
    let in_tmp: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(in_tmp.is_empty(), "the upload used $TMPDIR: {in_tmp:?}");
    // Killed mid-upload: its folder stays, unlocked, and the next prune
    // removes it (nothing was recorded).
    dash.kill();
    drop(stream);
    assert_eq!(staging_folders(&dash.bin.home).len(), 1);
    let out = dash.bin.ok(&["prune"]);
    assert!(out.contains("removed 1 staging folder(s)"), "{out}");
    assert!(staging_folders(&dash.bin.home).is_empty());
    assert_eq!(dash.bin.runs_total(), 0);
}

fn tar_with(path: &str, bytes: &[u8], kind: tar::EntryType) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    // Written into the header raw: the builder refuses `..` itself.
    let name = path.as_bytes();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(bytes.len() as u64);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    if kind == tar::EntryType::Symlink {
        header.set_link_name("/etc/passwd").unwrap();
    }
    header.set_cksum();
    let mut out = Vec::new();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn the_gate_refuses_what_it_must() {
    let dash = Dash::start(FAILING, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let bad = submit(
        &dash.bin,
        tmp.path(),
        "bad.json",
        &bundle("fails", "invalid", "x"),
    );
    let job = &failing_job(&dash, &bad);
    let retry = format!("/api/v1/jobs/{job}/retry");
    // No token, a wrong token: 401, nothing changed.
    let (status, _) = Dash::agent()
        .post(dash.url(&retry))
        .send_empty()
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401);
    let r = Dash::agent()
        .post(dash.url(&retry))
        .header("Authorization", "Bearer 0123456789abcdef0123456789abcdef")
        .send_empty()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = Dash::agent()
        .post(dash.url("/api/v1/bundles"))
        .send(bundle("no token", "process_bundle", "x").as_bytes())
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(dash.bin.jobs_with(bundleq::JobStatus::Failed), 1);
    // A Host this server does not answer to (DNS rebinding): refused,
    // reads too.
    for host in ["evil.example", "evil.example:80", "127.0.0.1.evil.example"] {
        let (status, text) = raw(
            dash.addr,
            format!("GET /api/v1/status HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 403, "{host}: {text}");
    }
    let (status, _) = raw(dash.addr, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, 403, "no Host at all");
    let (status, _) = raw(
        dash.addr,
        format!(
            "GET / HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            dash.addr.port()
        )
        .as_bytes(),
    );
    assert_eq!(status, 200);
    // The browser's cookie from another site: refused however it says so.
    let form_path = format!("/jobs/{job}/retry");
    for headers in [
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Origin", "http://evil.example")],
        vec![],
    ] {
        let (status, body) = dash.post_cookie(&form_path, &headers, "");
        assert_eq!(status, 403, "{headers:?}: {body}");
    }
    assert_eq!(dash.bin.jobs_with(bundleq::JobStatus::Failed), 1);
    // Even with a bearer, a browser saying cross-site is refused.
    let r = Dash::agent()
        .post(dash.url(&retry))
        .header("Authorization", &format!("Bearer {}", dash.token))
        .header("Sec-Fetch-Site", "cross-site")
        .send_empty()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // From this origin it works: 303 back to the job, queued again.
    let origin = format!("http://{}", dash.addr);
    let (status, _) = dash.post_cookie(&form_path, &[("Origin", origin.as_str())], "");
    assert_eq!(status, 303);
    // (The serve may have run it again already: the user's retry is in
    // its history either way.)
    let shown = dash.bin.json(&["job", "show", job]);
    let events = shown["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["action"] == "retry"), "{shown}");
    // The printed URL sets the cookie: HttpOnly, SameSite=Strict, and the
    // token leaves the address bar.
    let r = Dash::agent()
        .get(dash.url(&format!("/jobs?token={}", dash.token)))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/jobs");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains(&dash.token)
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // The cookie's redirect never leaves this server, whatever the path.
    for (path, to) in [
        ("//evil.example/x", "/evil.example/x"),
        ("/%5C%5Cevil.example", "/evil.example"),
        ("/jobs%0d%0aSet-Cookie:%20x=1", "/jobsSet-Cookie:%20x=1"),
    ] {
        let r = Dash::agent()
            .get(dash.url(&format!("{path}?token={}", dash.token)))
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 303, "{path}");
        assert_eq!(r.headers()["location"], to, "{path}");
        assert_eq!(
            r.headers().get_all("set-cookie").iter().count(),
            1,
            "{path}"
        );
    }
    // The token file is the user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dash.bin.home.join("http-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_read_only_server_changes_nothing() {
    let (dir, bin) = Bin::init_with(FAILING);
    let tmp = tempfile::tempdir().unwrap();
    let bad = submit(
        &bin,
        tmp.path(),
        "bad.json",
        &bundle("fails", "invalid", "x"),
    );
    assert_eq!(bin.run(&["serve", "--once"]).status.code(), Some(3));
    let dash = Dash::serve(dir, bin, &["--read-only"]);
    let job = &failing_job(&dash, &bad);
    let (status, body) = dash.post_bearer(
        &format!("/api/v1/jobs/{job}/retry"),
        "application/json",
        b"",
    );
    assert_eq!(status, 403, "{body}");
    let (status, _) = dash.post_bearer(
        "/api/v1/bundles",
        "application/json",
        bundle("no", "process_bundle", "x").as_bytes(),
    );
    assert_eq!(status, 403);
    let (status, page) = dash.get(&format!("/jobs/{job}"));
    assert_eq!(status, 200);
    assert!(
        page.contains("read-only") && !page.contains("/retry\""),
        "no retry button"
    );
    assert_eq!(dash.bin.jobs_with(bundleq::JobStatus::Failed), 1);
}

#[test]
fn actions_retry_cancel_bulk_pause_and_resume() {
    let dash = Dash::start(FAILING, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let v = submit(
            &dash.bin,
            tmp.path(),
            &format!("b{i}.json"),
            &bundle(&format!("r{i}"), "invalid", "x"),
        );
        jobs.push(failing_job(&dash, &v));
    }
    // Pause the type first, so retried jobs stay queued where we can see them.
    let origin = format!("http://{}", dash.addr);
    let same = [
        ("Sec-Fetch-Site", "same-origin"),
        ("Origin", origin.as_str()),
    ];
    let (status, _) = dash.post_cookie("/types/invalid/pause", &same, "");
    assert_eq!(status, 303);
    let paused = dash.api("/api/v1/status")["paused"].clone();
    assert_eq!(paused[0]["job_type"], "invalid", "{paused}");
    // One job by the API.
    let (status, body) = dash.post_bearer(
        &format!("/api/v1/jobs/{}/retry", jobs[0]),
        "application/json",
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );
    // Retrying a queued job is refused: 409.
    let (status, _) = dash.post_bearer(
        &format!("/api/v1/jobs/{}/retry", jobs[0]),
        "application/json",
        b"",
    );
    assert_eq!(status, 409);
    let (status, body) = dash.post_bearer(
        &format!("/api/v1/jobs/{}/cancel", jobs[0]),
        "application/json",
        b"",
    );
    assert_eq!(status, 200, "{body}");
    // Retry-all shows its count before it acts, then acts on exactly those.
    let (status, confirm) = dash.get("/jobs/bulk?action=retry&status=failed&type=invalid");
    assert_eq!(status, 403, "no token, no confirm page: {confirm}");
    let r = Dash::agent()
        .get(dash.url("/jobs/bulk?action=retry&status=failed&type=invalid"))
        .header("Cookie", &format!("bundleq_token={}", dash.token))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        r.contains("<strong>2</strong> failed or cancelled job(s)"),
        "{r}"
    );
    let (status, done) = dash.post_cookie(
        "/jobs/bulk",
        &same,
        "action=retry&status=failed&type=invalid&expect=2",
    );
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Retried <strong>2</strong>"), "{done}");
    assert_eq!(dash.bin.jobs_with(bundleq::JobStatus::Queued), 2);
    assert_eq!(dash.bin.jobs_with(bundleq::JobStatus::Cancelled), 1);
    // Cancel-all of what is queued: never more than the count confirmed.
    let (status, done) =
        dash.post_cookie("/jobs/bulk", &same, "action=cancel&status=queued&expect=1");
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Cancelled <strong>1</strong>"), "{done}");
    assert_eq!(dash.bin.jobs_with(bundleq::JobStatus::Queued), 1);
    let (status, done) =
        dash.post_cookie("/jobs/bulk", &same, "action=cancel&status=queued&expect=5");
    assert_eq!(status, 200, "{done}");
    assert_eq!(dash.bin.jobs_with(bundleq::JobStatus::Cancelled), 3);
    // Resume: the type runs again (retry one and see it fail again).
    let (status, _) = dash.post_cookie("/types/invalid/resume", &same, "");
    assert_eq!(status, 303);
    assert!(
        dash.api("/api/v1/status")["paused"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    dash.post_bearer(
        &format!("/api/v1/jobs/{}/retry", jobs[1]),
        "application/json",
        b"",
    );
    wait_for_jobs(&dash, bundleq::JobStatus::Failed, 1);
}

#[test]
fn malformed_requests_get_a_status_not_a_hang() {
    let dash = Dash::start("", &["--no-inbox"]);
    let host = format!("Host: 127.0.0.1:{}\r\n", dash.addr.port());
    // A head past 16 KiB.
    let long = format!(
        "GET / HTTP/1.1\r\n{host}X-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(raw(dash.addr, long.as_bytes()).0, 431);
    // Not HTTP.
    assert_eq!(raw(dash.addr, b"\x16\x03\x01\x02\x00hello\r\n\r\n").0, 400);
    // A chunked body.
    let chunked = format!(
        "POST /api/v1/bundles HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    assert_eq!(raw(dash.addr, chunked.as_bytes()).0, 411);
    // A body larger than its limit is refused before it is read.
    let huge = format!(
        "POST /api/v1/bundles HTTP/1.1\r\n{host}Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n{{",
        dash.token
    );
    assert_eq!(raw(dash.addr, huge.as_bytes()).0, 413);
    // Two lengths.
    let two = format!(
        "POST /api/v1/bundles HTTP/1.1\r\n{host}Content-Length: 1\r\nContent-Length: 2\r\n\r\n"
    );
    assert_eq!(raw(dash.addr, two.as_bytes()).0, 400);
}

#[test]
fn slow_and_too_many_clients_cannot_stall_the_server() {
    let dash = Dash::start("", &["--no-inbox"]);
    // A client that trickles its body a byte at a time, never silent for
    // long, is cut off (408) at the body's deadline all the same, on a
    // thread of its own.
    let (addr, token) = (dash.addr, dash.token.clone());
    let (sent_tx, sent) = crossbeam_channel::bounded(1);
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /api/v1/bundles HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n{{",
            addr.port()
        )
        .unwrap();
        sent_tx.send(()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..120 {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) if answer.is_empty() => {
                    // Nothing yet: one more byte of body.
                    if s.write_all(b" ").is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    // Connected first, so it is accepted before the silent ones below.
    sent.recv().unwrap();
    // Clients that connect and say nothing hold every slot...
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(dash.addr).unwrap())
        .collect();
    // ...so the next is told at once to come back later (503), not queued.
    wait_until("the cap reached", || {
        raw(
            dash.addr,
            format!(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
                dash.addr.port()
            )
            .as_bytes(),
        )
        .0 == 503
    });
    // Each silent client is answered 408 when its head is overdue...
    let mut first = idle.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = String::new();
    let _ = first.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // ...and the server serves again.
    wait_until("a slot free again", || dash.get("/").0 == 200);
    let answer = trickle.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stopped arriving"), "{answer}");
    assert_eq!(dash.bin.runs_total(), 0);
}

#[test]
fn from_another_machine_every_request_needs_the_token() {
    // This machine's address on its way out (a UDP connect sends nothing).
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let local = probe
        .connect("192.0.2.1:9")
        .ok()
        .and_then(|()| probe.local_addr().ok())
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    let Some(ip) = local else {
        if std::env::var_os("CI").is_some() {
            panic!("CI=true but this machine has no non-loopback address to test from");
        }
        common::skipped("no non-loopback address on this machine");
        return;
    };
    let (dir, bin) = Bin::init_with("");
    let mut child = Command::new(exe())
        .arg("--home")
        .arg(&bin.home)
        .args(["--json", "web", "--http", &format!("{ip}:0")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started: Value = serde_json::from_str(&first_line(&mut child)).unwrap();
    let addr: SocketAddr = started["listening"].as_str().unwrap().parse().unwrap();
    let token = std::fs::read_to_string(bin.home.join("http-token"))
        .unwrap()
        .trim()
        .to_owned();
    let agent = Dash::agent();
    let r = agent
        .get(format!("http://{addr}/api/v1/status"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = agent.get(format!("http://{addr}/")).call().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = agent
        .get(format!("http://{addr}/api/v1/status"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = agent
        .get(format!("http://{addr}/"))
        .header("Cookie", &format!("bundleq_token={token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let _ = Bin::terminate(child);
    drop(dir);
}

#[test]
fn the_job_listings_walk_an_index() {
    let (_d, bin) = Bin::init_with("");
    let mut store = bin.store();
    let tenant = bin.tenant();
    for status in [
        None,
        Some(bundleq::JobStatus::Failed),
        Some(bundleq::JobStatus::Cancelled),
    ] {
        let filter = bundleq::store::JobFilter {
            status,
            limit: Some(50),
            ..Default::default()
        };
        let plan = store.explain_jobs(tenant, &filter).unwrap().join("\n");
        assert!(plan.contains("USING INDEX"), "{status:?}: {plan}");
        // Newest first by the index; only ties of one created_at are
        // ordered by id ("LAST TERM"), never the whole listing.
        assert!(
            !plan.contains("TEMP B-TREE FOR ORDER BY"),
            "{status:?} sorts: {plan}"
        );
        if let Some(s) = status {
            assert!(plan.contains(&format!("research_jobs_{s}")), "{plan}");
        }
    }
}

#[test]
fn a_dashboard_shows_only_its_own_tenant() {
    let (dir, bin) = Bin::init_with("[workers]\npoll_interval = \"50ms\"\n");
    bin.ok(&["tenants", "create", "lab-b"]);
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("b.json");
    std::fs::write(&p, bundle("lab b's secret run", "process_bundle", "hidden")).unwrap();
    let theirs = bin.json_lines(&["--tenant", "lab-b", "submit", p.to_str().unwrap()]);
    let ours = submit(
        &bin,
        tmp.path(),
        "a.json",
        &bundle("ours", "process_bundle", "visible"),
    );
    let dash = Dash::serve(dir, bin, &[]);
    wait_for_jobs(&dash, bundleq::JobStatus::Succeeded, 2);
    let their_run = theirs[0]["run_id"].as_str().unwrap();
    let their_job = theirs[0]["job_id"].as_str().unwrap();
    for path in [
        format!("/api/v1/runs/{their_run}"),
        format!("/api/v1/jobs/{their_job}"),
        format!("/runs/{their_run}"),
        format!("/jobs/{their_job}"),
    ] {
        assert_eq!(dash.get(&path).0, 404, "{path}");
    }
    let (status, _) = dash.post_bearer(
        &format!("/api/v1/jobs/{their_job}/cancel"),
        "application/json",
        b"",
    );
    assert_eq!(status, 404);
    let runs = dash.api("/api/v1/runs");
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], ours["run_id"]);
    assert_eq!(dash.api("/api/v1/search?q=hidden")["total"], 0);
    for page in ["/", "/jobs", "/runs", "/search?q=hidden"] {
        let (_, body) = dash.get(page);
        assert!(
            !body.contains("secret run") && !body.contains(&their_run[..13]),
            "{page}"
        );
    }
    // Uploads land in the server's tenant; a bundle naming another is refused.
    let mut foreign: Value =
        serde_json::from_str(&bundle("foreign", "process_bundle", "x")).unwrap();
    foreign["tenant_id"] = Value::String(
        dash.bin
            .json(&["tenants"])
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "lab-b")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let (status, body) = dash.post_bearer(
        "/api/v1/bundles",
        "application/json",
        foreign.to_string().as_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("tenant_id"), "{body}");
}

#[test]
fn a_viewer_on_postgresql_shows_and_acts_on_the_shared_queue() {
    use common::Backend;
    if !Backend::Postgres.available() {
        return;
    }
    let (dir, bin) = Backend::Postgres.init_with(FAILING);
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for i in 0..3 {
        runs.push(submit(
            &bin,
            tmp.path(),
            &format!("b{i}.json"),
            &bundle(&format!("pg run {i}"), "invalid", "tundra"),
        ));
    }
    assert_eq!(bin.run(&["serve", "--once"]).status.code(), Some(3));
    // `web` works no jobs: a viewer of the queue.
    let dash = Dash::web(dir, bin, &[]);
    let failed = failing_job(&dash, &runs[0]);
    assert_api_is_cli(
        &dash,
        &[
            ("/api/v1/jobs".to_owned(), vec!["jobs"]),
            (
                "/api/v1/jobs?status=failed".to_owned(),
                vec!["jobs", "--status", "failed"],
            ),
            (
                format!("/api/v1/jobs/{failed}"),
                vec!["job", "show", failed.as_str()],
            ),
            ("/api/v1/runs".to_owned(), vec!["runs"]),
            (
                "/api/v1/search?q=tundra".to_owned(),
                vec!["search", "tundra"],
            ),
        ],
    );
    // Paging and the text filter on the server's SQL.
    let first = dash.api("/api/v1/jobs?status=failed&limit=2");
    assert_eq!(first.as_array().unwrap().len(), 2);
    let rest = dash.api(&format!(
        "/api/v1/jobs?status=failed&limit=2&before={}",
        first[1]["id"].as_str().unwrap()
    ));
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(
        dash.api("/api/v1/jobs?q=exited+with+65")
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let page1 = dash.api("/api/v1/runs?limit=2");
    let page2 = dash.api(&format!(
        "/api/v1/runs?before={}",
        page1[1]["id"].as_str().unwrap()
    ));
    assert_eq!(page2.as_array().unwrap().len(), 1);
    // The overview's chart counts what finished, from the server's clock.
    let (status, page) = dash.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("3 succeeded and 3 failed in the last hour"),
        "{page}"
    );
    for path in ["/jobs?status=failed", "/runs", "/search?q=tundra", "/inbox"] {
        assert_eq!(dash.get(path).0, 200, "{path}");
    }
    // An action through the viewer changes the shared queue.
    let (status, body) = dash.post_bearer(
        &format!("/api/v1/jobs/{failed}/retry"),
        "application/json",
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(dash.bin.json(&["job", "show", &failed])["status"], "queued");
}

#[test]
fn an_address_in_use_is_a_one_line_error_before_any_work() {
    let dash = Dash::start("", &["--no-inbox"]);
    let out = dash
        .bin
        .run(&["serve", "--http", &dash.addr.to_string(), "--no-inbox"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&dash.addr.to_string()) && err.contains("in use"),
        "{err}"
    );
    assert_eq!(
        err.trim_end()
            .lines()
            .filter(|l| !l.contains(" INFO "))
            .count(),
        1,
        "{err}"
    );
    let out = dash.bin.run(&["web", "--http", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an address to listen on"));
}

#[test]
fn racing_clients_get_one_run_per_bundle_and_one_retry_per_job() {
    let dash = Dash::start(FAILING, &["--workers", "2"]);
    let origin = std::sync::Arc::new(dash.url(""));
    let token = std::sync::Arc::new(dash.token.clone());
    // The same bytes from 16 clients at once, 10 times: one 201 each time,
    // the rest duplicates of that very run.
    for round in 0..10 {
        let text = std::sync::Arc::new(bundle(&format!("race {round}"), "process_bundle", "x"));
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (origin, token, text) = (origin.clone(), token.clone(), text.clone());
                    s.spawn(move || {
                        let mut r = Dash::agent()
                            .post(format!("{origin}/api/v1/bundles"))
                            .header("Authorization", &format!("Bearer {token}"))
                            .send(text.as_bytes())
                            .unwrap();
                        let status = r.status().as_u16();
                        (
                            status,
                            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created = answers.iter().filter(|(s, _)| *s == 201).count();
        assert_eq!(created, 1, "round {round}: {answers:?}");
        let runs: std::collections::BTreeSet<&str> = answers
            .iter()
            .map(|(_, v)| v["run_id"].as_str().unwrap())
            .collect();
        assert_eq!(runs.len(), 1, "round {round}: {answers:?}");
        assert!(answers.iter().all(|(s, _)| *s == 201 || *s == 200));
    }
    assert_eq!(dash.bin.runs_total(), 10);
    // One failed job retried by 8 clients at once, 5 times: one retry
    // each time, the others told the job is no longer failed (409).
    let tmp = tempfile::tempdir().unwrap();
    let bad = submit(
        &dash.bin,
        tmp.path(),
        "bad.json",
        &bundle("fails", "invalid", "x"),
    );
    let job = failing_job(&dash, &bad);
    for round in 0..5 {
        if round > 0 {
            // Let it run (and fail) again, then hold its type while the
            // clients race, so a retried job stays queued meanwhile.
            dash.bin.ok(&["resume", "invalid"]);
            wait_until("it failed again", || {
                dash.api(&format!("/api/v1/jobs/{job}"))["status"] == "failed"
            });
        }
        dash.bin.ok(&["pause", "invalid"]);
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (origin, token, job) = (origin.clone(), token.clone(), job.clone());
                    s.spawn(move || {
                        Dash::agent()
                            .post(format!("{origin}/api/v1/jobs/{job}/retry"))
                            .header("Authorization", &format!("Bearer {token}"))
                            .send_empty()
                            .unwrap()
                            .status()
                            .as_u16()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "{statuses:?}"
        );
    }
    let shown = dash.api(&format!("/api/v1/jobs/{job}"));
    let retries = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "retry")
        .count();
    assert_eq!(retries, 5, "{shown}");
}
