//! `aegis approvals list|approve ID|reject ID --reason TEXT`: what a person on call uses to
//! decide actions held for approval, against a running server's API (`--url`, default
//! `AEGIS_URL` or `http://127.0.0.1:3000`), with a token from `AEGIS_TOKEN` — an access
//! token or a service token — so approving needs neither curl nor a browser.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalsAction {
    /// List approvals (`status`: pending by default).
    List {
        /// `pending`, `approved`, `rejected`, `expired`, or `all`.
        status: String,
        /// Print the API's JSON.
        json: bool,
    },
    /// Approve one.
    Approve {
        /// The approval id.
        id: String,
        /// Why (optional, recorded).
        reason: Option<String>,
    },
    /// Reject one.
    Reject {
        /// The approval id.
        id: String,
        /// Why (recorded).
        reason: String,
    },
}

/// Calls the API; the answer's status and JSON.
async fn call(
    base: &str,
    token: &str,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let client =
        aegis_core::http_client::client::<Full<Bytes>>().context("cannot build the HTTP client")?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut request = http::Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::USER_AGENT, "aegis-cli");
    let body = match body {
        Some(b) => {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(b.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let request = request
        .body(body)
        .with_context(|| format!("bad URL `{url}`"))?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .with_context(|| format!("{url} did not answer within 30 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"text": String::from_utf8_lossy(&bytes)}));
    Ok((status, value))
}

/// The API's error message, or the status.
fn failure(status: u16, body: &Value) -> anyhow::Error {
    let message = body["error"]["message"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    anyhow::anyhow!("the server answered {status}: {message}")
}

/// One approval as a line: id, status, action on entity, policy, expiry, what it would do.
fn line(a: &Value) -> String {
    let dry = a["dry_run"]["message"].as_str().unwrap_or("");
    format!(
        "{}  {:<8}  {} {}  policy={}  expires={}  requested_by={}\n    {}",
        a["id"].as_str().unwrap_or("?"),
        a["status"].as_str().unwrap_or("?"),
        a["action"].as_str().unwrap_or("?"),
        a["entity"].as_str().unwrap_or("?"),
        a["policy"].as_str().unwrap_or("-"),
        a["expires_at"].as_str().unwrap_or("-"),
        a["requested_by"].as_str().unwrap_or("-"),
        dry,
    )
}

/// Runs the command.
pub async fn run(
    url: &str,
    token: Option<String>,
    action: ApprovalsAction,
) -> anyhow::Result<ExitCode> {
    let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
        bail!("set AEGIS_TOKEN to an access token (POST /api/v1/auth/login) or a service token");
    };
    match action {
        ApprovalsAction::List { status, json } => {
            let path = if status == "all" {
                "/api/v1/approvals?limit=500".to_owned()
            } else {
                format!("/api/v1/approvals?status={status}&limit=500")
            };
            let (code, body) = call(url, &token, http::Method::GET, &path, None).await?;
            if code != 200 {
                return Err(failure(code, &body));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(ExitCode::SUCCESS);
            }
            let items = body["approvals"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("no {status} approvals");
            }
            for a in &items {
                println!("{}", line(a));
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsAction::Approve { id, reason } => {
            decide(url, &token, &id, "approve", reason).await
        }
        ApprovalsAction::Reject { id, reason } => {
            decide(url, &token, &id, "reject", Some(reason)).await
        }
    }
}

async fn decide(
    url: &str,
    token: &str,
    id: &str,
    verb: &str,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("`{id}` is not an approval id");
    }
    if reason.as_deref().is_some_and(|r| r.len() > 2_000) {
        bail!("the reason may be at most 2000 bytes");
    }
    let body = reason.map(|r| json!({"reason": r}));
    let path = format!("/api/v1/approvals/{id}/{verb}");
    let (code, answer) = call(url, token, http::Method::POST, &path, body).await?;
    if !(200..300).contains(&code) {
        return Err(failure(code, &answer));
    }
    let approval = &answer["approval"];
    println!(
        "{} {}: {}",
        approval["id"].as_str().unwrap_or(id),
        approval["status"].as_str().unwrap_or(verb),
        answer["action"]["message"]
            .as_str()
            .or_else(|| answer["message"].as_str())
            .unwrap_or("")
    );
    Ok(ExitCode::SUCCESS)
}
