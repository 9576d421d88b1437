//! The shared half of the streaming detector: the isolation forests and the rows they are
//! fitted on, pooled across every series of one kind (one metric of every workload in the
//! live loop, the one series of a backtest).
//!
//! Shape rows are scale-free (each feature in units of its own series' spread), so one
//! forest can judge many series: what it learns is how shapes of this kind usually look.
//! What makes a score mean something for one series — its own history of raw scores,
//! its range, its cooldown — stays with that series ([`super::Series`]). A pool of one
//! series behaves exactly as a detector of its own, which is what a backtest runs.
//!
//! Two models per pool: `plain` scores series that have not shown a full day yet (their
//! seasonal feature is held at 0), `seasonal` those that have (fitted on rows with the
//! feature live, once a warm-up's worth of them is collected).
//!
//! Time, not rows, sets the schedule: with `n` series in a model, a row is kept with
//! chance 1/n and a refit comes after `n` times the points, so the training rows span the
//! same stretch of each series' time as a detector of one series would, and the forest
//! costs the same per tick whether it watches one series or a hundred thousand.

use std::collections::VecDeque;

use aegis_detectors::{IsolationForest, IsolationForestParams, Matrix};

use super::StreamConfig;
use super::shape::FEATURES;

/// Fits made a warm-up apart before the regular schedule: the first models have seen
/// little, so they are replaced soon.
const EARLY_FITS: usize = 4;
/// Fewest rows a forest is fitted on.
pub(super) const MIN_FIT: usize = 16;

/// Which of a pool's two models a series uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelKind {
    /// Series that have not shown a full day: the seasonal feature held at 0.
    #[default]
    Plain,
    /// Series that have: the seasonal feature live.
    Seasonal,
}

impl ModelKind {
    fn index(self) -> usize {
        match self {
            Self::Plain => 0,
            Self::Seasonal => 1,
        }
    }
}

/// One model of a pool: its forest, the rows it is refitted on and its schedule.
#[derive(Debug, Default)]
struct Model {
    forest: Option<IsolationForest>,
    /// Recent rows that did not alarm (a ring, `reservoir` long).
    ring: VecDeque<[f32; FEATURES]>,
    /// Points scored by this model since its last fit.
    since_fit: usize,
    fits: usize,
    /// Series that use this model now.
    members: usize,
    /// Rows offered so far (drives which rows are kept).
    offered: u64,
}

/// What one point of a series asks of its pool after it was scored: the row to keep
/// (when it may train), and which model scored it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    /// The model whose ring may keep `row`.
    pub kind: ModelKind,
    /// The shape row (`None`: the point alarmed and must not train).
    pub row: Option<[f32; FEATURES]>,
    /// The model that scored the point (`None`: the series is warming up).
    pub scored_by: Option<ModelKind>,
    /// The series moved from `Plain` to `Seasonal` at this point.
    pub switched: bool,
}

/// The forests shared by the series of one kind.
#[derive(Debug)]
pub struct Pool {
    config: StreamConfig,
    models: [Model; 2],
    /// A salt for the seeds, so pools of different metrics grow different trees.
    salt: u64,
}

