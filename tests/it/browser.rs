//! The web inbox page (`GET /`) in a real browser: the release or debug binary on fresh SQLite
//! files, filled with its own `send` subcommand, and the page driven in headless Chromium by
//! `tests/browser/inbox.test.mjs` (playwright-core). Screenshots go to `target/artifacts/`.
//!
//! A third service forwards (`FORWARD_URL`) to a receiver that the script itself runs on a port
//! chosen here: one destination that always answers 200, one that answers 500 until the script
//! lets it recover, with retries fast enough that a delivery fails within a few seconds.
//!
//! Needs Chromium (`apt-get install chromium`), Node.js with npm, and the script's one npm
//! package, which the test installs itself from the lock file (`npm ci`) when it is missing.
//! Without Chromium or Node.js the test skips aloud (a failure under `TEST_NO_SKIP`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::child::{Launch, SECRET, run_bin};
use serde_json::json;

const TOKEN: &str = "browser-test-token-7d1e";
const A: &str = "+919876543210";
const B: &str = "+14155550111";
const C: &str = "+447700900123";
const TO: &str = "+14155550100";
/// A Standard Webhooks secret for the forwarding service (the script checks each signature).
const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SCREENSHOTS: [&str; 5] = [
    "inbox.png",
    "inbox-phone.png",
    "inbox-token.png",
    "inbox-live.png",
    "inbox-deliveries.png",
];
const XSS_TEXT: &str = r#"<script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2">"#;

/// `CHROMIUM` when set, else Debian's `/usr/bin/chromium`: `Err` with the path when it is not there.
fn chromium() -> Result<PathBuf, PathBuf> {
    let path = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.is_file() { Ok(path) } else { Err(path) }
}

/// What the script expects to find (the counts and orders it checks follow from these).
///
/// m01..m24, one a minute from 09:01: even numbers from A (12), 1 mod 4 from B (6), 3 mod 4 from
/// C (6); "invoice" in any case in m05, m07, m10, m15, m20; m09 without text. Besides: markup
/// from +15550001 between m05 and m06, and the oldest, a long unbroken text with a 205-character
/// id, from +15550002.
fn seed_messages() -> Vec<serde_json::Value> {
    let mut messages: Vec<_> = (1..=24)
        .map(|i| {
            let from = match i % 4 {
                0 | 2 => A,
                1 => B,
                _ => C,
            };
            let text = match i {
                9 => None,
                7 => Some("Please send the INVOICE again".to_owned()),
                _ if i % 5 == 0 => Some(format!("Invoice #{i} is ready")),
                _ => Some(format!("Hello number {i}")),
            };
            json!({
                "message_id": format!("m{i:02}"),
                "from": from,
                "to": TO,
                "ts": format!("2025-01-15T09:{i:02}:00Z"),
                "text": text,
            })
        })
        .collect();
    messages.push(json!({
        "message_id": "x-xss", "from": "+15550001", "to": TO, "ts": "2025-01-15T09:05:30Z", "text": XSS_TEXT,
    }));
    messages.push(json!({
        "message_id": format!("long-{}", "y".repeat(200)),
        "from": "+15550002",
        "to": TO,
        "ts": "2025-01-15T08:00:00Z",
        "text": format!("Wide{}", "x".repeat(600)),
    }));
    messages
}

/// POSTs `message` with the binary's own `send` subcommand.
fn send(webhook_url: &str, message: &serde_json::Value) {
    let body = serde_json::to_vec(message).expect("JSON");
    let sent = run_bin(
        &["send", "--url", webhook_url],
        &[("WEBHOOK_SECRET", SECRET)],
        Some(&body),
    );
    assert!(
        sent.status.success() && sent.stdout.trim() == r#"{"status":"ok"}"#,
        "send {message}: {:?} {} {}",
        sent.status,
        sent.stdout,
        sent.stderr
    );
}

fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts")
}

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Installs the script's npm package from its lock file unless it is there already.
fn install_the_script_package(script_dir: &Path) {
    if script_dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return;
    }
    let _ = writeln!(
        std::io::stderr(),
        "note: installing the browser test's npm package (npm ci in tests/browser)"
    );
    let installed = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(script_dir)
        .output()
        .expect("run npm");
    assert!(
        installed.status.success(),
        "npm ci in tests/browser failed ({}): {}",
        installed.status,
        String::from_utf8_lossy(&installed.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_page_works_in_headless_chromium() {
    let chromium = match chromium() {
        Ok(path) => path,
        Err(missing) => {
            let why = format!(
                "no Chromium at {} (install it with `apt-get install -y chromium`, or set CHROMIUM)",
                missing.display()
            );
            crate::common::skip::skip("the browser test", &why);
            return;
        }
    };
    if !installed("node") || !installed("npm") {
        crate::common::skip::skip(
            "the browser test",
            "Node.js and npm are not both installed (`apt-get install -y nodejs npm`)",
        );
        return;
    }
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    install_the_script_package(&script_dir);

    let dir = tempfile::tempdir().expect("temp dir");
    let open = Launch::new(dir.path().join("open.db"))
        .with_providers()
        .start()
        .await;
    let protected = Launch::new(dir.path().join("protected.db"))
        .env("API_TOKEN", TOKEN)
        .start()
        .await;
    for message in seed_messages() {
        send(&open.url("/webhook"), &message);
    }
    // Nothing listens on the receiver's port until the script starts its receiver, and nothing is
    // sent to this service before that.
    let receiver_port = crate::child::free_port();
    let forwarding = Launch::new(dir.path().join("forwarding.db"))
        .env("API_TOKEN", TOKEN)
        .env(
            "FORWARD_URL",
            &format!("http://127.0.0.1:{receiver_port}/app,http://127.0.0.1:{receiver_port}/flaky"),
        )
        .env("FORWARD_SECRET", FORWARD_SECRET)
        .env("FORWARD_BACKOFF_MIN_MS", "50")
        .env("FORWARD_BACKOFF_MAX_MS", "200")
        .env("FORWARD_MAX_AGE", "2s")
        .start()
        .await;
    send(
        &protected.url("/webhook"),
        &json!({"message_id": "secret-1", "from": A, "to": TO, "ts": "2025-01-15T09:00:00Z", "text": "For token holders"}),
    );

    let artifacts = artifacts_dir();
    for screenshot in SCREENSHOTS {
        let _ = std::fs::remove_file(artifacts.join(screenshot));
    }
    let outcome = Command::new("node")
        .arg("inbox.test.mjs")
        .current_dir(&script_dir)
        .env("INBOX_URL", &open.base)
        .env("TOKEN_URL", &protected.base)
        .env("API_TOKEN", TOKEN)
        .env("FORWARDING_URL", &forwarding.base)
        .env("RECEIVER_PORT", receiver_port.to_string())
        .env("FORWARD_SECRET", FORWARD_SECRET)
        .env("WEBHOOK_INBOX", crate::child::BIN)
        .env("WEBHOOK_SECRET", SECRET)
        .env("WHATSAPP_APP_SECRET", crate::providers::APP_SECRET)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node (Chromium is installed, so node is needed too)");
    let stdout = String::from_utf8_lossy(&outcome.stdout);
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    println!("{stdout}");
    assert!(
        outcome.status.success(),
        "the browser script failed ({}):\n{stdout}\n{stderr}\nthe forwarding service's log:\n{}",
        outcome.status,
        forwarding.stdout.snapshot()
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    for screenshot in SCREENSHOTS {
        let size = std::fs::metadata(artifacts.join(screenshot)).map_or(0, |meta| meta.len());
        assert!(size > 10_000, "{screenshot}: {size} bytes");
    }
}
