//! `aegis demo`: generated metrics and logs for a few workloads, with a CPU spike, a crash
//! loop and a memory leak whose remedy (a restart) falls in peak hours, replayed through
//! the real pipeline against the dry-run executor, and a readable report.
//!
//! The telemetry is what a cluster would send: cAdvisor-style pod labels
//! (`namespace`, `pod` = `NAME-<template hash>-<suffix>`), CPU and memory as fractions of
//! the limit, p99 latency, error rate, a restart counter, and application logs.

use std::collections::BTreeMap;
use std::process::ExitCode;

use crate::replay::{Item, ReplayOptions, ReplaySettings, Telemetry, replay_with, rfc3339};

/// The demo's own policy beside the defaults: rollbacks wait for a person.
const APPROVAL_POLICY: &str = r#"{"name": "Rollbacks Need Approval", "type": "self_healing",
    "effect": "allow", "priority": 30, "actions": ["rollback_deployment"],
    "resources": ["cluster:*/deployment/*"], "conditions": {"roles": ["service"]},
    "require_approval": true,
    "description": "A rollback changes what runs: an operator approves it first."}"#;

/// What goes wrong with a workload, and from when (minutes after the start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// CPU pinned near the limit, latency up: load. From `from` to `to` minutes.
    CpuSpike {
        /// Start, minutes.
        from: i64,
        /// End, minutes.
        to: i64,
    },
    /// The container crashes every minute after a bad release.
    CrashLoop {
        /// Start, minutes.
        from: i64,
    },
    /// Memory climbs to the limit, then OOM kills.
    MemoryLeak {
        /// Start, minutes.
        from: i64,
    },
}

/// A generated workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Namespace.
    pub namespace: &'static str,
    /// Deployment name.
    pub name: &'static str,
    /// Normal CPU (fraction of the limit).
    pub cpu: f64,
    /// Normal memory.
    pub memory: f64,
    /// Normal p99 latency (ms).
    pub latency_ms: f64,
    /// What goes wrong, if anything.
    pub fault: Option<Fault>,
}

/// The scenarios the demo shows, by name (also the golden scenario names).
pub fn scenario(name: &str) -> Option<Vec<Workload>> {
    let w = |namespace, name, cpu, memory, latency_ms, fault| Workload {
        namespace,
        name,
        cpu,
        memory,
        latency_ms,
        fault,
    };
    let healthy = || {
        vec![
            w("production", "web", 0.35, 0.45, 120.0, None),
            w("production", "db", 0.50, 0.60, 40.0, None),
        ]
    };
    let mut ws = match name {
        "cpu_spike" => vec![w(
            "production",
            "api",
            0.30,
            0.40,
            180.0,
            Some(Fault::CpuSpike { from: 70, to: 100 }),
        )],
        "kube_system" => vec![w(
            "kube-system",
            "coredns",
            0.30,
            0.40,
            20.0,
            Some(Fault::CpuSpike { from: 70, to: 100 }),
        )],
        "crash_loop" => vec![w(
            "production",
            "worker",
            0.40,
            0.50,
            90.0,
            Some(Fault::CrashLoop { from: 75 }),
        )],
        "peak_hours" => vec![w(
            "production",
            "checkout",
            0.35,
            0.50,
            150.0,
            Some(Fault::MemoryLeak { from: 60 }),
        )],
        "demo" => {
            let mut all = Vec::new();
            for n in ["cpu_spike", "crash_loop", "peak_hours", "kube_system"] {
                all.extend(scenario(n)?.into_iter().filter(|w| w.fault.is_some()));
            }
            all
        }
        _ => return None,
    };
    ws.extend(healthy());
    Some(ws)
}

/// Names accepted by [`scenario`].
pub const SCENARIOS: [&str; 5] = [
    "demo",
    "cpu_spike",
    "crash_loop",
    "peak_hours",
    "kube_system",
];

/// Deterministic noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal, mean 0, sd 1.
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }
}

/// Tuesday 2026-11-24 12:00 UTC: the faults fall between 13:00 and 14:45, peak hours.
pub const START_MS: i64 = 1_795_521_600_000;

