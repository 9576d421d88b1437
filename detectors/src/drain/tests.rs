use std::collections::{BTreeSet, HashMap};

use super::*;

fn sample() -> Vec<(String, String)> {
    let text = include_str!("../../tests/data/log_sample.tsv");
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, line)| (id.to_string(), line.to_string()))
        .collect()
}

/// Grouping accuracy (Zhu et al., ICSE-SEIP 2019): a line counts when the set of lines
/// in its mined group equals the set in its true group.
fn grouping_accuracy(truth: &[String], mined: &[u32]) -> f64 {
    let mut by_truth: HashMap<&str, BTreeSet<usize>> = HashMap::new();
    let mut by_mined: HashMap<u32, BTreeSet<usize>> = HashMap::new();
    for (i, (t, m)) in truth.iter().zip(mined).enumerate() {
        by_truth.entry(t).or_default().insert(i);
        by_mined.entry(*m).or_default().insert(i);
    }
    let correct = (0..truth.len())
        .filter(|&i| by_truth[truth[i].as_str()] == by_mined[&mined[i]])
        .count();
    correct as f64 / truth.len() as f64
}

#[test]
fn reproduces_the_known_grouping_of_the_sample() {
    let sample = sample();
    assert_eq!(sample.len(), 2000);
    let mut drain = Drain::default();
    let mined: Vec<u32> = sample.iter().map(|(_, l)| drain.add(l).template).collect();
    let truth: Vec<String> = sample.iter().map(|(t, _)| t.clone()).collect();
    let ga = grouping_accuracy(&truth, &mined);
    let ids: BTreeSet<&u32> = mined.iter().collect();
    assert_eq!(ga, 1.0, "grouping accuracy {ga}, {} templates", ids.len());
    assert_eq!(drain.len(), 24);
}

#[test]
fn templates_read_well() {
    let mut drain = Drain::default();
    let a = drain.add("ERROR Failed to connect to database at 10.0.0.1:5432: connection refused");
    let b = drain.add("ERROR Failed to connect to database at 10.0.0.7:5432: connection refused");
    assert_eq!(a.template, b.template);
    assert!(a.new && !b.new);
    assert_eq!(
        drain.template(a.template).unwrap(),
        "ERROR Failed to connect to database at <IP>: connection refused"
    );
    let c = drain.add("INFO User alice logged in from 10.1.2.3");
    let d = drain.add("INFO User bob logged in from 10.1.2.4");
    assert_eq!(c.template, d.template);
    assert_eq!(
        drain.template(c.template).unwrap(),
        "INFO User <*> logged in from <IP>"
    );
    assert_eq!(drain.count(c.template), 2);
}

#[test]
fn masks_variables_but_not_words() {
    let mask = |s: &str| {
        let mut out = String::new();
        mask_into(s, &mut out);
        out
    };
    assert_eq!(
        mask("took 12ms, 3.5 s, -7 and 1e"),
        "took <NUM>ms, <NUM> s, <NUM> and <NUM>e"
    );
    assert_eq!(
        mask("id=0x1F tx=deadbeef01 v1 abc123"),
        "id=<HEX> tx=<HEX> v1 abc123"
    );
    assert_eq!(
        mask("from 192.168.0.1:8080 to 1.2.3"),
        "from <IP> to <NUM>.<NUM>"
    );
    assert_eq!(
        mask("req 123e4567-e89b-12d3-a456-426614174000 ok"),
        "req <UUID> ok"
    );
    assert_eq!(mask("pod api-7d4b9c8f6a-x2kqp"), "pod api-<HEX>-x2kqp");
    assert_eq!(mask("héllo wörld 42"), "héllo wörld <NUM>");
}

#[test]
fn window_features_count_levels_templates_and_crashes() {
    let mut drain = Drain::default();
    let mut w = LogWindow::new();
    w.add(&mut drain, "INFO started in 12ms", None);
    w.add(&mut drain, "INFO started in 15ms", None);
    w.add(&mut drain, "something odd", Some("warning"));
    w.add(
        &mut drain,
        "Last State: Terminated Reason: OOMKilled",
        Some("error"),
    );
    w.add(&mut drain, "panic: runtime error: nil map", None);
    w.add(&mut drain, "Back-off restarting failed container api", None);
    let f = w.features();
    assert_eq!(f.lines, 6);
    assert!((f.error_rate - 2.0 / 6.0).abs() < 1e-9, "{f:?}");
    assert!((f.warn_rate - 1.0 / 6.0).abs() < 1e-9);
    assert!((f.new_template_rate - 5.0 / 6.0).abs() < 1e-9);
    assert_eq!(f.distinct_templates, 5);
    assert_eq!(
        (f.oom_killed, f.panics, f.crash_loop, f.stack_traces),
        (1, 1, 1, 0)
    );
    assert_eq!(f.templates[0].1, 2);
}

#[test]
fn limits_hold_and_state_round_trips() {
    let mut drain = Drain::new(DrainConfig {
        max_templates: 3,
        max_children: 2,
        ..Default::default()
    });
    for i in 0..50 {
        drain.add(&format!(
            "word{} alpha{} beta gamma delta{}",
            i % 7,
            i,
            i * 3
        ));
        drain.add(&format!("x{} y", char::from(b'a' + (i % 26) as u8)));
    }
    assert!(drain.len() <= 3, "{}", drain.len());
    let json = serde_json::to_string(&drain).unwrap();
    let mut back: Drain = serde_json::from_str(&json).unwrap();
    assert_eq!(back.len(), drain.len());
    assert_eq!(back.add("xa y").template, drain.add("xa y").template);
    assert_eq!(drain.add("").template, drain.add("   ").template);
}
