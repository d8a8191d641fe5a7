//! `GET /deployments/{id}/logs?follow=true`: a live Server-Sent Events stream that delivers lines appended while open.

use std::time::Duration;

use futures_util::StreamExt;

use crate::helpers::{TestApp, ADMIN, READER};

#[tokio::test]
async fn the_stream_delivers_lines_appended_while_open_and_ends_when_settled() {
    let app = TestApp::spawn().await;
    let d = app.create("live").await;
    let id = d["id"].as_str().unwrap().to_string();
    let resp = app.client.get(app.url(&format!("/api/v1/deployments/{id}/logs?follow=true"))).bearer_auth(READER).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    // the backlog arrives first
    while !text.contains("requested by admin") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("backlog in time").expect("stream open").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // now append lines while the stream is open: destroying writes several and settles the deployment
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut t = String::new();
        while let Some(chunk) = body.next().await {
            t.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        t
    })
    .await
    .expect("the stream ends once the deployment settles");
    text.push_str(&rest);
    // Events as sent: (type, data).
    let events: Vec<(String, serde_json::Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let kind = block.lines().find_map(|l| l.strip_prefix("event: "))?.to_string();
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((kind, serde_json::from_str(data).unwrap()))
        })
        .collect();
    let lines: Vec<&serde_json::Value> = events.iter().filter(|(k, _)| k == "log").map(|(_, d)| d).collect();
    let texts: Vec<&str> = lines.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| t.contains("destroy requested")), "{texts:?}");
    assert_eq!(texts.last(), Some(&"destroyed"), "{texts:?}");
    let seqs: Vec<i64> = lines.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates: {seqs:?}");
    // The stream ends with what the deployment settled as.
    let (kind, end) = events.last().unwrap();
    assert_eq!((kind.as_str(), end["status"].as_str()), ("status", Some("destroyed")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stretch_is_filled_with_progress_events() {
    // Without a cluster a deployment stays pending (busy) and silent after its first lines.
    let app = TestApp::spawn().await;
    let d = app.create("quiet").await;
    let id = d["id"].as_str().unwrap().to_string();
    let resp = app.client.get(app.url(&format!("/api/v1/deployments/{id}/logs?follow=true"))).bearer_auth(READER).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: progress") {
        let chunk = tokio::time::timeout(Duration::from_secs(15), body.next()).await.expect("a progress event during the silence").expect("stream open").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let block = text.split("\n\n").find(|b| b.contains("event: progress")).unwrap();
    let data: serde_json::Value = serde_json::from_str(block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert!(data["step"].is_string() && data["waiting_seconds"].as_u64().unwrap() >= 4, "{data}");
}
