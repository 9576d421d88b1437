//! Row-major `f32` feature matrices: the shape every detector fits and scores.

use crate::{Error, Result};

/// An owned row-major matrix of `f32` features.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

/// A borrowed row-major matrix.
#[derive(Debug, Clone, Copy)]
pub struct MatrixView<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl Matrix {
    /// A matrix from row-major data; every value must be finite.
    pub fn new(data: Vec<f32>, cols: usize) -> Result<Self> {
        if cols == 0 {
            return Err(Error::InvalidInput(
                "a matrix needs at least one column".into(),
            ));
        }
        if !data.len().is_multiple_of(cols) {
            return Err(Error::InvalidInput(format!(
                "{} values do not fill rows of {cols} columns",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "row {}, column {}: value is not a finite number",
                i / cols + 1,
                i % cols + 1
            )));
        }
        let rows = data.len() / cols;
        Ok(Self { data, rows, cols })
    }

    /// A matrix with no rows and `cols` columns (at least one).
    pub fn empty(cols: usize) -> Self {
        Self {
            data: Vec::new(),
            rows: 0,
            cols: cols.max(1),
        }
    }

    /// A matrix of values generated finite by construction (synthetic data).
    pub(crate) fn from_parts(data: Vec<f32>, cols: usize) -> Self {
        let rows = data.len() / cols;
        Self { data, rows, cols }
    }

    /// A matrix from `f64` rows, converting to `f32`.
    pub fn from_rows<R: AsRef<[f64]>>(rows: &[R]) -> Result<Self> {
        let cols = rows.first().map(|r| r.as_ref().len()).unwrap_or(0);
        let mut data = Vec::with_capacity(rows.len() * cols);
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != cols {
                return Err(Error::InvalidInput(format!(
                    "row {} has {} values, the first row has {cols}",
                    i + 1,
                    row.len()
                )));
            }
            data.extend(row.iter().map(|&v| v as f32));
        }
        Self::new(data, cols)
    }

    /// A matrix from column-major `f64` data (MATLAB, Arrow columns).
    pub fn from_columns(columns: &[&[f64]]) -> Result<Self> {
        let cols = columns.len();
        let rows = columns.first().map(|c| c.len()).unwrap_or(0);
        if columns.iter().any(|c| c.len() != rows) {
            return Err(Error::InvalidInput("columns differ in length".into()));
        }
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            data.extend(columns.iter().map(|c| c[r] as f32));
        }
        Self::new(data, cols)
    }

    /// The borrowed view.
    pub fn view(&self) -> MatrixView<'_> {
        MatrixView {
            data: &self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The row-major values.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

impl<'a> MatrixView<'a> {
    /// A view over row-major data; the caller's values should be finite.
    pub fn new(data: &'a [f32], cols: usize) -> Result<Self> {
        if cols == 0 || !data.len().is_multiple_of(cols) {
            return Err(Error::InvalidInput(format!(
                "{} values do not fill rows of {cols} columns",
                data.len()
            )));
        }
        Ok(Self {
            data,
            rows: data.len() / cols,
            cols,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The row-major values.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Rows `start..end` as a view.
    pub fn slice_rows(&self, start: usize, end: usize) -> MatrixView<'a> {
        MatrixView {
            data: &self.data[start * self.cols..end * self.cols],
            rows: end - start,
            cols: self.cols,
        }
    }
}
