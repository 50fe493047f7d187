//! Limits against slow, idle, greedy and oversized clients, over raw TCP so that the
//! test controls every byte and every pause: the body limit is enforced before the body is read,
//! headers and bodies have deadlines, idle connections are closed, and the number of connections
//! is bounded.
//!
//! No assertion is about how long something took: each waits, within a generous bound, for the
//! server to do what it must, and the one check that something does *not* happen (a client held
//! back by the connection limit) can only be made to pass, never to fail, by a slow machine.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{Backend, Options, TestApp};
use serde_json::{Value, json};
use webhook_inbox::config::Limits;

/// Longest any read in these tests waits for the server.
const READ_BOUND: Duration = Duration::from_secs(15);

async fn app_with(limits: Limits) -> TestApp {
    TestApp::spawn_with(Options {
        limits,
        ..Options::new(Backend::SqliteMemory)
    })
    .await
}

fn connect(app: &TestApp) -> TcpStream {
    let address = app.base.trim_start_matches("http://");
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(READ_BOUND)).expect("read timeout");
    stream
}

/// What the server sent until it closed the connection (or `READ_BOUND` passed: then panics).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return received,
            Err(error) => panic!(
                "the server neither answered nor closed within {READ_BOUND:?}: {error}; got {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

/// Reads one whole answer (head and a `Content-Length` body); `None` if the connection closed
/// first.
fn read_answer(stream: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => received.push(byte[0]),
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return None,
            Err(error) => panic!("no answer within {READ_BOUND:?}: {error}"),
        }
    }
    let head = String::from_utf8_lossy(&received).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, head, body))
}

fn json_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(body)))
}

