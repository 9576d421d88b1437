//! Actions held for a person's approval: holding with a dry run, expiring, approving
//! (every guard again, the policy as it is now) or rejecting, and four-eyes.

use super::*;

impl ExecutorService {
    /// Holds `req` for approval: queues it with the dry-run of what it would do and writes
    /// an `approval`/`pending` row to the action audit chain.
    pub(super) async fn hold_for_approval(
        &self,
        store: &Store,
        req: &ActionRequest,
        actor: Option<&str>,
        question: &PolicyRequest,
        policy: Option<&str>,
    ) -> Result<ExecuteResponse, Error> {
        let preview = Executor::DryRun.execute(req, self.settings.scale).await;
        let dry_run = json!({"message": preview.message, "details": preview.details});
        let expires_at = Utc::now()
            + chrono::Duration::from_std(self.settings.approval_timeout).unwrap_or_default();
        let approval = store
            .create_approval(&aegis_store::NewApproval {
                entity: format!("{}/{}", req.namespace, req.target),
                action: req.action.as_str().to_owned(),
                policy: policy.map(str::to_owned),
                requested_by: actor.map(str::to_owned),
                request: serde_json::to_string(req).map_err(Error::internal)?,
                question: serde_json::to_string(question).map_err(Error::internal)?,
                dry_run: dry_run.to_string(),
                expires_at,
            })
            .await?;
        let message = format!(
            "held for approval (policy `{}`) until {}: approve or reject at /api/v1/approvals/{}",
            policy.unwrap_or("-"),
            expires_at.to_rfc3339(),
            approval.id
        );
        let entry = audit_entry(
            &approval.id,
            "approval",
            Some(req),
            "pending",
            actor,
            message.clone(),
            json!({"approval_id": approval.id, "policy": policy, "expires_at": expires_at,
                   "dry_run": dry_run,
                   "decision_record": question.context.metadata.get("decision_record")}),
        );
        let receipts = store.append_action_audit(&[entry]).await?;
        metrics::counter!(metric_names::ACTIONS_TOTAL, "action" => req.action.as_str(),
            "namespace" => self.namespace_label(&req.namespace), "status" => "awaiting_approval")
        .increment(1);
        Ok(ExecuteResponse {
            id: approval.id.clone(),
            status: "awaiting_approval",
            audit_id: receipts.first().map_or(0, |r| r.id),
            message,
            details: json!({"approval_id": approval.id, "expires_at": expires_at,
                            "dry_run": dry_run}),
            called_at: None,
        })
    }

    /// Turns pending approvals past their expiry into rejections (`expired`), each with an
    /// audit row; returns how many.
    pub async fn expire_approvals(&self, store: &Store) -> Result<usize, Error> {
        let expired = store.expire_approvals(Utc::now()).await?;
        let entries: Vec<NewActionAudit> = expired
            .iter()
            .map(|a| {
                let req = serde_json::from_str::<ActionRequest>(&a.request).ok();
                audit_entry(
                    &a.id,
                    "approval",
                    req.as_ref(),
                    "expired",
                    Some("aegis"),
                    format!("no decision before {}: rejected", a.expires_at.to_rfc3339()),
                    json!({"approval_id": a.id}),
                )
            })
            .collect();
        if !entries.is_empty() {
            store.append_action_audit(&entries).await?;
        }
        Ok(expired.len())
    }

    /// Approves (`approve = true`) or rejects a pending approval as `by`. An approved action
    /// then goes through every guard again — the policy as it is now, rate, cooldown,
    /// blast radius — and is carried out; the answer is the executor's.
    pub async fn decide_approval(
        &self,
        store: &Store,
        policies: &PolicyService,
        id: &str,
        approve: bool,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(aegis_store::Approval, Option<ExecuteResponse>), Error> {
        self.expire_approvals(store).await?;
        let status = if approve { "approved" } else { "rejected" };
        if approve && self.settings.four_eyes {
            self.refuse_own_approval(store, id, by).await?;
        }
        let Some(approval) = store
            .decide_approval(id, status, Some(by), reason, Utc::now())
            .await?
        else {
            return Err(Error::Refused(match store.get_approval(id).await? {
                None => Refusal::new(RefusalKind::NotFound, format!("no approval with id `{id}`")),
                Some(a) => Refusal::new(
                    RefusalKind::Conflict,
                    format!(
                        "approval `{id}` is {} already{}",
                        a.status,
                        a.decided_by
                            .as_deref()
                            .map(|b| format!(" (by {b})"))
                            .unwrap_or_default()
                    ),
                ),
            }));
        };
        let req: ActionRequest =
            serde_json::from_str(&approval.request).map_err(Error::internal)?;
        let question: PolicyRequest =
            serde_json::from_str(&approval.question).map_err(Error::internal)?;
        let entry = audit_entry(
            &approval.id,
            "approval",
            Some(&req),
            status,
            Some(by),
            reason.map_or_else(|| format!("{status} by {by}"), str::to_owned),
            json!({"approval_id": approval.id, "requested_by": approval.requested_by}),
        );
        store.append_action_audit(&[entry]).await?;
        if !approve {
            return Ok((approval, None));
        }
        // A fresh request: the stored one's timestamp and nonce belong to the moment it
        // was asked for.
        let req = ActionRequest {
            timestamp: Utc::now(),
            nonce: uuid::Uuid::now_v7().to_string(),
            ..req
        };
        let actor = approval.requested_by.clone();
        let response = self
            .guarded(
                store,
                policies,
                req,
                actor.as_deref(),
                question,
                Standing::Approved(&approval.id),
            )
            .await?;
        store
            .set_approval_action(&approval.id, &response.id)
            .await?;
        let approval = store.get_approval(id).await?.unwrap_or(approval);
        Ok((approval, Some(response)))
    }

    /// Four-eyes: the caller whose request was held cannot approve it (withdrawing it with a
    /// rejection stays open to them). The refused attempt is on record.
    pub(super) async fn refuse_own_approval(
        &self,
        store: &Store,
        id: &str,
        by: &str,
    ) -> Result<(), Error> {
        let Some(approval) = store.get_approval(id).await? else {
            return Ok(());
        };
        if approval.status != "pending" || approval.requested_by.as_deref() != Some(by) {
            return Ok(());
        }
        let req: Option<ActionRequest> = serde_json::from_str(&approval.request).ok();
        let entry = audit_entry(
            &approval.id,
            "approval",
            req.as_ref(),
            "refused",
            Some(by),
            format!("four-eyes: {by} asked for this action and cannot approve it"),
            json!({"approval_id": approval.id, "requested_by": approval.requested_by}),
        );
        store.append_action_audit(&[entry]).await?;
        Err(Refusal::new(RefusalKind::Forbidden, format!(
            "four-eyes: you asked for this action, so someone else must approve it (approval `{id}`; approval_four_eyes = false turns this off)"
        )).into())
    }
}
