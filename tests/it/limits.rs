//! The listener's limits against hostile clients (issue #22): a body over the limit is refused with 413 before it
//! is read whole (declared or streamed), a client that sends its headers one byte at a time is dropped within the
//! header timeout while others are served, a 405 names the allowed methods, and one client cannot hold more than
//! its share of connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, ADMIN};

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads what the server sends until it closes or `within` passes; the status line's code.
async fn status_of(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tokio::time::timeout(deadline - Instant::now(), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Ok(Err(_)) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_before_it_is_read_whole() {
    let app = TestApp::spawn().await;
    // Declared: 2 MB announced, a few bytes sent — the answer comes without the rest.
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!("POST /api/v1/deployments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{{");
    s.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(status_of(&mut s, Duration::from_secs(5)).await, Some(413));

    // Streamed (chunked, no length): 1.1 MB sent and the stream held open — still answered.
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!("POST /api/v1/deployments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..18 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        s.write_all(&chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    assert_eq!(status_of(&mut s, Duration::from_secs(5)).await, Some(413));

    // The JSON error names the limit (read as a client that reads an early answer does; the server closes the
    // connection rather than read the rest); nothing was created.
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!("POST /api/v1/deployments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{{");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap_or_default();
    assert_eq!(body["error"], "payload_too_large", "{answer}");
    assert!(body["message"].as_str().unwrap_or_default().contains("max_body_bytes"), "{answer}");
    let (_, list) = app.get("/api/v1/deployments", Some(ADMIN)).await;
    assert_eq!(list["total"], 0, "{list}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_one_byte_at_a_time_is_dropped_while_others_are_served() {
    let app = TestApp::spawn_with(|c| c.http.header_read = Duration::from_secs(2)).await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    let started = Instant::now();
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed_after = None;
    for byte in request.iter() {
        // Others are served meanwhile.
        let (status, _) = app.get("/api/v1/deployments", Some(ADMIN)).await;
        assert_eq!(status, 200);
        if slow.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(250), slow.read(&mut probe)).await {
            closed_after = Some(started.elapsed());
            assert!(n == 0 || String::from_utf8_lossy(&probe[..n]).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&probe[..n]));
            break;
        }
    }
    let closed_after = closed_after.expect("the slow client was never dropped");
    assert!(closed_after < Duration::from_secs(6), "dropped only after {closed_after:?} (header timeout 2 s)");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_names_the_allowed_methods() {
    let app = TestApp::spawn().await;
    let resp = app.client.put(app.url("/api/v1/deployments")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD, POST");
    let resp = app.client.patch(app.url("/api/v1/deployments/shop")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("DELETE"), "{allow}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_more_than_its_share_of_connections() {
    let app = TestApp::spawn_with(|c| c.http.per_client = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    // The fifth is accepted by the kernel and closed at once by the server.
    let mut fifth = TcpStream::connect(addr(&app)).await.unwrap();
    let _ = fifth.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf)).await.expect("closed, not left hanging").unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    // Closing one frees a place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = TcpStream::connect(addr(&app)).await.unwrap();
    again.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(status_of(&mut again, Duration::from_secs(5)).await, Some(200));
    drop(held);
    app.stop().await;
}
