//! Feature kernels over a window's slots (oldest first, missing slots as NaN).
//!
//! Each kernel is one pass over contiguous `f64`s and skips NaN, so a gap in a series
//! neither fails nor skews a feature.

/// Summary of one window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Present slots.
    pub count: usize,
    /// Newest present value.
    pub last: f64,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Least-squares slope per slot.
    pub slope: f64,
    /// (last − first present value) per slot between them.
    pub rate: f64,
}

/// Summarises `values` (NaN = missing); all zero when none is present.
pub fn summarize(values: &[f64]) -> Summary {
    summarize_parts(values, &[])
}

/// Like [`summarize`] over `a` followed by `b` (a ring buffer's two halves).
pub fn summarize_parts(a: &[f64], b: &[f64]) -> Summary {
    let (mut n, mut sum, mut sum_sq) = (0usize, 0.0, 0.0);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut sx, mut sxy, mut sxx) = (0.0, 0.0, 0.0);
    let mut first = None;
    let mut last = None;
    for (i, v) in a.iter().chain(b).enumerate() {
        if v.is_nan() {
            continue;
        }
        let x = i as f64;
        n += 1;
        sum += v;
        sum_sq += v * v;
        min = min.min(*v);
        max = max.max(*v);
        sx += x;
        sxy += x * v;
        sxx += x * x;
        if first.is_none() {
            first = Some((i, *v));
        }
        last = Some((i, *v));
    }
    if n == 0 {
        return Summary::default();
    }
    let nf = n as f64;
    let mean = sum / nf;
    let var = (sum_sq / nf - mean * mean).max(0.0);
    let denom = nf * sxx - sx * sx;
    let slope = if denom.abs() > f64::EPSILON {
        (nf * sxy - sx * sum) / denom
    } else {
        0.0
    };
    let rate = match (first, last) {
        (Some((i0, v0)), Some((i1, v1))) if i1 > i0 => (v1 - v0) / (i1 - i0) as f64,
        _ => 0.0,
    };
    Summary {
        count: n,
        last: last.map_or(0.0, |(_, v)| v),
        mean,
        std: var.sqrt(),
        min,
        max,
        slope,
        rate,
    }
}

/// How many standard deviations `value` is from a baseline's mean (0 for a flat baseline).
pub fn z_score(value: f64, baseline: &Summary) -> f64 {
    if baseline.count < 2 || baseline.std <= f64::EPSILON * baseline.mean.abs().max(1.0) {
        return 0.0;
    }
    (value - baseline.mean) / baseline.std
}

/// Exponentially weighted moving average with weight `alpha` of the newest value.
pub fn ewma(values: &[f64], alpha: f64) -> f64 {
    ewma_parts(values, &[], alpha)
}

/// Like [`ewma`] over `a` followed by `b`.
pub fn ewma_parts(a: &[f64], b: &[f64], alpha: f64) -> f64 {
    let mut acc: Option<f64> = None;
    for v in a.iter().chain(b).filter(|v| !v.is_nan()) {
        acc = Some(match acc {
            None => *v,
            Some(a) => a + alpha * (v - a),
        });
    }
    acc.unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_hand_computed_values_and_skip_gaps() {
        let v = [1.0, f64::NAN, 3.0, 5.0];
        let s = summarize(&v);
        assert_eq!((s.count, s.last, s.min, s.max), (3, 5.0, 1.0, 5.0));
        assert!((s.mean - 3.0).abs() < 1e-12);
        assert!((s.std - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // Points (0,1), (2,3), (3,5): slope = (3·(0+6+15) − 5·9) / (3·13 − 25) = 18/14.
        assert!((s.slope - 18.0 / 14.0).abs() < 1e-12);
        assert!((s.rate - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(summarize(&[f64::NAN]), Summary::default());
        assert_eq!(z_score(5.0, &summarize(&[2.0, 2.0, 2.0])), 0.0);
        assert!((z_score(5.0, &summarize(&[1.0, 3.0])) - 3.0).abs() < 1e-12);
        assert!((ewma(&[1.0, f64::NAN, 3.0], 0.5) - 2.0).abs() < 1e-12);
    }
}
