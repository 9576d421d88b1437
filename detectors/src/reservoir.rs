//! A fixed-size uniform sample of a stream of rows (Vitter's algorithm R), the memory of
//! recent normal data that periodic retraining fits on.

use rand::Rng;

use crate::Matrix;
use crate::rng::{self, DetRng};

/// Keeps at most `capacity` rows, each row of the stream equally likely to be kept.
#[derive(Debug, Clone)]
pub struct Reservoir {
    cols: usize,
    capacity: usize,
    seen: u64,
    data: Vec<f32>,
    rng: DetRng,
}

impl Reservoir {
    /// An empty reservoir for rows of `cols` values.
    pub fn new(cols: usize, capacity: usize, seed: u64) -> Self {
        Self {
            cols,
            capacity: capacity.max(1),
            seen: 0,
            data: Vec::new(),
            rng: rng::stream(seed, 0x5E5),
        }
    }

    /// Offers one row; rows of another width or with non-finite values are ignored.
    pub fn offer(&mut self, row: &[f32]) {
        if row.len() != self.cols || row.iter().any(|v| !v.is_finite()) {
            return;
        }
        self.seen += 1;
        let held = self.data.len() / self.cols;
        if held < self.capacity {
            self.data.extend_from_slice(row);
            return;
        }
        let j = self.rng.random_range(0..self.seen);
        if (j as usize) < self.capacity {
            let at = j as usize * self.cols;
            self.data[at..at + self.cols].copy_from_slice(row);
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.data.len() / self.cols
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rows offered since creation.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// A copy of the rows held.
    pub fn to_matrix(&self) -> Matrix {
        Matrix::from_parts(self.data.clone(), self.cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_uniform_sample_of_bounded_size() {
        let mut r = Reservoir::new(1, 1000, 1);
        for i in 0..100_000 {
            r.offer(&[i as f32]);
        }
        assert_eq!(r.len(), 1000);
        assert_eq!(r.seen(), 100_000);
        let m = r.to_matrix();
        let mean = m.as_slice().iter().map(|v| f64::from(*v)).sum::<f64>() / 1000.0;
        // Uniform over 0..100000: mean 50,000 ± a few standard errors (≈ 913).
        assert!((mean - 50_000.0).abs() < 4_000.0, "{mean}");
        r.offer(&[f32::NAN]);
        r.offer(&[1.0, 2.0]);
        assert_eq!(r.seen(), 100_000);
    }
}
