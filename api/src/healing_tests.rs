//! The self-healing loop over a few workloads, on SQLite and PostgreSQL: warm-up state,
//! one detection per sustained spike, the policy decision, the action only on the leader,
//! and both audit trails.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aegis_store::testing::TestDb;
use aegis_store::{ActionAuditQuery, DetectionStore, ExecutorStore, PredictionQuery};

use aegis_runtime::PolicyService;
use aegis_runtime::detector_service::DetectorService;
use aegis_runtime::guards::{ExecutorService, ExecutorSettings};
use aegis_runtime::healing::{HealingLoop, HealingSettings, LoopEvent};
use aegis_runtime::ratelimit::{Limiter, Limits};

pub(crate) async fn healing(db: &TestDb) -> Arc<HealingLoop> {
    let policies = Arc::new(PolicyService::new(db.store.clone()));
    healing_with(db, policies).await
}

/// The loop over `policies` (the defaults are installed into them).
pub(crate) async fn healing_with(db: &TestDb, policies: Arc<PolicyService>) -> Arc<HealingLoop> {
    let executor = ExecutorSettings {
        require_signature: false,
        ..ExecutorSettings::default()
    };
    build(db, policies, executor, settings()).await
}

/// Short windows and a quick warm-up, one tick a second.
fn settings() -> HealingSettings {
    let defaults = HealingSettings::default();
    HealingSettings {
        engine: aegis_engine::EngineConfig {
            window_ms: 10_000,
            resolution_ms: 1_000,
            baseline_ms: 60_000,
            baseline_resolution_ms: 1_000,
            warmup_ms: 15_000,
            ..defaults.engine.clone()
        },
        tick: Duration::from_secs(1),
        warmup_rows: 60,
        ..defaults
    }
}

/// The loop over `policies` (defaults installed) with a dry-run executor.
pub(crate) async fn build(
    db: &TestDb,
    policies: Arc<PolicyService>,
    executor: ExecutorSettings,
    settings: HealingSettings,
) -> Arc<HealingLoop> {
    policies.install_defaults_if_new().await.unwrap();
    policies.reload_database().await.unwrap();
    let detectors = DetectorService::start(db.store.clone(), 0.6).await.unwrap();
    let executor = Arc::new(ExecutorService::new(
        aegis_executor::Executor::DryRun,
        executor,
        Limiter::in_memory(Limits::default()),
    ));
    HealingLoop::new(settings, detectors, policies, executor, db.store.clone())
}

fn labels(ns: &str, deployment: &str) -> Vec<(String, String)> {
    vec![
        ("__name__".into(), "cpu_usage".into()),
        ("namespace".into(), ns.into()),
        ("deployment".into(), deployment.into()),
    ]
}

/// Seconds of normal load before the spike: the stream detector judges a point against
/// the series' own score history, which needs a few hundred points to settle.
const HISTORY: i64 = 900;

/// 960 s of CPU for three workloads, one sample per second; `production/api` pinned at
/// 0.95 from second 900 on. Returns every event.
pub(crate) async fn run(h: &Arc<HealingLoop>) -> (Vec<LoopEvent>, Vec<&'static str>) {
    // Saturday 03:00 UTC: no peak-hours rule in the way.
    let t0 = 1_795_834_800_000i64;
    let mut events = Vec::new();
    let mut states = Vec::new();
    let mut seed = 17u64;
    for s in 0..HISTORY + 60 {
        let at = t0 + s * 1_000;
        for (ns, d, base) in [
            ("production", "api", 0.30),
            ("production", "web", 0.40),
            ("kube-system", "coredns", 0.20),
        ] {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let noise = (seed % 1000) as f64 / 1000.0 * 0.04;
            let v = if d == "api" && s >= HISTORY {
                0.95 + noise / 4.0
            } else {
                base + noise
            };
            assert!(h.ingest_sample(&labels(ns, d), at, v));
        }
        events.extend(
            h.tick_at(at + 500, chrono::DateTime::from_timestamp_millis(at))
                .await,
        );
        states.push(h.stats(at + 500).state);
    }
    (events, states)
}

