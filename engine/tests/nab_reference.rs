//! The NAB scorer reproduces the published figures of three detectors on the development
//! split (`../shared/eval-data/nab-dev/REFERENCE.md`), to two decimals, for each profile.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use aegis_engine::{backtest, nab};

fn nab_dev() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/eval-data/nab-dev")
}

fn results(detector: &str) -> Vec<nab::FileResult> {
    let dir = nab_dev().join("reference-results").join(detector);
    backtest::csv_files(&dir)
        .expect("reference results are there")
        .into_iter()
        .map(|(path, key)| backtest::read_scores(&path, key).unwrap())
        .collect()
}

#[test]
fn the_published_figures_are_reproduced_to_two_decimals() {
    let labels = nab::parse_labels(
        &std::fs::read_to_string(nab_dev().join("labels/combined_windows.json")).unwrap(),
    )
    .unwrap();
    let profiles =
        nab::parse_profiles(&std::fs::read_to_string(nab_dev().join("profiles.json")).unwrap())
            .unwrap();
    assert_eq!(profiles.len(), 3);
    let published = [
        ("numenta", [75.86, 71.37, 79.22]),
        ("windowedGaussian", [41.42, 26.48, 48.45]),
        ("random", [16.71, 9.54, 27.01]),
    ];
    for (detector, want) in published {
        let res = results(detector);
        assert_eq!(res.len(), 36, "{detector}");
        let reports = nab::score_corpus(&res, &labels, &profiles, None);
        for (name, w) in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
            .iter()
            .zip(want)
        {
            let (r, _) = reports
                .iter()
                .find(|(r, _)| r.profile == *name)
                .expect("profile scored");
            assert!(
                (r.normalized - w).abs() < 0.005,
                "{detector} {name}: {:.4}, published {w}",
                r.normalized
            );
        }
    }
}
