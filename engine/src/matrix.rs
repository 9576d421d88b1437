//! The per-tick feature matrix: one row per entity, for each configured metric the
//! window summary (last, mean, std, min, max, slope, rate), the z-score of the last value
//! against a longer baseline, and an EWMA — computed straight from the windows into one
//! contiguous row-major buffer the detectors score in place.

use aegis_detectors::Matrix;

use crate::SeriesWindow;
use rayon::prelude::*;

use crate::features::{ewma_parts, summarize_parts, z_score};

/// Features per metric.
pub const PER_METRIC: usize = 9;
/// Their names, in column order within a metric.
pub const PER_METRIC_NAMES: [&str; PER_METRIC] = [
    "last", "mean", "std", "min", "max", "slope", "rate", "zscore", "ewma",
];

/// One entity's windows: per metric, the short window and its longer baseline.
#[derive(Debug, Clone)]
pub struct EntityWindows {
    /// `metric → (window, baseline)`, in the configured metric order.
    pub metrics: Vec<(SeriesWindow, SeriesWindow)>,
}

/// Column names for `metrics`: `METRIC_FEATURE`.
pub fn column_names(metrics: &[&str]) -> Vec<String> {
    metrics
        .iter()
        .flat_map(|m| PER_METRIC_NAMES.iter().map(move |f| format!("{m}_{f}")))
        .collect()
}

/// Builds the feature matrix of `entities` (each with the same metrics, in order). Missing
/// data yields zeros, so an entity with a gap still gets a row.
pub fn build(entities: &[EntityWindows], metrics: usize) -> Matrix {
    let refs: Vec<&EntityWindows> = entities.iter().collect();
    build_refs(&refs, metrics)
}

/// Like [`build`] over borrowed entities (the ones with new data this tick).
pub fn build_refs(entities: &[&EntityWindows], metrics: usize) -> Matrix {
    let cols = metrics * PER_METRIC;
    let mut data = vec![0f32; entities.len() * cols];
    if cols > 0 {
        // Entities are independent: rows are filled in parallel, straight from the rings.
        data.par_chunks_mut(cols)
            .zip(entities.par_iter())
            .for_each(|(row, e)| {
                for (m, out) in row.chunks_mut(PER_METRIC).enumerate() {
                    let Some((window, baseline)) = e.metrics.get(m) else {
                        continue;
                    };
                    let (a, b) = window.slices();
                    let s = summarize_parts(a, b);
                    // The baseline's mean and spread come from its running sums: O(1).
                    let (count, mean, std) = baseline.mean_std();
                    let base = crate::features::Summary {
                        count,
                        mean,
                        std,
                        ..Default::default()
                    };
                    let values = [
                        s.last,
                        s.mean,
                        s.std,
                        s.min,
                        s.max,
                        s.slope,
                        s.rate,
                        z_score(s.last, &base),
                        ewma_parts(a, b, 0.3),
                    ];
                    for (o, v) in out.iter_mut().zip(values) {
                        *o = if v.is_finite() { v as f32 } else { 0.0 };
                    }
                }
            });
    }
    // Finite by construction (non-finite values were replaced above), so this cannot fail.
    Matrix::new(data, cols.max(1)).unwrap_or_else(|_| Matrix::empty(cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_entity_with_named_columns() {
        let mut w = SeriesWindow::new(60_000, 10_000);
        let mut b = SeriesWindow::new(600_000, 10_000);
        for (i, v) in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].iter().enumerate() {
            w.insert(i as i64 * 10_000, *v);
            b.insert(i as i64 * 10_000, *v);
        }
        let e = EntityWindows {
            metrics: vec![(w.clone(), b.clone()), (w, b)],
        };
        let m = build(&[e.clone(), e], 2);
        assert_eq!((m.rows(), m.cols()), (2, 18));
        assert_eq!(m.row(0)[0], 6.0);
        assert_eq!(m.row(0)[1], 3.5);
        assert!((m.row(0)[5] - 1.0).abs() < 1e-6, "slope");
        assert_eq!(column_names(&["cpu", "mem"])[9], "mem_last");
        assert_eq!(build(&[], 2).rows(), 0);
    }
}