fn webhook_head(app: &TestApp, framing: &str) -> String {
    let host = app.base.trim_start_matches("http://");
    format!(
        "POST /webhook HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nX-Signature: {}\r\n{framing}\r\n",
        "0".repeat(64)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_declared_body_is_refused_before_it_is_sent() {
    // The client declares 1 GB and sends none of it: a server that buffered first would wait
    // for the body (and time out with 408); this one answers 413 at once.
    let app = app_with(Limits {
        body_read_timeout: Duration::from_secs(60),
        ..Limits::default()
    })
    .await;
    let mut stream = connect(&app);
    stream
        .write_all(webhook_head(&app, "Content-Length: 1000000000\r\n").as_bytes())
        .unwrap();
    let (status, head, body) = read_answer(&mut stream).expect("an answer");
    assert_eq!(status, 413);
    assert_eq!(json_body(&body), json!({"detail": "payload too large"}));
    // The body was not read, so the connection cannot carry another request: the client is told.
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert!(read_to_close(&mut stream).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_is_408() {
    let app = app_with(Limits {
        body_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    for (framing, sent) in [
        ("Content-Length: 100\r\n", &b"{\"message_id\""[..]),
        ("Transfer-Encoding: chunked\r\n", &b"5\r\n{\"mes\r\n"[..]),
        ("Transfer-Encoding: chunked\r\n", &b""[..]),
    ] {
        let mut stream = connect(&app);
        stream.write_all(webhook_head(&app, framing).as_bytes()).unwrap();
        stream.write_all(sent).unwrap();
        let (status, head, body) = read_answer(&mut stream).expect("an answer");
        assert_eq!(status, 408, "{framing}");
        assert_eq!(
            json_body(&body),
            json!({"detail": "request body not received in time"})
        );
        assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
        // And the connection is closed after the answer.
        assert!(read_to_close(&mut stream).is_empty());
    }
    let (_, page) = app.get_json("/messages").await;
    assert_eq!(page["total"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_byte_by_byte_is_cut_off_at_the_deadline() {
    // Each byte arrives well within any per-read timeout; the deadline is on the whole body.
    let app = app_with(Limits {
        body_read_timeout: Duration::from_millis(400),
        ..Limits::default()
    })
    .await;
    let mut stream = connect(&app);
    stream
        .write_all(webhook_head(&app, "Content-Length: 60000\r\n").as_bytes())
        .unwrap();
    stream.set_nonblocking(false).unwrap();
    let trickle = stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut trickle = trickle;
        // At most 60 000 bytes at 20 ms each: 20 minutes, far beyond any deadline.
        for _ in 0..60_000 {
            if trickle.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (status, _, body) = read_answer(&mut stream).expect("an answer");
    assert_eq!(status, 408);
    assert_eq!(
        json_body(&body),
        json!({"detail": "request body not received in time"})
    );
    drop(stream);
    writer.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_end_get_the_connection_closed() {
    let app = app_with(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    for partial in [
        &b""[..],
        b"GET /health/live HTTP/1.1\r\n",
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa",
    ] {
        let mut stream = connect(&app);
        stream.write_all(partial).unwrap();
        let received = read_to_close(&mut stream);
        // No request was made, so there is nothing to answer: at most hyper's bare status line.
        let text = String::from_utf8_lossy(&received);
        assert!(
            received.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{partial:?} got {text:?}"
        );
    }
    // The service goes on serving.
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = app_with(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stream = connect(&app);
    let host = app.base.trim_start_matches("http://");
    stream
        .write_all(format!("GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    let (status, _, body) = read_answer(&mut stream).expect("an answer");
    assert_eq!((status, json_body(&body)), (200, json!({"status": "live"})));
    assert!(
        read_to_close(&mut stream).is_empty(),
        "closed without another answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_moves_no_byte_is_closed_even_in_http2() {
    // Headers may take long here; the idle timeout is what cuts these clients off.
    let app = app_with(Limits {
        header_read_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut silent = connect(&app);
    assert!(read_to_close(&mut silent).is_empty());

    // HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame, then nothing.
    let mut http2 = connect(&app);
    http2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    http2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let received = read_to_close(&mut http2);
    assert!(
        received.len() >= 9 && received[3] == 4,
        "the server's SETTINGS came first: {received:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_past_max_connections_wait_for_a_free_slot() {
    let app = app_with(Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(120),
        ..Limits::default()
    })
    .await;
    let host = app.base.trim_start_matches("http://").to_owned();
    let request = format!("GET /health/live HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    // Two clients take both slots and say nothing; the listen queue is first in, first out, so
    // they are accepted before the third whatever the timing.
    let first = connect(&app);
    let second = connect(&app);
    let mut third = connect(&app);
    third.write_all(request.as_bytes()).unwrap();
    third.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buffer = [0u8; 1];
    let early = third.read(&mut buffer);
    assert!(
        matches!(&early, Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a third client was served while two held both slots: {early:?}"
    );
    // One of the two leaves: the waiting client is served.
    drop(first);
    third.set_read_timeout(Some(READ_BOUND)).unwrap();
    let (status, _, body) = read_answer(&mut third).expect("an answer once a slot is free");
    assert_eq!((status, json_body(&body)), (200, json!({"status": "live"})));
    drop(second);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2: streams per connection and bodies held before verification
// ---------------------------------------------------------------------------------------------

/// 48 HTTP/2 connections each open every stream the service allows and send 60 KB of a 64 KB
/// body on each, then stall. The service allows 16 streams per connection, holds at most
/// `BODY_BUFFER_BYTES` (1 MiB here) of unverified bodies, and lets a client send only 64 KiB
/// ahead per connection, so its memory grows by a few MB, not by the 46 MB the clients sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http2_bodies_take_a_bounded_amount_of_memory() {
    use axum::body::Bytes;

    const CONNECTIONS: usize = 48;
    const SENT_PER_STREAM: usize = 60_000;
    /// The bound on the service's growth in resident memory.
    const GROWTH_BOUND_KIB: u64 = 20 * 1024;

    let dir = tempfile::tempdir().unwrap();
    let server = crate::child::Launch::new(dir.path().join("app.db"))
        .env("BODY_BUFFER_BYTES", "1048576")
        .env("LOG_LEVEL", "ERROR")
        .start()
        .await;
    let pid = server.pid();
    let before = crate::child::vm_rss_kib(pid).expect("VmRSS");

    let (mut held, mut clients, mut streams_allowed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..CONNECTIONS {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
        tokio::spawn(connection);
        let mut client = settled(client, &server.url("/health/live")).await;
        let allowed = client.current_max_send_streams();
        streams_allowed.push(allowed);
        for _ in 0..allowed {
            let request = axum::http::Request::post(server.url("/webhook"))
                .header("content-length", "65536")
                .header("x-signature", "0".repeat(64))
                .body(())
                .expect("request");
            let (answer, mut body) = client.send_request(request, false).expect("a stream");
            body.send_data(Bytes::from(vec![b'a'; SENT_PER_STREAM]), false)
                .expect("send");
            held.push((answer, body));
            client = tokio::time::timeout(Duration::from_secs(10), client.ready())
                .await
                .expect("a free stream within 10 s")
                .expect("ready");
        }
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = crate::child::vm_rss_kib(pid).expect("VmRSS");

    assert!(
        after.saturating_sub(before) < GROWTH_BOUND_KIB,
        "resident memory grew from {before} KiB to {after} KiB with stalled bodies"
    );
    assert!(
        streams_allowed.iter().all(|allowed| *allowed == 16),
        "{streams_allowed:?}"
    );
    // The service still answers (the stalled bodies only wait; they hold no connection slot).
    let (status, _) = server.get_json("/health/ready").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    drop((held, clients));
}

/// The client once one request has had its answer, so that the server's SETTINGS (sent before
/// any answer) have arrived and `current_max_send_streams` is the server's figure.
async fn settled(
    client: h2::client::SendRequest<axum::body::Bytes>,
    live_url: &str,
) -> h2::client::SendRequest<axum::body::Bytes> {
    let mut client = client.ready().await.expect("ready");
    let request = axum::http::Request::get(live_url).body(()).expect("request");
    let (answer, _) = client.send_request(request, true).expect("a stream");
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer within 10 s")
        .expect("answer");
    assert_eq!(answer.status(), 200);
    client.ready().await.expect("ready")
}