/// splitmix64: a well-mixed hash of a counter (which rows a pool keeps).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Pool {
    /// An empty pool; `salt` varies the seeds between pools (0 for a backtest).
    pub fn new(config: StreamConfig, salt: u64) -> Self {
        Self {
            config,
            models: [Model::default(), Model::default()],
            salt,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// The forest of `kind`, once fitted.
    pub(super) fn forest(&self, kind: ModelKind) -> Option<&IsolationForest> {
        self.models[kind.index()].forest.as_ref()
    }

    /// Models fitted so far, both kinds.
    pub fn fits(&self) -> usize {
        self.models.iter().map(|m| m.fits).sum()
    }

    /// Whether any model is fitted.
    pub fn ready(&self) -> bool {
        self.models.iter().any(|m| m.forest.is_some())
    }

    /// Rows held for the next fit (both kinds).
    pub fn rows(&self) -> usize {
        self.models.iter().map(|m| m.ring.len()).sum()
    }

    /// Bytes of the rows held for fits (the forests themselves are a fixed few MB).
    pub fn memory_bytes(&self) -> usize {
        self.rows() * size_of::<[f32; FEATURES]>()
    }

    /// A new series joins (it starts on the plain model).
    pub fn join(&mut self) {
        self.models[ModelKind::Plain.index()].members += 1;
    }

    /// A series leaves (evicted); `kind` is the model it used.
    pub fn leave(&mut self, kind: ModelKind) {
        let m = &mut self.models[kind.index()];
        m.members = m.members.saturating_sub(1);
    }

    /// Takes what one scored point offers: keeps its row (with chance 1/members), counts
    /// it towards the scorer's schedule, and fits or refreshes a model that is due.
    pub fn absorb(&mut self, offer: Offer) {
        if offer.switched {
            self.leave(ModelKind::Plain);
            self.models[ModelKind::Seasonal.index()].members += 1;
        }
        let cap = self.config.reservoir.max(MIN_FIT);
        let salt = self.salt;
        if let Some(row) = offer.row {
            let m = &mut self.models[offer.kind.index()];
            m.offered += 1;
            let members = m.members.max(1) as u64;
            if members == 1 || mix(m.offered ^ salt).is_multiple_of(members) {
                m.ring.push_back(row);
                while m.ring.len() > cap {
                    m.ring.pop_front();
                }
            }
        }
        if let Some(kind) = offer.scored_by {
            self.models[kind.index()].since_fit += 1;
        }
        for kind in [ModelKind::Plain, ModelKind::Seasonal] {
            self.maybe_fit(kind);
        }
    }

    /// Fits the first model once a warm-up's worth of rows is held; then refits early
    /// and often while the model has seen little, and refreshes half the trees on the
    /// regular schedule.
    fn maybe_fit(&mut self, kind: ModelKind) {
        let warmup = self.config.warmup_points.max(MIN_FIT);
        let m = &self.models[kind.index()];
        let members = m.members.max(1);
        if m.forest.is_none() {
            if m.ring.len() >= warmup {
                self.fit(kind);
            }
            return;
        }
        let every = if m.fits < EARLY_FITS {
            warmup
        } else {
            self.config.retrain_every.max(1)
        };
        if m.since_fit >= every.saturating_mul(members) {
            if m.fits < EARLY_FITS {
                self.fit(kind);
            } else {
                self.refresh(kind);
            }
        }
    }

    fn seed(&self, kind: ModelKind) -> u64 {
        let m = &self.models[kind.index()];
        self.config
            .seed
            .wrapping_add(m.fits as u64)
            .wrapping_add((kind.index() as u64) << 32)
            ^ self.salt
    }

    fn ring_matrix(&self, kind: ModelKind) -> Option<Matrix> {
        let ring = &self.models[kind.index()].ring;
        if ring.len() < MIN_FIT {
            return None;
        }
        let flat: Vec<f32> = ring.iter().flatten().copied().collect();
        Matrix::new(flat, FEATURES).ok()
    }

    fn fit(&mut self, kind: ModelKind) {
        let Some(x) = self.ring_matrix(kind) else {
            return;
        };
        let params = IsolationForestParams {
            seed: self.seed(kind),
            trees: self.config.trees,
            sample_size: self.config.sample_size,
            extension_level: None,
        };
        let m = &mut self.models[kind.index()];
        if let Ok(mut f) = IsolationForest::fit(x.view(), &params) {
            // One row at a time never uses the batch layout; refreshes need not rebuild it.
            f.release_fast_layout();
            m.forest = Some(f);
            m.fits += 1;
        }
        m.since_fit = 0;
    }

    /// The older half of the trees regrown on the recent rows (a streaming forest: half
    /// the cost of a refit, each tree lives two periods).
    fn refresh(&mut self, kind: ModelKind) {
        let Some(x) = self.ring_matrix(kind) else {
            return;
        };
        let seed = self.seed(kind);
        let half = self.config.trees.div_ceil(2);
        let m = &mut self.models[kind.index()];
        let done = match &mut m.forest {
            Some(forest) => forest.refresh(x.view(), half, seed).unwrap_or(false),
            None => false,
        };
        if done {
            m.fits += 1;
            m.since_fit = 0;
        } else {
            self.fit(kind);
        }
    }
}
