use proptest::prelude::*;

use super::*;
use crate::{Matrix, mat, metrics};

fn gaussian_with_outliers(rows: usize, cols: usize, seed: u64) -> (Matrix, Vec<bool>) {
    let mut rng = crate::rng::stream(seed, 0);
    let mut data = Vec::with_capacity(rows * cols);
    let mut labels = Vec::with_capacity(rows);
    for i in 0..rows {
        let outlier = i % 50 == 0;
        for _ in 0..cols {
            let v = crate::rng::normal(&mut rng);
            data.push(if outlier {
                (v * 6.0 + 8.0) as f32
            } else {
                v as f32
            });
        }
        labels.push(outlier);
    }
    (Matrix::new(data, cols).unwrap(), labels)
}

/// The flat, blocked, masked loop agrees with a node-by-node walk of the same trees.
#[test]
fn blocked_scoring_agrees_with_the_plain_walk() {
    for extension in [None, Some(2)] {
        let (x, _) = gaussian_with_outliers(1003, 5, 7);
        let params = IsolationForestParams {
            trees: 37,
            sample_size: 100,
            seed: 3,
            extension_level: extension,
        };
        let forest = IsolationForest::fit(x.view(), &params).unwrap();
        let scores = forest.score(x.view()).unwrap();
        let c = average_path_length(forest.sample_size());
        for (i, score) in scores.iter().enumerate() {
            let (h, _) = forest.explain_row(x.row(i)).unwrap();
            let plain = 2f64.powf(-h / c);
            assert!((score - plain).abs() < 1e-5, "row {i}: {score} vs {plain}");
            assert!((forest.score_row(x.row(i)).unwrap() - score).abs() < 1e-12);
        }
    }
}

#[test]
fn outliers_score_higher_and_auc_is_high() {
    let (x, labels) = gaussian_with_outliers(5000, 8, 1);
    let forest = IsolationForest::fit(x.view(), &IsolationForestParams::default()).unwrap();
    let scores = forest.score(x.view()).unwrap();
    assert!(scores.iter().all(|s| *s > 0.0 && *s <= 1.0));
    let auc = metrics::roc_auc(&scores, &labels).unwrap();
    assert!(auc > 0.99, "auc {auc}");
    let ext = IsolationForest::fit(
        x.view(),
        &IsolationForestParams {
            extension_level: Some(7),
            ..Default::default()
        },
    )
    .unwrap();
    let auc = metrics::roc_auc(&ext.score(x.view()).unwrap(), &labels).unwrap();
    assert!(auc > 0.99, "extended auc {auc}");
}

