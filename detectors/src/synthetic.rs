//! Synthetic, labelled training data: what each failure looks like in the window features,
//! with noise and overlap, so the classifier works before a site has labelled its own.
//! The numbers encode common SRE knowledge (a crash loop restarts and logs
//! `CrashLoopBackOff`; a leak climbs towards the memory limit; saturation pins CPU under a
//! traffic surge), not any one site's data.

use rand::Rng;

use crate::rng::{self, DetRng};
use crate::{FailureType, Matrix};

fn u(rng: &mut DetRng, lo: f64, hi: f64) -> f32 {
    (lo + rng.random::<f64>() * (hi - lo)) as f32
}

fn chance(rng: &mut DetRng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// One healthy row with natural variation.
fn healthy(rng: &mut DetRng) -> [f32; 16] {
    let cpu = u(rng, 0.1, 0.65);
    [
        cpu,
        (cpu + u(rng, 0.0, 0.25)).min(1.0),
        u(rng, 0.2, 0.65),
        (rng::normal(rng) * 0.0015) as f32,
        u(rng, 30.0, 300.0),
        u(rng, 0.75, 1.35),
        u(rng, 0.0, 0.015),
        u(rng, 0.6, 1.4),
        if chance(rng, 0.05) { 1.0 } else { 0.0 },
        if chance(rng, 0.05) {
            u(rng, 0.6, 1.0)
        } else {
            1.0
        },
        u(rng, 0.0, 0.04),
        u(rng, 0.0, 0.08),
        u(rng, 0.0, 0.03),
        0.0,
        0.0,
        0.0,
    ]
}

/// A row of `kind`: the healthy baseline with that failure's signature laid over it.
/// About one failure row in four is caught early, with the signature only half as
/// pronounced (blended with the baseline), and healthy rows carry the odd blip, so the
/// classes overlap the way real windows do.
pub fn failure_row(rng: &mut DetRng, kind: FailureType) -> [f32; 16] {
    let base = healthy(rng);
    let mut r = strong_row(rng, kind, base);
    if kind != FailureType::None && chance(rng, 0.25) {
        let w = u(rng, 0.35, 0.6);
        for (x, b) in r.iter_mut().zip(base) {
            *x = b + (*x - b) * w;
        }
    }
    if kind == FailureType::None && chance(rng, 0.1) {
        // A blip: one metric off for a moment.
        let i = rng.random_range(0..10);
        r[i] *= u(rng, 1.3, 2.2);
    }
    r
}

fn strong_row(rng: &mut DetRng, kind: FailureType, base: [f32; 16]) -> [f32; 16] {
    let mut r = base;
    match kind {
        FailureType::None => {}
        FailureType::CrashLoop => {
            r[8] = u(rng, 3.0, 25.0);
            r[9] = u(rng, 0.0, 0.75);
            r[10] = u(rng, 0.1, 0.6);
            r[12] = u(rng, 0.02, 0.3);
            r[14] = if chance(rng, 0.85) {
                u(rng, 1.0, 12.0).round()
            } else {
                0.0
            };
            r[15] = if chance(rng, 0.4) {
                u(rng, 1.0, 5.0).round()
            } else {
                0.0
            };
            r[0] = u(rng, 0.0, 0.4);
            r[7] = u(rng, 0.3, 1.0);
            r[6] = u(rng, 0.02, 0.3);
        }
        FailureType::ServiceDown => {
            r[9] = u(rng, 0.0, 0.15);
            r[7] = u(rng, 0.0, 0.25);
            r[6] = u(rng, 0.5, 1.0);
            r[10] = u(rng, 0.3, 0.9);
            r[0] = u(rng, 0.0, 0.1);
            r[1] = r[0] + u(rng, 0.0, 0.1);
            r[8] = u(rng, 0.0, 2.0).round();
            r[4] = if chance(rng, 0.5) {
                u(rng, 0.0, 5.0)
            } else {
                u(rng, 2000.0, 30000.0)
            };
            r[5] = if r[4] < 10.0 { 0.0 } else { u(rng, 5.0, 50.0) };
        }
        FailureType::MemoryLeak => {
            r[2] = u(rng, 0.7, 0.99);
            r[3] = u(rng, 0.004, 0.04);
            r[13] = if chance(rng, 0.3) {
                u(rng, 1.0, 2.0).round()
            } else {
                0.0
            };
            r[8] = if r[13] > 0.0 { r[13] } else { 0.0 };
            r[5] = u(rng, 1.0, 1.8);
            r[11] = u(rng, 0.02, 0.2);
        }
        FailureType::HighLatency => {
            r[5] = u(rng, 2.0, 12.0);
            r[4] = u(rng, 600.0, 8000.0);
            r[6] = u(rng, 0.0, 0.04);
            r[11] = u(rng, 0.05, 0.3);
        }
        FailureType::ErrorSpike => {
            r[6] = u(rng, 0.05, 0.5);
            r[10] = u(rng, 0.2, 0.8);
            r[12] = u(rng, 0.03, 0.4);
            r[5] = u(rng, 0.9, 2.0);
            r[15] = if chance(rng, 0.2) { 1.0 } else { 0.0 };
        }
        FailureType::ResourceSaturation => {
            r[0] = u(rng, 0.85, 1.0);
            r[1] = u(rng, 0.95, 1.0);
            r[7] = u(rng, 1.5, 5.0);
            r[5] = u(rng, 1.4, 4.0);
            r[4] *= r[5];
            r[2] = u(rng, 0.5, 0.9);
            r[6] = u(rng, 0.0, 0.06);
        }
    }
    r
}

/// `per_class` rows of every [`FailureType`], interleaved, with their labels.
pub fn failure_training_set(seed: u64, per_class: usize) -> (Matrix, Vec<FailureType>) {
    let mut rng = rng::stream(seed, 0xFA11);
    let mut data = Vec::with_capacity(per_class * 7 * 16);
    let mut labels = Vec::with_capacity(per_class * 7);
    for _ in 0..per_class {
        for kind in FailureType::ALL {
            data.extend_from_slice(&failure_row(&mut rng, kind));
            labels.push(kind);
        }
    }
    (Matrix::from_parts(data, 16), labels)
}

/// `rows` healthy rows of [`crate::FAILURE_FEATURES`], the anomaly detector's default
/// baseline before it has seen a workload's own data.
pub fn healthy_rows(seed: u64, rows: usize) -> Matrix {
    let mut rng = rng::stream(seed, 0x0E41);
    let mut data = Vec::with_capacity(rows * 16);
    for _ in 0..rows {
        data.extend_from_slice(&healthy(&mut rng));
    }
    Matrix::from_parts(data, 16)
}

/// A standard-normal matrix of `rows × cols` with `outlier_share` uniform outliers in
/// [-8, 8] (the benchmark data: labels true for outliers).
pub fn gaussian_with_outliers(
    seed: u64,
    rows: usize,
    cols: usize,
    outlier_share: f64,
) -> (Matrix, Vec<bool>) {
    let mut rng = rng::stream(seed, 0xB0B);
    let mut data = Vec::with_capacity(rows * cols);
    let mut labels = Vec::with_capacity(rows);
    for _ in 0..rows {
        let outlier = chance(&mut rng, outlier_share);
        for _ in 0..cols {
            data.push(if outlier {
                u(&mut rng, -8.0, 8.0)
            } else {
                rng::normal(&mut rng) as f32
            });
        }
        labels.push(outlier);
    }
    (Matrix::from_parts(data, cols.max(1)), labels)
}

/// A CPU series at one point a minute for `minutes`: 40 ± 15 on a daily rhythm (shifted by
/// `phase` radians), bell-shaped noise of about ±2 from an xorshift seeded with `seed`, and
/// +30 during `incident` (minutes from the start). The test series of the streaming
/// detector and `aegis backtest`.
pub fn cpu_series(
    minutes: usize,
    incident: std::ops::Range<usize>,
    phase: f64,
    seed: u64,
) -> Vec<f64> {
    let mut state = seed.max(1);
    let mut noise = move || {
        // A sum of four uniforms: a cheap bell curve.
        let mut acc = 0.0;
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            acc += (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        }
        acc * 2.0
    };
    (0..minutes)
        .map(|t| {
            let daily = 40.0 + 15.0 * (std::f64::consts::TAU * t as f64 / 1440.0 + phase).sin();
            daily + noise() + if incident.contains(&t) { 30.0 } else { 0.0 }
        })
        .collect()
}
