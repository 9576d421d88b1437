//! Helpers shared by the binary's integration tests: run `aegis`, talk HTTP to it, stop it.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    dead_code,
    reason = "test helpers fail the test loudly; not every test file uses every helper"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_aegis");

/// The path of the program `name` on `PATH`.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A command with a clean `AEGIS_*` environment, run in `dir`.
pub fn aegis(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("AEGIS_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bare HTTP/1.1 GET; returns status and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `/health` until the server answers or 20 s pass.
pub fn wait_healthy(child: &mut Child, port: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(answer) = http_get(port, "/health") {
            return answer;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("aegis exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "aegis did not answer on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM and returns how long the process took to exit, and its output.
pub fn terminate(child: Child) -> (Duration, Output) {
    let pid = child.id().to_string();
    let started = Instant::now();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    (started.elapsed(), output)
}

/// A bare HTTP/1.1 request with optional bearer token and JSON body; returns status, the
/// raw head and the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    http_raw(port, method, path, &headers, body.as_bytes())
}

/// `aegis user create --role admin --password-stdin` on database `db`; its output.
pub fn create_admin(dir: &Path, db: &str, email: &str, password: &str) -> Output {
    let mut child = aegis(dir)
        .args([
            "user",
            "create",
            "--email",
            email,
            "--role",
            "admin",
            "--password-stdin",
        ])
        .env("AEGIS_DATABASE_URL", db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

/// Logs in; the access token.
pub fn login(port: u16, email: &str, password: &str) -> String {
    let body = serde_json::json!({"email": email, "password": password}).to_string();
    let (status, _, answer) = http(port, "POST", "/api/v1/auth/login", None, Some(&body)).unwrap();
    assert_eq!(status, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// Creates a service token named `name` as `admin`; the token.
pub fn service_token(port: u16, admin: &str, name: &str) -> String {
    let body = serde_json::json!({"name": name}).to_string();
    let (status, _, answer) = http(
        port,
        "POST",
        "/api/v1/service-tokens",
        Some(admin),
        Some(&body),
    )
    .unwrap();
    assert_eq!(status, 201, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// A fresh PostgreSQL database on the test server; dropped by the returned guard.
pub struct FreshDb {
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl FreshDb {
    pub fn new(tag: &str) -> Self {
        let admin = std::env::var("AEGIS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("aegis_{tag}_{}_{}", std::process::id(), free_port());
        let out = std::process::Command::new("psql")
            .args([&admin, "-qc", &format!("CREATE DATABASE {name}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let base = admin.rsplit_once('/').unwrap().0.to_string();
        Self {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                &self.admin,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// 3 days of decisions (2 + 3 + 1) and 2 days of action events.
pub async fn populate_audit(url: &str) -> aegis_store::Store {
    populate_audit_with(url, None).await
}

/// [`populate_audit`], signing the rows with `keys` when given (the keyed chain).
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub async fn populate_audit_with(
    url: &str,
    keys: Option<aegis_store::AuditKeys>,
) -> aegis_store::Store {
    use aegis_store::{AuditLog, NewActionAudit, NewPolicyAudit, Store, StoreOptions};
    use chrono::{TimeZone, Utc};
    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    let store = match keys {
        Some(k) => store.with_audit_keys(k),
        None => store,
    };
    let at = |d: u32, h: u32| Some(Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap());
    let decision = |t, n: usize| NewPolicyAudit {
        created_at: t,
        request_id: n.is_multiple_of(2).then(|| format!("req-{n}")),
        policy_type: "self_healing".into(),
        action: "scale_up".into(),
        resource: "cluster:production".into(),
        user_id: Some("ai-engine".into()),
        role: Some("service".into()),
        decision: "ALLOW".into(),
        policy_id: None,
        policy_name: Some("Allow Auto-Scale".into()),
        reason: format!("decision {n}"),
        context: serde_json::json!({"severity": "high", "n": n}),
        evaluated_in_us: n as i64,
    };
    let times = [
        at(20, 10),
        at(20, 12),
        at(21, 9),
        at(21, 10),
        at(21, 23),
        at(22, 1),
    ];
    let rows: Vec<NewPolicyAudit> = times
        .iter()
        .enumerate()
        .map(|(n, t)| decision(*t, n))
        .collect();
    store.append_policy_audit(&rows).await.unwrap();
    let event = |t, phase: &str| NewActionAudit {
        created_at: t,
        action_id: "a-1".into(),
        phase: phase.into(),
        action: "scale_deployment".into(),
        namespace: "production".into(),
        target: "api".into(),
        status: "succeeded".into(),
        actor: Some("svc".into()),
        reason: None,
        details: serde_json::json!({"replicas": 4}),
    };
    store
        .append_action_audit(&[event(at(20, 11), "intent"), event(at(21, 11), "result")])
        .await
        .unwrap();
    store
}

/// Runs `aegis ARGS` in `dir` on database `db` with extra `env`; exit code, stdout, stderr.
pub fn run_with(
    dir: &Path,
    db: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let out = aegis(dir)
        .args(args)
        .env("AEGIS_DATABASE_URL", db)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_with`] without extra environment.
pub fn run(dir: &Path, db: &str, args: &[&str]) -> (i32, String, String) {
    run_with(dir, db, &[], args)
}

/// A bare HTTP/1.1 request with any headers and a byte body; status, raw head and body.
pub fn http_raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    // A server may answer (413) and close before the whole body is sent.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((status, head.to_owned(), body.to_owned()))
}

/// A TCP proxy in front of a dependency (PostgreSQL, Redis) that a test can cut: while cut,
/// open connections are shut and new ones are closed at once, as when the server stops.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Forwards a new local port to `target`.
    pub fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut kept = open2.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                drop(kept);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, up, open }
    }

    /// Stops forwarding: every open connection is shut, new ones are closed at once.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The file `dir/server.log`, opened for appending: a server's stdout and stderr go there
/// (a pipe nobody reads would fill and stall it).
pub fn server_log(dir: &Path) -> (std::fs::File, std::fs::File) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    (log.try_clone().unwrap(), log)
}

/// The request ids of every decision in the audit trail of `db`.
pub async fn recorded_request_ids(db: &str) -> std::collections::BTreeSet<String> {
    use aegis_store::{PolicyAuditQuery, PolicyStore, Store, StoreOptions};
    let store = Store::connect(db, &StoreOptions::default()).await.unwrap();
    let ids = store
        .list_policy_audit(&PolicyAuditQuery {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.request_id)
        .collect();
    store.close().await;
    ids
}

/// One request a [`Receiver`] took: its headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// A webhook receiver on `127.0.0.1:port`: answers 200 to every request and keeps it.
pub struct Receiver {
    pub port: u16,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts listening on `port` (0: any).
    pub fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let sink = std::sync::Arc::clone(&sink);
                std::thread::spawn(move || {
                    if let Some(r) = read_request(&mut stream) {
                        sink.lock().unwrap().push(r);
                    }
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
            }
        });
        Self { port, got }
    }

    /// What it took so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request with a Content-Length body.
fn read_request(stream: &mut TcpStream) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: std::collections::BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        path,
        headers,
        body: buf[head_end..].to_vec(),
    })
}

/// The admin every [`KubeServe`] database holds: `ops@example.com` with this password.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// `aegis serve` in `kubernetes` mode against the in-test fake API server: a temporary
/// folder with an SQLite database holding an admin, the fake server (kept running by its
/// own runtime) and a kubeconfig pointing at it.
pub struct KubeServe {
    /// Runs the fake API server.
    pub runtime: tokio::runtime::Runtime,
    /// The fake cluster's state and the calls it took.
    pub cluster: aegis_executor::testing::Shared,
    /// The working folder (database, kubeconfig, peers' files).
    pub dir: tempfile::TempDir,
    /// The database URL.
    pub db: String,
}

impl KubeServe {
    /// The fake server over `cluster`, and a database with the admin.
    pub fn new(cluster: aegis_executor::testing::Cluster) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (url, shared) = runtime.block_on(aegis_executor::testing::start(cluster));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            aegis_executor::testing::kubeconfig(&url),
        )
        .unwrap();
        let db = format!("sqlite://{}", dir.path().join("aegis.db").display());
        let out = create_admin(dir.path(), &db, "ops@example.com", ADMIN_PASSWORD);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            runtime,
            cluster: shared,
            dir,
            db,
        }
    }

    /// `aegis serve` on `port` in `kubernetes` mode, namespace `production` allowed;
    /// callers add their own settings.
    pub fn command(&self, port: u16) -> Command {
        let mut cmd = aegis(self.dir.path());
        cmd.arg("serve")
            .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
            .env("AEGIS_DATABASE_URL", &self.db)
            .env("AEGIS_JWT_SECRET", "e2e-secret-e2e-secret-e2e-secret-42")
            .env("AEGIS_EXECUTOR_MODE", "kubernetes")
            .env(
                "AEGIS_ACTION_SECRET",
                "e2e-action-secret-e2e-action-secret-42",
            )
            .env("AEGIS_KUBECONFIG_PATH", self.dir.path().join("kubeconfig"))
            .env("AEGIS_ALLOWED_NAMESPACES", "production")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    /// The paths (without query) of the PATCH requests the cluster took, in order.
    pub fn patches(&self) -> Vec<String> {
        self.cluster
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == "PATCH")
            .map(|c| c.path.split('?').next().unwrap_or_default().to_owned())
            .collect()
    }
}