#[test]
fn same_seed_same_model_on_any_thread_count() {
    let (x, _) = gaussian_with_outliers(3000, 4, 2);
    let params = IsolationForestParams {
        seed: 11,
        ..Default::default()
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let a = one.install(|| IsolationForest::fit(x.view(), &params).unwrap());
    let b = IsolationForest::fit(x.view(), &params).unwrap();
    assert_eq!(a, b);
    let other =
        IsolationForest::fit(x.view(), &IsolationForestParams { seed: 12, ..params }).unwrap();
    assert_ne!(a, other);
    assert_eq!(
        one.install(|| a.score(x.view()).unwrap()),
        b.score(x.view()).unwrap()
    );
}

#[test]
fn refuses_bad_shapes_and_params() {
    let (x, _) = gaussian_with_outliers(100, 3, 4);
    let forest = IsolationForest::fit(x.view(), &IsolationForestParams::default()).unwrap();
    assert_eq!(forest.sample_size(), 100);
    let four = Matrix::new(vec![0.0; 8], 4).unwrap();
    assert!(matches!(
        forest.score(four.view()),
        Err(Error::SchemaMismatch(_))
    ));
    assert!(matches!(
        forest.score_row(&[1.0]),
        Err(Error::SchemaMismatch(_))
    ));
    for bad in [
        IsolationForestParams {
            trees: 0,
            ..Default::default()
        },
        IsolationForestParams {
            sample_size: 1,
            ..Default::default()
        },
        IsolationForestParams {
            extension_level: Some(3),
            ..Default::default()
        },
    ] {
        assert!(
            matches!(
                IsolationForest::fit(x.view(), &bad),
                Err(Error::InvalidParams(_))
            ),
            "{bad:?}"
        );
    }
    let one_row = Matrix::new(vec![1.0, 2.0, 3.0], 3).unwrap();
    assert!(IsolationForest::fit(one_row.view(), &IsolationForestParams::default()).is_err());
    assert!(Matrix::new(vec![1.0, f32::NAN], 2).is_err());
}

#[test]
fn constant_data_scores_evenly() {
    let x = Matrix::new(vec![5.0; 400], 2).unwrap();
    let forest = IsolationForest::fit(x.view(), &IsolationForestParams::default()).unwrap();
    let scores = forest.score(x.view()).unwrap();
    assert!(scores.windows(2).all(|w| w[0] == w[1]));
    // Every row sits in one root leaf of ψ = 200: h = c(200), so the score is exactly ½.
    assert!((scores[0] - 0.5).abs() < 1e-6, "{}", scores[0]);
}

#[test]
fn explanation_points_at_the_feature_that_isolates() {
    let (mut x, _) = gaussian_with_outliers(2000, 4, 5);
    let mut data = x.as_slice().to_vec();
    // Row 1 is normal except feature 2, far out.
    data[4 + 2] = 25.0;
    x = Matrix::new(data, 4).unwrap();
    let forest = IsolationForest::fit(x.view(), &IsolationForestParams::default()).unwrap();
    let (_, shares) = forest.explain_row(x.row(1)).unwrap();
    let top = (0..4)
        .max_by(|a, b| shares[*a].total_cmp(&shares[*b]))
        .unwrap();
    assert_eq!(top, 2, "{shares:?}");
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
}

#[test]
fn contamination_threshold_flags_that_share() {
    let (x, _) = gaussian_with_outliers(1000, 3, 6);
    let forest = IsolationForest::fit(x.view(), &IsolationForestParams::default()).unwrap();
    let t = forest.threshold_for_contamination(x.view(), 0.02).unwrap();
    let flagged = forest
        .score(x.view())
        .unwrap()
        .iter()
        .filter(|s| **s >= t)
        .count();
    assert_eq!(flagged, 20);
}

#[test]
fn odds_breastw_and_wbc_within_reference() {
    // scikit-learn's AUC (t = 100, ψ = 256, mean of 5 seeds) less the allowed 0.02.
    for (file, floor) in [("breastw.mat", 0.988 - 0.02), ("wbc.mat", 0.938 - 0.02)] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(file);
        let vars = mat::read_file(&path).unwrap();
        let (xm, ym) = (&vars["X"], &vars["y"]);
        let cols: Vec<&[f64]> = (0..xm.cols).map(|c| xm.column(c)).collect();
        let x = Matrix::from_columns(&cols).unwrap();
        let labels: Vec<bool> = ym.data.iter().map(|v| *v != 0.0).collect();
        let mean: f64 = (0..5)
            .map(|seed| {
                let f = IsolationForest::fit(
                    x.view(),
                    &IsolationForestParams {
                        seed,
                        ..Default::default()
                    },
                )
                .unwrap();
                metrics::roc_auc(&f.score(x.view()).unwrap(), &labels).unwrap()
            })
            .sum::<f64>()
            / 5.0;
        assert!(mean >= floor, "{file}: AUC {mean:.3} below {floor:.3}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any finite data, size, ψ and seed: scores in (0, 1], equal to the plain walk.
    #[test]
    fn scores_are_valid_for_any_data(
        rows in 2usize..300,
        cols in 1usize..6,
        psi in 2usize..300,
        seed in any::<u64>(),
        values in proptest::collection::vec(-1e6f32..1e6, 1800),
    ) {
        let x = Matrix::new(values[..rows * cols].to_vec(), cols).unwrap();
        let params = IsolationForestParams { trees: 5, sample_size: psi, seed, extension_level: None };
        let forest = IsolationForest::fit(x.view(), &params).unwrap();
        let scores = forest.score(x.view()).unwrap();
        let c = average_path_length(forest.sample_size());
        for (i, s) in scores.iter().enumerate() {
            prop_assert!(*s > 0.0 && *s <= 1.0);
            let (h, _) = forest.explain_row(x.row(i)).unwrap();
            prop_assert!((s - 2f64.powf(-h / c)).abs() < 1e-5);
        }
    }
}

/// A streaming forest follows its data: after every tree has been regrown on data that
/// moved, the new normal scores as normal and the old one as anomalous; a refresh on rows
/// that would grow trees of another shape changes nothing.
#[test]
fn refreshing_every_tree_moves_the_forest_to_the_new_data() {
    let shifted = |x: &Matrix, by: f32| {
        Matrix::new(x.as_slice().iter().map(|v| v + by).collect(), x.cols()).unwrap()
    };
    for extension in [None, Some(1)] {
        let (x, _) = gaussian_with_outliers(2000, 3, 11);
        let params = IsolationForestParams {
            trees: 40,
            sample_size: 128,
            seed: 5,
            extension_level: extension,
        };
        let mut forest = IsolationForest::fit(x.view(), &params).unwrap();
        let moved = shifted(&x, 20.0);
        let (at_old, at_new) = ([0f32, 0.0, 0.0], [20f32, 20.0, 20.0]);
        assert!(forest.score_row(&at_new).unwrap() > forest.score_row(&at_old).unwrap());
        // Two halves: every tree replaced once, oldest first.
        assert!(forest.refresh(moved.view(), 20, 1).unwrap());
        assert!(forest.refresh(moved.view(), 20, 2).unwrap());
        let (old, new) = (
            forest.score_row(&at_old).unwrap(),
            forest.score_row(&at_new).unwrap(),
        );
        assert!(new < 0.5 && old > 0.6, "new normal {new}, old normal {old}");
        // Scoring paths still agree after the splice.
        let batch = forest.score(moved.view()).unwrap();
        for (i, s) in batch.iter().enumerate().take(50) {
            assert!((forest.score_row(moved.row(i)).unwrap() - s).abs() < 1e-12);
        }
        let few = Matrix::new(vec![1.0; 30], 3).unwrap();
        let before = forest.score_row(&at_new).unwrap();
        assert!(!forest.refresh(few.view(), 20, 3).unwrap());
        assert_eq!(forest.score_row(&at_new).unwrap(), before);
    }
}
