//! The same code against a remote SurrealDB server (`ws://`): state is shared by two agents on one
//! database and survives an agent restart. Needs the `surreal` server binary (.ci/run installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pvedeploy::config::Secret;

use crate::helpers::{test_config, tool, TestApp, READER};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_share_one_remote_database() {
    let Some(surreal) = tool("surreal") else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Server(
        Command::new(surreal)
            .args(["start", "--bind", &format!("127.0.0.1:{port}"), "--user", "root", "--pass", "remote-test-pass", "--log", "warn", "memory"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("surreal starts"),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "surreal did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = |dir: &std::path::Path| {
        let mut c = test_config(dir);
        c.database.url = format!("ws://127.0.0.1:{port}");
        c.database.credentials = Some(("root".into(), Secret::new("remote-test-pass".into())));
        c
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestApp::spawn_config(config(dir_a.path())).await;
    let b = TestApp::spawn_config(config(dir_b.path())).await;
    let created = a.create("shared").await;
    let (s, seen) = b.get("/api/v1/deployments/shared", Some(READER)).await;
    assert_eq!((s, &seen["id"]), (200, &created["id"]), "agent b sees what agent a wrote");
    let (s, body) = b.post("/api/v1/deployments", Some(crate::helpers::ADMIN), &crate::helpers::valid_request("shared")).await;
    assert_eq!((s, body["fields"][0]["rule"].as_str()), (422, Some("unique")), "the name claim is shared too");
    a.stop().await;
    let a2 = TestApp::spawn_config(config(dir_a.path())).await;
    assert_eq!(a2.count_deployments().await, 1);
    a2.stop().await;
    b.stop().await;
    drop(server);
}
