//! The dashboard in a real browser: headless Chromium (Debian's `chromium`
//! package) driven over the DevTools protocol. It opens the printed URL
//! (the token becomes a cookie), reads the overview, pauses a job type,
//! opens a failed job and retries it with a click, searches a word and
//! uploads a bundle through the form — every step as a user would.
//!
//! Needs Chromium: `/usr/bin/chromium`, or the program `BUNDLEQ_CHROMIUM`
//! names. Under `CI=true` a missing browser fails the test; elsewhere it is
//! skipped with a printed reason. With `BUNDLEQ_SCREENSHOTS=DIR` the
//! overview, a job and a run are saved there as PNG (how `docs/` is made).

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

use common::dash::{Dash, FAILING, bundle, failing_job, submit, wait_for_jobs};
use common::wait_until;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("BUNDLEQ_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    path.exists().then_some(path)
}

fn shot(tab: &Tab, name: &str) {
    let Some(dir) = std::env::var_os("BUNDLEQ_SCREENSHOTS") else {
        return;
    };
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(PathBuf::from(dir).join(name), png).unwrap();
}

/// The text of the first element matching `selector`, once there.
fn text_of(tab: &Tab, selector: &str) -> String {
    tab.wait_for_element(selector)
        .unwrap()
        .get_inner_text()
        .unwrap()
}

#[test]
fn a_user_looks_retries_searches_and_uploads_in_a_real_browser() {
    let Some(browser_path) = chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI=true but Chromium is missing (apt-get install -y chromium, or set BUNDLEQ_CHROMIUM)"
            );
        }
        common::skipped("Chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let dash = Dash::start(FAILING, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let good = submit(
        &dash.bin,
        tmp.path(),
        "good.json",
        &bundle("Terminus survey 2026", "process_bundle", "moraine"),
    );
    let bad = submit(
        &dash.bin,
        tmp.path(),
        "bad.json",
        &bundle("Calving front, broken tool", "invalid", "serac"),
    );
    let failed = failing_job(&dash, &bad);
    wait_for_jobs(&dash, bundleq::JobStatus::Succeeded, 2);
    // The snapshot the overview shows, once it counts both successes.
    wait_until("the overview counts both", || {
        dash.get("/")
            .1
            .contains("<span class=\"n\">2</span><span class=\"label\">succeeded")
    });

    let profile = tempfile::tempdir().unwrap();
    let options = LaunchOptions::default_builder()
        .path(Some(browser_path))
        .headless(true)
        .sandbox(false)
        .window_size(Some((1280, 1000)))
        .user_data_dir(Some(profile.path().to_owned()))
        .idle_browser_timeout(Duration::from_secs(120))
        .args(vec![
            OsStr::new("--disable-gpu"),
            OsStr::new("--disable-quic"),
            OsStr::new("--no-first-run"),
            OsStr::new("--disable-background-networking"),
            OsStr::new("--disable-component-update"),
            OsStr::new("--disable-sync"),
        ])
        .build()
        .unwrap();
    let browser = Browser::new(options).unwrap();
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(60));

    // The printed URL: the token becomes a cookie and leaves the address.
    tab.navigate_to(&dash.url(&format!("/?token={}", dash.token)))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    assert_eq!(tab.get_url(), dash.url("/"));
    let cards = text_of(&tab, "section.cards");
    assert!(
        cards.contains("succeeded") && cards.contains("failed"),
        "{cards}"
    );
    assert!(text_of(&tab, "header .who").contains("default"));
    shot(&tab, "dashboard-overview.png");

    // The overview refreshes itself while the tab is visible: a run
    // submitted from the command line shows up without a reload.
    let succeeded_before = text_of(&tab, ".card.succeeded .n");
    submit(
        &dash.bin,
        tmp.path(),
        "later.json",
        &bundle(
            "Submitted while the tab was open",
            "process_bundle",
            "drumlin",
        ),
    );
    wait_until("the overview refreshed itself", || {
        tab.find_element(".card.succeeded .n")
            .and_then(|e| e.get_inner_text())
            .is_ok_and(|t| t != succeeded_before)
    });
    assert_eq!(tab.get_url(), dash.url("/"), "no navigation happened");

    // Pause the failing type from the overview, so the retried job waits.
    tab.wait_for_element("form[action='/types/invalid/pause'] button")
        .unwrap()
        .click()
        .unwrap();
    wait_until("the pause shown", || {
        tab.find_element("form[action='/types/invalid/resume']")
            .is_ok()
    });

    // The failed job: listed, opened, retried with a click.
    tab.navigate_to(&dash.url("/jobs?status=failed"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    tab.wait_for_element(&format!("a[href='/jobs/{failed}']"))
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_element("form[action$='/retry'] button")
        .unwrap();
    assert_eq!(tab.get_url(), dash.url(&format!("/jobs/{failed}")));
    assert_eq!(text_of(&tab, "dl.fields .status"), "failed");
    shot(&tab, "dashboard-job.png");
    tab.find_element("form[action$='/retry'] button")
        .unwrap()
        .click()
        .unwrap();
    wait_until("the job shown queued", || {
        tab.find_element("dl.fields .status")
            .and_then(|e| e.get_inner_text())
            .is_ok_and(|t| t == "queued")
    });
    let job = dash.bin.json(&["job", "show", &failed]);
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );

    // Search a word; the hit is marked in its snippet.
    tab.navigate_to(&dash.url("/search"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    tab.wait_for_element("input[name=q]")
        .unwrap()
        .type_into("moraine")
        .unwrap();
    tab.press_key("Enter").unwrap();
    assert_eq!(text_of(&tab, "ol.hits mark"), "moraine");
    assert!(text_of(&tab, "ol.hits").contains("Terminus survey 2026"));

    // Upload a bundle through the form; the browser lands on its run.
    let upload = tmp.path().join("from-the-browser.json");
    std::fs::write(
        &upload,
        bundle("Uploaded from a browser", "process_bundle", "fjord"),
    )
    .unwrap();
    tab.navigate_to(&dash.url("/runs"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    tab.wait_for_element("form.upload input[type=file]")
        .unwrap()
        .set_input_files(&[upload.to_str().unwrap()])
        .unwrap();
    tab.find_element("form.upload button")
        .unwrap()
        .click()
        .unwrap();
    wait_until("the uploaded run shown", || {
        tab.find_element("p.subtitle")
            .and_then(|e| e.get_inner_text())
            .is_ok_and(|t| t == "Uploaded from a browser")
    });
    assert!(tab.get_url().starts_with(&dash.url("/runs/")));
    let runs = dash.bin.json(&["runs"]);
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["title"] == "Uploaded from a browser" && r["origin"] == "api"),
        "{runs}"
    );

    // A run's page, for the screenshots.
    tab.navigate_to(&dash.url(&format!("/runs/{}", good["run_id"].as_str().unwrap())))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    tab.wait_for_element("table.sources").unwrap();
    shot(&tab, "dashboard-run.png");
}
