//! Policy evaluation: the compiled Aegis snapshot at 10, 1,000 and 10,000 policies against an
//! equivalent policy set in Cedar (`cedar-policy`), on the same requests.
//!
//! The generated sets use one priority, so Aegis's rule (DENY overrides ALLOW, no match is
//! DENY) is exactly Cedar's (forbid overrides permit, default deny); set-up checks that both
//! engines give the same decision for every request before anything is timed. Besides
//! criterion's throughput figures, the bench prints per-call latency percentiles (p50, p99,
//! p99.9) of Aegis, which is what the 1 µs target is about.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::panic,
    reason = "a benchmark whose set-up fails must stop loudly"
)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use aegis_policy::{Origin, Policy, PolicySpec, Request, Snapshot};
use chrono::{DateTime, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const ACTIONS: usize = 50;
const ENVS: usize = 20;
const REQUESTS: usize = 512;

/// A tiny deterministic generator, so every run times the same requests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Policy `i`, as an Aegis policy and as the same rule in Cedar.
fn policy(i: usize) -> (Policy, String) {
    let action = format!("act{}", i % ACTIONS);
    let env = format!("cluster:env{}*", (i / ACTIONS) % ENVS);
    let deny = i.is_multiple_of(10);
    let roles: &[&str] = if i.is_multiple_of(3) {
        &["service"]
    } else {
        &["user", "service"]
    };
    let severity = i.is_multiple_of(2);
    let max_replicas = 5 + i % 10;

    let mut metadata = serde_json::Map::new();
    if severity {
        metadata.insert("severity".into(), json!({"in": ["high", "critical"]}));
    }
    metadata.insert("replicas".into(), json!({"lte": max_replicas}));
    let spec = PolicySpec::from_json(json!({
        "name": format!("policy {i}"),
        "type": "self_healing",
        "effect": if deny { "deny" } else { "allow" },
        "priority": 0,
        "actions": [action],
        "resources": [env],
        "conditions": {"roles": roles, "metadata": metadata},
    }))
    .unwrap_or_else(|e| panic!("policy {i}: {e}"));

    let roles_set = roles
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut when = vec![
        format!("context.resource like \"{env}\""),
        format!("[{roles_set}].contains(context.role)"),
    ];
    if severity {
        when.push("[\"high\", \"critical\"].contains(context.severity)".to_owned());
    }
    when.push(format!("context.replicas <= {max_replicas}"));
    let cedar = format!(
        "@id(\"p{i}\")\n{}(principal, action == Action::\"{action}\", resource) when {{ {} }};\n",
        if deny { "forbid" } else { "permit" },
        when.join(" && ")
    );
    (
        Policy {
            id: format!("p{i}"),
            spec,
            origin: Origin::Builtin,
        },
        cedar,
    )
}

struct Case {
    aegis: Request,
    cedar: cedar_policy::Request,
}

fn requests() -> Vec<Case> {
    let mut rng = XorShift(0x5eed_1234_abcd_0042);
    (0..REQUESTS)
        .map(|_| {
            // A few actions and environments no policy names, as in real traffic.
            let action = format!("act{}", rng.below(ACTIONS + 5));
            let resource = format!("cluster:env{}-eu", rng.below(ENVS + 2));
            let role = ["service", "user", "admin"][rng.below(3)];
            let severity = ["low", "high", "critical"][rng.below(3)];
            let replicas = rng.below(20) as i64;
            let aegis: Request = serde_json::from_value(json!({
                "type": "self_healing", "action": action, "resource": resource,
                "context": {"role": role, "metadata": {"severity": severity, "replicas": replicas}},
            }))
            .unwrap_or_else(|e| panic!("request: {e}"));
            let context = cedar_policy::Context::from_json_value(
                json!({"resource": resource, "role": role, "severity": severity,
                       "replicas": replicas}),
                None,
            )
            .unwrap_or_else(|e| panic!("cedar context: {e}"));
            let uid = |s: &str| {
                cedar_policy::EntityUid::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
            };
            let cedar = cedar_policy::Request::new(
                uid("User::\"ai-engine\""),
                uid(&format!("Action::\"{action}\"")),
                uid("Resource::\"cluster\""),
                context,
                None,
            )
            .unwrap_or_else(|e| panic!("cedar request: {e}"));
            Case { aegis, cedar }
        })
        .collect()
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 14, 0, 0)
        .single()
        .unwrap_or_else(|| panic!("fixed time"))
}

fn percentiles(snapshot: &Arc<Snapshot>, cases: &[Case], n: usize) {
    let now = at();
    let rounds = 200_000 / cases.len();
    let mut samples = Vec::with_capacity(rounds * cases.len());
    for _ in 0..rounds {
        for case in cases {
            let started = Instant::now();
            let d = snapshot.evaluate(&case.aegis, now, false);
            std::hint::black_box(d.allowed());
            drop(d);
            samples.push(started.elapsed().as_nanos() as u64);
        }
    }
    samples.sort_unstable();
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "policy_eval/aegis/{n}: latency per call over {} calls: p50 {} ns, p99 {} ns, p99.9 {} ns",
        samples.len(),
        q(0.50),
        q(0.99),
        q(0.999)
    );
}

fn bench(c: &mut Criterion) {
    let cases = requests();
    let now = at();
    for n in [10usize, 1_000, 10_000] {
        let (policies, cedar_text): (Vec<Policy>, Vec<String>) = (0..n).map(policy).unzip();
        let snapshot = Arc::new(Snapshot::compile(&policies, 1).unwrap_or_else(|e| panic!("{e}")));
        let cedar_set = cedar_text
            .concat()
            .parse::<cedar_policy::PolicySet>()
            .unwrap_or_else(|e| panic!("cedar policies: {e}"));
        let authorizer = cedar_policy::Authorizer::new();
        let entities = cedar_policy::Entities::empty();

        // The two engines must agree before their speed means anything.
        let mut allowed = 0;
        for case in &cases {
            let ours = snapshot.evaluate(&case.aegis, now, false).allowed();
            let theirs = authorizer
                .is_authorized(&case.cedar, &cedar_set, &entities)
                .decision()
                == cedar_policy::Decision::Allow;
            assert_eq!(ours, theirs, "engines disagree on {:?}", case.aegis);
            allowed += usize::from(ours);
        }
        println!(
            "policy_eval/{n}: {allowed} of {} requests allowed by both engines",
            cases.len()
        );
        percentiles(&snapshot, &cases, n);

        let mut group = c.benchmark_group("policy_eval");
        group.throughput(Throughput::Elements(cases.len() as u64));
        group.bench_with_input(BenchmarkId::new("aegis", n), &cases, |b, cases| {
            b.iter(|| {
                let mut allowed = 0usize;
                for case in cases {
                    allowed += usize::from(snapshot.evaluate(&case.aegis, now, false).allowed());
                }
                allowed
            })
        });
        group.bench_with_input(BenchmarkId::new("cedar", n), &cases, |b, cases| {
            b.iter(|| {
                let mut allowed = 0usize;
                for case in cases {
                    let d = authorizer.is_authorized(&case.cedar, &cedar_set, &entities);
                    allowed += usize::from(d.decision() == cedar_policy::Decision::Allow);
                }
                allowed
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
