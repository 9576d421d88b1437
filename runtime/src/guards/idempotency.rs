//! Idempotency keys: a retry gets the first answer, never a second action.

use super::*;

/// The answer to a retry with an idempotency key already used: the first answer, or 409
/// when the first action has no result (still running, or aegis stopped during it).
pub(super) fn stored_answer(key: &str, answer: Value) -> Result<ExecuteResponse, Error> {
    if answer["status"] == "pending" {
        return Err(Refusal::new(
            RefusalKind::Conflict,
            format!(
                "idempotency key `{key}`: action {} was started and has no result (still running, \
             or aegis stopped during it; see /audit/logs); it is not run again",
                answer["id"].as_str().unwrap_or("?")
            ),
        )
        .into());
    }
    let response: ExecuteResponse = serde_json::from_value::<StoredAnswer>(answer)
        .map(StoredAnswer::into_response)
        .map_err(Error::internal)?;
    Ok(response)
}

/// An idempotent answer as stored.
#[derive(serde::Deserialize)]
struct StoredAnswer {
    id: String,
    status: String,
    audit_id: i64,
    message: String,
    details: Value,
}

impl StoredAnswer {
    fn into_response(self) -> ExecuteResponse {
        let status = match self.status.as_str() {
            "succeeded" => Status::Succeeded.as_str(),
            "dry_run" => Status::DryRun.as_str(),
            "denied" => Status::Denied.as_str(),
            _ => Status::Failed.as_str(),
        };
        ExecuteResponse {
            id: self.id,
            status,
            audit_id: self.audit_id,
            message: self.message,
            details: self.details,
            called_at: None,
        }
    }
}
