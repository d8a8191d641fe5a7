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
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let texts: Vec<&str> = events.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert!(text.contains("event: log"), "{text}");
    assert!(texts.iter().any(|t| t.contains("destroy requested")), "{texts:?}");
    assert_eq!(texts.last(), Some(&"destroyed"), "{texts:?}");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates: {seqs:?}");
}
