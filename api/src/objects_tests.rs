//! Models through object storage: a local folder shared by two replicas, and an S3 API
//! (moto's server, from PyPI) started by the test.

use std::time::Duration;

use aegis_store::testing::TestDb;

use aegis_runtime::detector_service::DetectorService;
use aegis_store::objects::Objects;

#[tokio::test]
async fn replicas_with_separate_databases_share_models_through_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("objects").display().to_string();
    let first_db = TestDb::sqlite().await;
    let first = DetectorService::start_with(
        first_db.store.clone(),
        Some(Objects::open(&url).unwrap()),
        0.6,
    )
    .await
    .unwrap();
    let version = first.anomaly().file.version.clone();
    assert!(
        dir.path()
            .join(format!("objects/models/isolation-forest/{version}.json"))
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("objects/models/isolation-forest/LATEST")).unwrap(),
        version
    );
    // A second replica with its own (empty) database loads the same models.
    let second_db = TestDb::postgres().await;
    let second = DetectorService::start_with(
        second_db.store.clone(),
        Some(Objects::open(&format!("file://{url}")).unwrap()),
        0.6,
    )
    .await
    .unwrap();
    assert_eq!(second.anomaly().file.version, version);
    assert_eq!(
        second.classifier().file.version,
        first.classifier().file.version
    );
    // A retrained model becomes LATEST for everyone.
    let rows = aegis_detectors::synthetic::healthy_rows(3, 600);
    for i in 0..rows.rows() {
        first.remember_normal(rows.row(i));
    }
    let newer = first.retrain().await.unwrap().unwrap();
    let third = DetectorService::start_with(
        second_db.store.clone(),
        Some(Objects::open(&url).unwrap()),
        0.6,
    )
    .await
    .unwrap();
    assert_eq!(third.anomaly().file.version, newer);
    first_db.cleanup().await;
    second_db.cleanup().await;
}

/// Kills the server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn models_round_trip_through_an_s3_api() {
    let python = std::env::var("AEGIS_TEST_PYTHON")
        .unwrap_or_else(|_| "/var/tmp/aegis-venv/bin/python".into());
    let moto = std::path::Path::new(&python).with_file_name("moto_server");
    assert!(
        moto.exists(),
        "{} is missing (pip install 'moto[server]'; scripts/test installs it)",
        moto.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        std::process::Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    // Create the bucket with a plain request (moto accepts unsigned ones).
    let client = reqwest_like_put(&endpoint, "/aegis-models").await;
    assert!(client, "moto did not come up on {endpoint}");
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
        ("aws_virtual_hosted_style_request", "false"),
    ];
    let objects = Objects::open_with("s3://aegis-models/prod/aegis", &options).unwrap();
    let db = TestDb::sqlite().await;
    let first = DetectorService::start_with(db.store.clone(), Some(objects.clone()), 0.6)
        .await
        .unwrap();
    let keys = objects.list("models").await.unwrap();
    assert!(
        keys.iter().any(|k| k.ends_with("isolation-forest/LATEST")),
        "{keys:?}"
    );
    let loaded =
        aegis_runtime::detector_service::latest_model_object(&objects, "failure-classifier")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{keys:?}"));
    assert_eq!(loaded.version, first.classifier().file.version);
    let other_db = TestDb::sqlite().await;
    let second = DetectorService::start_with(other_db.store.clone(), Some(objects), 0.6)
        .await
        .unwrap();
    assert_eq!(second.anomaly().file.version, first.anomaly().file.version);
    db.cleanup().await;
    other_db.cleanup().await;
}

/// `PUT path` with retries while the server starts; whether it answered 2xx.
async fn reqwest_like_put(endpoint: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://").to_string();
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
            let req = format!(
                "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer).await;
                if answer.starts_with("HTTP/1.1 2") || answer.starts_with("HTTP/1.0 2") {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
