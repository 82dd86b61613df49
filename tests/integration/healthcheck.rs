//! `usermgmt healthcheck`, the containers' health check.

use crate::support::{TestServer, free_port};

async fn healthcheck(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_usermgmt"))
            .arg("healthcheck")
            .args(args)
            .output()
            .expect("run usermgmt healthcheck")
    })
    .await
    .expect("healthcheck task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_passes_on_a_serving_server_and_fails_without_one() {
    let server = TestServer::start().await;
    let url = format!("http://{}", server.addr);
    let serving = healthcheck(vec!["--url".into(), url.clone()]).await;
    assert!(serving.status.success(), "{serving:?}");
    let per_service = healthcheck(vec![
        "--url".into(),
        url,
        "--service".into(),
        "usermgmt.v1.UserService".into(),
    ])
    .await;
    assert!(per_service.status.success(), "{per_service:?}");

    let nobody = healthcheck(vec![
        "--url".into(),
        format!("http://127.0.0.1:{}", free_port()),
        "--timeout-ms".into(),
        "1000".into(),
    ])
    .await;
    assert!(!nobody.status.success(), "{nobody:?}");
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("cannot connect"),
        "{nobody:?}"
    );
}
