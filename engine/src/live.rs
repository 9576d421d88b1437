//! The streaming detector inside the engine: every tracked metric of every workload is a
//! series of the detector `aegis backtest` runs, fed one point per resolution slot (the
//! slot's first sample: a scrape interval's worth), scored at the tick after it arrived.
//! The per-series state ([`Series`]) lives with the workload; the forests are pooled per
//! metric ([`Pool`]), so memory stays a few kilobytes per series at 100,000 of them.
//!
//! A tick scores the series with new points in parallel against the pools as they stood,
//! then hands what each point offers to its pool in entity order (see [`Pool::absorb`]);
//! a series with several new points is taken one point per round, so a pool refits
//! between points as the sequential detector would.

use rayon::prelude::*;

use crate::stream::{Offer, Pool, Series, StreamConfig};

/// Entities with new points below which a tick scores on the calling thread (the pool's
/// start-up costs more than a handful of series).
const PARALLEL_FROM: usize = 64;

/// One workload metric as a streaming series.
#[derive(Debug, Clone)]
pub(crate) struct LiveSeries {
    series: Series,
    /// Absolute slot (`timestamp / resolution`) of the newest point taken.
    last_slot: i64,
    /// Points taken since the last tick, in arrival order.
    pending: Vec<f64>,
}

/// Per metric (configured order), the workload's series once it has a sample.
pub(crate) type EntityStreams = Vec<Option<LiveSeries>>;

/// The per-metric pools and the settings of their series.
#[derive(Debug)]
pub(crate) struct Pools {
    pools: Vec<Pool>,
    resolution_ms: i64,
}

/// What a tick's scoring found for one metric of an entity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamPoint {
    /// The highest stream score of the metric's new points.
    pub score: f64,
    /// The newest point's distance from its lagged baseline, in baseline deviations.
    pub level: f64,
}

/// Per metric (configured order), what a tick's scoring found (`None`: no new point
/// scored — no new slot, or the series is warming up).
pub type MetricScores = Vec<Option<StreamPoint>>;

impl Pools {
    /// One pool per metric; the series' step is the engine's resolution.
    pub(crate) fn new(config: &StreamConfig, metrics: usize, resolution_ms: i64) -> Self {
        let resolution_ms = resolution_ms.max(1);
        let config = StreamConfig {
            step_secs: config.step_secs.or(Some(resolution_ms as f64 / 1_000.0)),
            ..config.clone()
        };
        let pools = (0..metrics)
            // Metric k's pool salts its seeds with k: the first metric's forests are the
            // ones a backtest of the same points grows.
            .map(|k| Pool::new(config.clone(), k as u64))
            .collect();
        Self {
            pools,
            resolution_ms,
        }
    }

    /// An empty set of series for a new entity.
    pub(crate) fn streams(&self) -> EntityStreams {
        vec![None; self.pools.len()]
    }

    /// Takes a stored sample of `metric`: the first sample of a slot newer than the last
    /// point becomes the series' next point (resends and later samples of a slot do not).
    pub(crate) fn take(
        &mut self,
        streams: &mut EntityStreams,
        metric: usize,
        timestamp_ms: i64,
        value: f64,
    ) {
        let (Some(slot_of), Some(pool)) = (streams.get_mut(metric), self.pools.get_mut(metric))
        else {
            return;
        };
        let live = slot_of.get_or_insert_with(|| {
            pool.join();
            LiveSeries {
                series: Series::new(pool.config()),
                last_slot: i64::MIN,
                pending: Vec::new(),
            }
        });
        let slot = timestamp_ms.div_euclid(self.resolution_ms);
        if slot > live.last_slot {
            live.last_slot = slot;
            live.pending.push(value);
        }
    }

    /// An entity is dropped: its series leave their pools.
    pub(crate) fn leave(&mut self, streams: &EntityStreams) {
        for (pool, live) in self.pools.iter_mut().zip(streams) {
            if let Some(live) = live {
                pool.leave(live.series.kind());
            }
        }
    }

    /// Scores the pending points of `entities`, in rounds: the first pending point of
    /// every entity's series (in parallel when there are many), then the pools take what
    /// those points offer, in entity order; then the second points, and so on. A series
    /// that brings many points at once (a backfill, a replay) is scored as if they had
    /// come one a tick. Returns each entity's per-metric findings.
    pub(crate) fn score(&mut self, mut entities: Vec<&mut EntityStreams>) -> Vec<MetricScores> {
        let mut found: Vec<MetricScores> = entities.iter().map(|e| vec![None; e.len()]).collect();
        let rounds = entities
            .iter()
            .flat_map(|e| e.iter().flatten().map(|l| l.pending.len()))
            .max()
            .unwrap_or(0);
        for round in 0..rounds {
            let pools = &self.pools;
            let one = |(streams, found): (&mut &mut EntityStreams, &mut MetricScores)| {
                let mut offers = Vec::new();
                for (k, (live, slot)) in streams.iter_mut().zip(found.iter_mut()).enumerate() {
                    let (Some(live), Some(pool)) = (live, pools.get(k)) else {
                        continue;
                    };
                    let Some(value) = live.pending.get(round).copied() else {
                        continue;
                    };
                    let (s, offer) = live.series.observe(value, pool);
                    if offer.scored_by.is_some() {
                        let score = slot.map_or(s.score, |b| b.score.max(s.score));
                        *slot = Some(StreamPoint {
                            score,
                            level: s.level,
                        });
                    }
                    offers.push((k, offer));
                }
                offers
            };
            let offers: Vec<Vec<(usize, Offer)>> = if entities.len() < PARALLEL_FROM {
                entities.iter_mut().zip(found.iter_mut()).map(one).collect()
            } else {
                entities
                    .par_iter_mut()
                    .zip(found.par_iter_mut())
                    .map(one)
                    .collect()
            };
            for (k, offer) in offers.into_iter().flatten() {
                if let Some(pool) = self.pools.get_mut(k) {
                    pool.absorb(offer);
                }
            }
        }
        for streams in &mut entities {
            for live in streams.iter_mut().flatten() {
                live.pending.clear();
                // A backlog's buffer is not kept: a hundred thousand series hold one each.
                if live.pending.capacity() > 16 {
                    live.pending.shrink_to(4);
                }
            }
        }
        found
    }

    /// Whether any pool has a fitted model, the rows held for fits, and models fitted.
    pub(crate) fn status(&self) -> (bool, usize, usize) {
        (
            self.pools.iter().any(Pool::ready),
            self.pools.iter().map(Pool::rows).sum(),
            self.pools.iter().map(Pool::fits).sum(),
        )
    }

    /// Bytes of the pools' training rows.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.pools.iter().map(Pool::memory_bytes).sum()
    }
}

/// Bytes held by one entity's series.
pub(crate) fn streams_bytes(streams: &EntityStreams) -> usize {
    streams
        .iter()
        .flatten()
        .map(|l| l.series.memory_bytes() + l.pending.capacity() * 8)
        .sum()
}