/// Generates `minutes` of telemetry for `workloads` at 15 s, starting at [`START_MS`].
pub fn telemetry(workloads: &[Workload], minutes: i64, seed: u64) -> Telemetry {
    let mut noise = Noise(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut items = Vec::new();
    let step_ms = 15_000;
    for w in workloads {
        let pod = format!("{}-7d4b9c8f6a-x2kqp", w.name);
        let labels = |metric: &str| {
            let mut l = BTreeMap::new();
            l.insert("__name__".to_owned(), metric.to_owned());
            l.insert("namespace".to_owned(), w.namespace.to_owned());
            l.insert("pod".to_owned(), pod.clone());
            l.insert("container".to_owned(), w.name.to_owned());
            l
        };
        let stream = {
            let mut l = BTreeMap::new();
            l.insert("namespace".to_owned(), w.namespace.to_owned());
            l.insert("pod".to_owned(), pod.clone());
            l.insert("container".to_owned(), w.name.to_owned());
            l
        };
        let mut restarts = 0.0;
        let mut memory = w.memory;
        for step in 0..(minutes * 4) {
            let at = START_MS + step * step_ms;
            let minute = step / 4;
            let daily = (step as f64 / 240.0 * std::f64::consts::PI).sin() * 0.03;
            let mut cpu = w.cpu + daily + noise.normal() * 0.015;
            let mut latency = w.latency_ms * (1.0 + noise.normal() * 0.04);
            let mut errors = (0.002 + noise.normal() * 0.0007).max(0.0);
            memory = w.memory + noise.normal() * 0.008;
            let mut lines: Vec<(String, &str)> = vec![(
                format!(
                    "GET /api/v1/items/{} 200 {}ms",
                    (noise.next() * 9000.0) as u32 + 1000,
                    (latency / 4.0) as u32
                ),
                "info",
            )];
            if noise.next() < 0.05 {
                lines.push((
                    format!("slow query took {}ms", (noise.next() * 300.0) as u32 + 200),
                    "warn",
                ));
            }
            match w.fault {
                Some(Fault::CpuSpike { from, to }) if (from..to).contains(&minute) => {
                    cpu = 0.94 + noise.normal() * 0.01;
                    latency *= 2.6;
                }
                Some(Fault::CrashLoop { from }) if minute >= from => {
                    cpu = 0.03 + noise.next() * 0.03;
                    errors = 0.25 + noise.next() * 0.1;
                    if step % 4 == 0 {
                        restarts += 1.0;
                    }
                    lines = vec![
                        (
                            "panic: runtime error: invalid memory address or nil pointer dereference"
                                .to_owned(),
                            "error",
                        ),
                        (
                            format!(
                                "Back-off restarting failed container {} in pod {pod}: CrashLoopBackOff",
                                w.name
                            ),
                            "error",
                        ),
                    ];
                }
                Some(Fault::MemoryLeak { from }) if minute >= from => {
                    let grown = ((minute - from) as f64 / 25.0).min(1.0);
                    memory =
                        (w.memory + (0.97 - w.memory) * grown + noise.normal() * 0.005).min(0.99);
                    latency *= 1.0 + grown;
                    if grown >= 1.0 {
                        if step % 8 == 0 {
                            restarts += 1.0;
                        }
                        lines.push((
                            format!(
                                "Container {} in pod {pod} was OOMKilled (exit code 137)",
                                w.name
                            ),
                            // The kubelet's event, a warning, not an application error.
                            "warn",
                        ));
                    } else if grown > 0.5 {
                        lines.push((
                            "GC overhead limit approaching, heap 94% used".to_owned(),
                            "warn",
                        ));
                    }
                }
                _ => {}
            }
            let sample = |metric: &str, value: f64| Item {
                at,
                labels: labels(metric),
                value: Some(value),
                line: None,
                level: None,
            };
            items.push(sample("cpu_usage", cpu.clamp(0.0, 1.0)));
            items.push(sample("memory_usage", memory.clamp(0.0, 1.0)));
            items.push(sample("latency_p99_ms", latency.max(1.0)));
            items.push(sample("error_rate", errors.min(1.0)));
            items.push(sample("restarts", restarts));
            for (i, (line, level)) in lines.into_iter().enumerate() {
                items.push(Item {
                    at: at + 1 + i as i64,
                    labels: stream.clone(),
                    value: None,
                    line: Some(line),
                    level: Some(level.to_owned()),
                });
            }
        }
        let _ = memory;
    }
    Telemetry {
        settings: ReplaySettings::default(),
        items,
    }
}

/// `aegis demo`: runs `name` (default `demo`: every scenario at once), prints the report;
/// with `write_telemetry`, writes the generated telemetry instead of replaying it.
pub async fn run(
    name: &str,
    write_telemetry: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let Some(workloads) = scenario(name) else {
        anyhow::bail!(
            "no scenario named `{name}` (one of {})",
            SCENARIOS.join(", ")
        );
    };
    let started = std::time::Instant::now();
    let telemetry = telemetry(&workloads, 165, 7);
    if let Some(path) = write_telemetry {
        std::fs::write(path, telemetry.to_jsonl())?;
        println!(
            "wrote {} items to {}",
            telemetry.items.len(),
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Aegis demo — {} workloads, {} samples and log lines from {} to {} (event time),",
        workloads.len(),
        telemetry.items.len(),
        rfc3339(START_MS),
        rfc3339(START_MS + 165 * 60_000)
    );
    println!(
        "replayed through the real pipeline: windows → stream detector and failure classifier → incidents → policy engine → executor (dry-run) → audit.\n"
    );
    for w in &workloads {
        let what = match w.fault {
            None => "healthy".to_owned(),
            Some(Fault::CpuSpike { from, to }) => format!(
                "CPU spike {}–{}",
                &rfc3339(START_MS + from * 60_000)[11..16],
                &rfc3339(START_MS + to * 60_000)[11..16]
            ),
            Some(Fault::CrashLoop { from }) => format!(
                "crash loop from {}",
                &rfc3339(START_MS + from * 60_000)[11..16]
            ),
            Some(Fault::MemoryLeak { from }) => format!(
                "memory leak from {} (the restart would fall in peak hours)",
                &rfc3339(START_MS + from * 60_000)[11..16]
            ),
        };
        println!("  {:<24} {what}", format!("{}/{}", w.namespace, w.name));
    }
    let spec = aegis_policy::PolicySpec::from_json(serde_json::from_str(APPROVAL_POLICY)?)?;
    let options = ReplayOptions {
        extra_policies: vec![aegis_policy::Policy {
            id: "demo#Rollbacks Need Approval".to_owned(),
            spec,
            origin: aegis_policy::Origin::Builtin,
        }],
        approve_as: Some("demo-operator".to_owned()),
    };
    println!(
        "\nBeside the default policies the demo loads \"Rollbacks Need Approval\" (require_approval: true); \
         a demo operator approves what it holds back."
    );
    let report = replay_with(&telemetry, &options).await?;
    println!("\nDetections ({}):", report.events.len());
    for (i, e) in report.events.iter().enumerate() {
        println!(
            "\n{}. {} at {} — {}, severity {} ({:.2})",
            i + 1,
            e.entity,
            e.at.format("%H:%M:%S"),
            if e.kind == "opened" {
                "new incident"
            } else {
                "incident escalated (new diagnosis)"
            },
            e.severity,
            e.severity_score
        );
        if let Some(s) = e.anomaly_score {
            println!("   anomaly score     {s:.3}");
        }
        if let (Some(t), Some(c)) = (&e.failure_type, e.failure_confidence) {
            println!("   failure type      {t} (probability {c:.2})");
        }
        println!("   explanation       {}", e.explanation);
        println!("   recommended       {}", e.recommended_action);
        println!(
            "   policy            {} by {}: {}",
            e.decision.as_str(),
            e.policy.as_deref().unwrap_or("(no policy)"),
            e.decision_reason
        );
        for (i, line) in e.why_not.iter().enumerate() {
            println!(
                "   {}  {line}",
                if i == 0 {
                    "why not        "
                } else {
                    "               "
                }
            );
        }
        println!(
            "   action            {}{}",
            e.action_status,
            if e.action_message.is_empty() {
                String::new()
            } else {
                format!(" — {}", e.action_message)
            }
        );
    }
    println!("\nPolicy audit (the loop's decisions):");
    for d in &report.decisions {
        println!(
            "  {:<5} {:<20} {:<40} {}",
            d.decision,
            d.action,
            d.resource,
            d.policy.as_deref().unwrap_or("-")
        );
    }
    println!("\nApprovals ({}):", report.approvals.len());
    for a in &report.approvals {
        println!(
            "  {} {} — held by `{}`; the approver saw: {}",
            a.action,
            a.entity,
            a.policy.as_deref().unwrap_or("-"),
            a.dry_run
        );
        println!(
            "    {} by {}{}",
            a.status,
            a.decided_by.as_deref().unwrap_or("-"),
            a.action_status
                .as_deref()
                .map(|s| format!(", then carried out through the guards: {s}"))
                .unwrap_or_default()
        );
    }
    println!("\nAction audit:");
    for a in &report.actions {
        println!(
            "  {:<6} {:<20} {}/{:<22} {:<8} {}",
            a.phase, a.action, a.namespace, a.target, a.status, a.reason
        );
    }
    println!(
        "\nAudit chains verified: {}. {} ticks, {} rows scored, model {}. Finished in {:.1} s.",
        if report.audit_intact {
            "intact"
        } else {
            "BROKEN"
        },
        report.stats.ticks,
        report.stats.rows_scored,
        report
            .stats
            .model_version
            .as_deref()
            .unwrap_or("(still warming up)"),
        started.elapsed().as_secs_f64()
    );
    Ok(if report.audit_intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