#[tokio::test]
async fn a_spike_is_decided_once_and_only_the_leader_acts() {
    for db in TestDb::both().await {
        let follower = healing(&db).await;
        follower.leader_flag().store(false, Ordering::SeqCst);
        let (events, states) = run(&follower).await;
        assert_eq!(states[0], "warming_up", "{}", db.name());
        assert_eq!(*states.last().unwrap(), "ready", "{}", db.name());
        let stats = follower.stats(0);
        assert_eq!(
            (stats.entities, stats.samples),
            (3, 3 * (HISTORY as u64 + 60)),
            "{}",
            db.name()
        );
        // The spike's rows went ahead of the normal ones (the screen, once the model was
        // fitted); the normal rows did not.
        assert!(
            (2..=60).contains(&stats.rows_urgent),
            "{}: {} of {} rows urgent",
            db.name(),
            stats.rows_urgent,
            stats.rows_scored
        );
        let spikes: Vec<&LoopEvent> = events
            .iter()
            .filter(|e| e.recommended_action == "scale_up")
            .collect();
        assert_eq!(spikes.len(), 1, "{}: {events:#?}", db.name());
        let spike = spikes[0];
        assert_eq!(spike.entity, "production/api");
        assert_eq!(
            (spike.decision.as_str(), spike.policy.as_deref()),
            ("ALLOW", Some("Allow Auto-Scale"))
        );
        assert_eq!(spike.action_status, "handed_off");
        assert!(spike.action_message.contains("not the leader"), "{spike:?}");
        assert!(spike.anomaly_score.unwrap() > 0.9, "{spike:?}");
        assert!(spike.explanation.contains("cpu_usage_zscore"), "{spike:?}");
        assert!(
            db.store
                .list_action_audit(&ActionAuditQuery {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty(),
            "a follower executes nothing itself"
        );
        // The leader executes what the follower handed over, once, through its guards.
        let leader = healing(&db).await;
        leader.tick_at(0, None).await;
        let audit = db
            .store
            .list_action_audit(&ActionAuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            audit.len(),
            2,
            "{}: intent and result of the handed-over action",
            db.name()
        );
        assert!(audit.iter().all(|r| r.target == "deployment/api"));
        assert!(db.store.claim_handoffs(10).await.unwrap().is_empty());

        // A leader fed the same telemetry decides the same; its own action meets the
        // cooldown of the handed-over one (the guards see every replica's actions).
        let leader = healing(&db).await;
        let (events, _) = run(&leader).await;
        let spike: Vec<&LoopEvent> = events
            .iter()
            .filter(|e| e.recommended_action == "scale_up")
            .collect();
        assert_eq!(spike.len(), 1, "{}: {events:#?}", db.name());
        assert_eq!(spike[0].action_status, "denied", "{:?}", spike[0]);
        assert!(
            spike[0].action_message.contains("cooldown"),
            "{:?}",
            spike[0]
        );
        let audit = db
            .store
            .list_action_audit(&ActionAuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let phases: Vec<(&str, &str)> = audit
            .iter()
            .map(|r| (r.phase.as_str(), r.status.as_str()))
            .collect();
        assert_eq!(
            phases,
            vec![
                ("result", "denied"),
                ("result", "dry_run"),
                ("intent", "pending")
            ],
            "{}",
            db.name()
        );
        assert!(
            audit
                .iter()
                .all(|r| r.actor.as_deref() == Some("aegis-engine"))
        );
        let predictions = db
            .store
            .predictions(&PredictionQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            predictions
                .iter()
                .any(|p| p.detector == "engine" && p.entity == "production/api"),
            "{}",
            db.name()
        );
        db.cleanup().await;
    }
}

/// Three scale-ups that do not help (the dry-run executor changes nothing, so the spike
/// outlives each verification) open `production/api`'s breaker; the fourth spike's action
/// is refused by the executor until an operator resets it. The spikes alternate between
/// CPU and latency, and each metric spikes again only after its score history has
/// rolled over: the detector judges a spike against what the series showed before, and
/// a second spike like one it has just seen is less of a surprise.
#[tokio::test]
async fn three_ineffective_scale_ups_trip_the_breaker() {
    for db in TestDb::both().await {
        let policies = Arc::new(PolicyService::new(db.store.clone()));
        let executor = ExecutorSettings {
            require_signature: false,
            cooldown: Duration::ZERO,
            blast_radius: 1_000,
            ..ExecutorSettings::default()
        };
        let mut settings = settings();
        settings.engine.hysteresis.calm_ticks = 10;
        settings.verify_after = Duration::from_secs(5);
        settings.breaker_threshold = 3;
        let h = build(&db, policies, executor, settings).await;
        // Saturday 03:00 UTC; spikes of 20 s: CPU, latency, CPU, latency.
        let t0 = 1_795_834_800_000i64;
        let spikes = [
            (HISTORY, "cpu_usage"),
            (HISTORY + 100, "latency_p99_ms"),
            (HISTORY + 2_200, "cpu_usage"),
            (HISTORY + 2_300, "latency_p99_ms"),
        ];
        let mut events = Vec::new();
        let mut seed = 5u64;
        for s in 0..HISTORY + 2_400 {
            let at = t0 + s * 1_000;
            for (d, metric, base, high) in [
                ("api", "cpu_usage", 0.30, 0.95),
                ("api", "latency_p99_ms", 120.0, 900.0),
                ("web", "cpu_usage", 0.40, 0.95),
            ] {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed % 1000) as f64 / 1000.0 * 0.1 * base;
                let spiking = d == "api"
                    && spikes
                        .iter()
                        .any(|(b, m)| *m == metric && (*b..b + 20).contains(&s));
                let v = if spiking { high + noise } else { base + noise };
                let mut l = labels("production", d);
                l[0].1 = metric.into();
                assert!(h.ingest_sample(&l, at, v));
            }
            events.extend(
                h.tick_at(at + 500, chrono::DateTime::from_timestamp_millis(at))
                    .await,
            );
        }
        let scale_ups: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| e.entity == "production/api" && e.recommended_action == "scale_up")
            .map(|e| (e.action_status.as_str(), e.action_message.as_str()))
            .collect();
        assert_eq!(scale_ups.len(), 4, "{}: {events:#?}", db.name());
        assert!(
            scale_ups[..3].iter().all(|(s, _)| *s == "dry_run"),
            "{scale_ups:?}"
        );
        assert_eq!(scale_ups[3].0, "denied", "{scale_ups:?}");
        assert!(
            scale_ups[3]
                .1
                .contains("circuit breaker open on production/api"),
            "{scale_ups:?}"
        );

        let audit = db
            .store
            .list_action_audit(&ActionAuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let verdicts: Vec<&str> = audit
            .iter()
            .rev()
            .filter(|r| r.phase == "verification")
            .map(|r| r.status.as_str())
            .collect();
        assert_eq!(verdicts, ["ineffective"; 3], "{}", db.name());
        assert_eq!(
            audit
                .iter()
                .filter(|r| r.phase == "breaker" && r.status == "open")
                .count(),
            1
        );
        let breaker = db.store.breaker("production/api").await.unwrap().unwrap();
        assert!(breaker.open && breaker.ineffective == 3, "{breaker:?}");
        assert!(db.store.breaker("production/web").await.unwrap().is_none());
        db.cleanup().await;
    }
}

/// A shadow set that would allow what the live set denies: its answer is recorded next to
/// the live one, and nothing is executed.
#[tokio::test]
async fn a_shadow_set_records_but_never_executes() {
    for db in TestDb::both().await {
        let live = tempfile::tempdir().unwrap();
        std::fs::write(
            live.path().join("freeze.yaml"),
            "name: Change Freeze\ntype: self_healing\neffect: deny\npriority: 1000\nactions: [\"*\"]\nresources: [\"cluster:production/*\"]\n",
        )
        .unwrap();
        let shadow = tempfile::tempdir().unwrap();
        std::fs::write(
            shadow.path().join("candidate.yaml"),
            "name: Candidate Scaling\ntype: self_healing\neffect: allow\nactions: [scale_up]\nconditions: {roles: [service]}\n",
        )
        .unwrap();
        let policies = Arc::new(
            PolicyService::new(db.store.clone())
                .with_policy_dir(Some(live.path().to_path_buf()))
                .with_shadow_dir(Some(shadow.path().to_path_buf())),
        );
        assert_eq!(policies.reload_files(true), Ok(true));
        assert_eq!(policies.reload_shadow(true), Ok(true));
        let h = healing_with(&db, Arc::clone(&policies)).await;
        let (events, _) = run(&h).await;
        let spike: Vec<&LoopEvent> = events
            .iter()
            .filter(|e| e.recommended_action == "scale_up")
            .collect();
        assert_eq!(spike.len(), 1, "{}: {events:#?}", db.name());
        assert_eq!(spike[0].decision, "DENY");
        assert_eq!(spike[0].policy.as_deref(), Some("Change Freeze"));
        // The shadow rows are written in the background.
        let mut rows = Vec::new();
        for _ in 0..50 {
            rows = db.store.list_shadow_decisions(true, 10).await.unwrap();
            if !rows.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rows.len(), 1, "{}: {rows:?}", db.name());
        let r = &rows[0];
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            ("scale_up", "cluster:production/deployment/api")
        );
        assert_eq!(
            (r.live_decision.as_str(), r.live_policy.as_deref()),
            ("DENY", Some("Change Freeze"))
        );
        assert_eq!(
            (r.shadow_decision.as_str(), r.shadow_policy.as_deref()),
            ("ALLOW", Some("Candidate Scaling"))
        );
        // Never executed: no action rows at all.
        assert!(
            db.store
                .list_action_audit(&ActionAuditQuery {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty(),
            "{}",
            db.name()
        );
        assert_eq!(policies.health().shadow.unwrap().policies, 1);
        db.cleanup().await;
    }
}

/// Each remediation leaves one decision record — evidence, the decision with why not, the
/// guard state, the request and the outcome — named by the action's audit rows.
#[tokio::test]
async fn a_remediation_leaves_a_decision_record_linked_from_the_audit() {
    for db in TestDb::both().await {
        let h = healing(&db).await;
        let (events, _) = run(&h).await;
        let spike = events
            .iter()
            .find(|e| e.recommended_action == "scale_up")
            .unwrap();
        assert_eq!(spike.action_status, "dry_run", "{}", db.name());
        let id = spike.decision_record.clone().unwrap();
        let row = db.store.decision_record(&id).await.unwrap().unwrap();
        assert_eq!(row.entity, "production/api");
        assert_eq!(row.outcome, "dry_run");
        assert_eq!(row.action_id, spike.action_id);
        let r: serde_json::Value = serde_json::from_str(&row.record).unwrap();
        let ev = &r["evidence"];
        assert!(ev["anomaly_score"].as_f64().unwrap() > 0.9, "{r}");
        assert_eq!(ev["contributions"][0]["feature"], "cpu_usage_zscore", "{r}");
        assert!(
            ev["features"]["cpu_usage_last"].as_f64().unwrap() > 0.9,
            "{r}"
        );
        let samples = ev["samples"].as_array().unwrap();
        assert!(
            samples
                .iter()
                .any(|s| s[0] == "cpu_usage" && s[2].as_f64().unwrap() > 0.9),
            "the raw samples behind it: {r}"
        );
        assert_eq!(r["decision"]["decision"], "ALLOW");
        assert_eq!(r["decision"]["policy"], "Allow Auto-Scale");
        assert_eq!(r["decision"]["question"]["action"], "scale_up");
        assert!(r["decision"]["why_not"].is_array());
        assert_eq!(r["guards"]["cooldown_secs"], 300, "{r}");
        assert_eq!(r["guards"]["blast_radius"]["actions_in_window"], 0, "{r}");
        assert_eq!(r["request"]["action"], "scale_deployment");
        assert_eq!(r["outcome"]["status"], "dry_run");
        // The audit names it.
        let audit = db
            .store
            .list_action_audit(&ActionAuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let intent = audit.iter().find(|a| a.phase == "intent").unwrap();
        let details: serde_json::Value = serde_json::from_str(&intent.details).unwrap();
        assert_eq!(details["decision_record"], id.as_str(), "{}", db.name());
        // And it is listed.
        let all = db.store.list_decision_records(None, 50).await.unwrap();
        assert!(all.iter().any(|x| x.id == id));
        db.cleanup().await;
    }
}

/// Issue 27, attack 7: series nothing arrived for in `series_idle` are forgotten by ingest's
/// registry, the engine's routes and the latest samples; one that comes back is taken again
/// under a new id.
#[tokio::test]
async fn idle_series_are_forgotten_everywhere() {
    let db = TestDb::sqlite().await;
    let policies = Arc::new(PolicyService::new(db.store.clone()));
    let executor = ExecutorSettings {
        require_signature: false,
        ..ExecutorSettings::default()
    };
    let h = build(
        &db,
        policies,
        executor,
        HealingSettings {
            series_idle: Duration::ZERO,
            ..settings()
        },
    )
    .await;
    let (ingest, mut rx) = aegis_ingest::Ingest::new(4, aegis_ingest::IngestLimits::default());
    let latest = std::sync::Mutex::new(aegis_ingest::LatestSamples::default());
    let now = chrono::Utc::now().timestamp_millis();
    let series = vec![aegis_ingest::remote_write::SeriesData {
        labels: vec![
            ("__name__".into(), "cpu_usage".into()),
            ("namespace".into(), "production".into()),
            ("pod".into(), "api-7d9f-x1".into()),
        ],
        samples: vec![(now, 0.5)],
    }];
    let body = snap::raw::Encoder::new()
        .compress_vec(&aegis_ingest::remote_write::encode_v1(&series))
        .unwrap();
    let send = |ingest: &aegis_ingest::Ingest| {
        ingest
            .remote_write(&body, aegis_ingest::RemoteWriteVersion::V1)
            .unwrap()
    };
    send(&ingest);
    let batch = rx.recv().await.unwrap();
    latest.lock().unwrap().apply_batch(&batch);
    h.apply(&batch, &ingest);
    assert_eq!(latest.lock().unwrap().len(), 1);
    // The registry's clock is in seconds: wait for the next one.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(h.forget_idle_series(&ingest, &latest), (1, 0));
    assert!(ingest.registry().lock().unwrap().labels(0).is_none());
    assert_eq!(ingest.registry().lock().unwrap().live(), 0);
    assert_eq!(latest.lock().unwrap().len(), 0);
    // It comes back: a new id, taken by the engine like any new series.
    send(&ingest);
    let batch = rx.recv().await.unwrap();
    h.apply(&batch, &ingest);
    assert!(ingest.registry().lock().unwrap().labels(1).is_some());
    db.cleanup().await;
}
