//! Samples and log lines into the engine's windows; series forgotten when idle.

use super::*;

/// The rows of a log batch (`stream_id`, `timestamp_ns`, `line`, `level`).
pub(super) fn for_each_line(
    b: &arrow_array::RecordBatch,
    mut f: impl FnMut(u32, i64, &str, Option<&str>),
) {
    let (Some(ids), Some(ts), Some(lines)) = (
        b.column(0).as_any().downcast_ref::<UInt32Array>(),
        b.column(1).as_any().downcast_ref::<Int64Array>(),
        b.column(2).as_any().downcast_ref::<StringArray>(),
    ) else {
        return;
    };
    let levels = b.column(3).as_any().downcast_ref::<StringArray>();
    for i in 0..b.num_rows() {
        let level = levels.filter(|l| l.is_valid(i)).map(|l| l.value(i));
        f(ids.value(i), ts.value(i), lines.value(i), level);
    }
}

pub(super) fn labels_of(
    registry: &Arc<Mutex<aegis_ingest::SeriesRegistry>>,
    id: u32,
) -> Option<Vec<(String, String)>> {
    let r = registry.lock().unwrap_or_else(|p| p.into_inner());
    r.labels(id).map(|l| {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

impl HealingLoop {
    /// Folds one ingest batch into the windows; returns rows taken.
    pub fn apply(&self, batch: &aegis_ingest::SampleBatch, ingest: &aegis_ingest::Ingest) -> usize {
        let b = &batch.batch;
        let mut taken = 0;
        match batch.kind {
            aegis_ingest::BatchKind::Samples => {
                let (Some(ids), Some(ts), Some(vs)) = (
                    b.column(0).as_any().downcast_ref::<UInt32Array>(),
                    b.column(1).as_any().downcast_ref::<Int64Array>(),
                    b.column(2).as_any().downcast_ref::<Float64Array>(),
                ) else {
                    return 0;
                };
                let mut engine = self.engine();
                for i in 0..b.num_rows() {
                    let id = ids.value(i);
                    let labels = || labels_of(ingest.registry(), id);
                    taken +=
                        usize::from(engine.ingest_series(id, labels, ts.value(i), vs.value(i)));
                }
            }
            aegis_ingest::BatchKind::Logs => {
                {
                    let mut recent = self.recent_logs.lock().unwrap_or_else(|p| p.into_inner());
                    recent.push_back(b.clone());
                    let mut lines: usize = recent.iter().map(|r| r.num_rows()).sum();
                    let mut bytes: usize = recent.iter().map(|r| r.get_array_memory_size()).sum();
                    // Lines and bytes both bound it: 100,000 lines of 200 bytes are 20 MB,
                    // ten lines of 50 MB would be 500 MB.
                    while (lines > RECENT_LOG_LINES || bytes > RECENT_LOG_BYTES) && recent.len() > 1
                    {
                        let Some(old) = recent.pop_front() else { break };
                        lines -= old.num_rows();
                        bytes = bytes.saturating_sub(old.get_array_memory_size());
                    }
                }
                let mut engine = self.engine();
                self.detectors.with_drain(|drain| {
                    for_each_line(b, |id, ts_ns, line, level| {
                        let labels = || labels_of(ingest.streams(), id);
                        taken += usize::from(engine.ingest_log(
                            id,
                            labels,
                            ts_ns / 1_000_000,
                            line,
                            level,
                            drain,
                        ));
                    });
                });
            }
        }
        taken
    }

    /// Every sample in the engine's short windows: `(entity, metric, timestamp_ms, value)`.
    pub fn for_each_sample(&self, f: impl FnMut(&aegis_engine::Entity, &str, i64, f64)) {
        self.engine().for_each_sample(f);
    }

    /// The recent log lines kept: `(stream id, timestamp_ns, line, level)`, oldest first.
    pub fn for_each_log(&self, mut f: impl FnMut(u32, i64, &str, Option<&str>)) {
        let recent = self.recent_logs.lock().unwrap_or_else(|p| p.into_inner());
        for b in recent.iter() {
            for_each_line(b, &mut f);
        }
    }

    /// Adds one sample directly (scenario files, the demo, tests).
    pub fn ingest_sample(
        &self,
        labels: &[(String, String)],
        timestamp_ms: i64,
        value: f64,
    ) -> bool {
        self.engine().ingest(labels, timestamp_ms, value)
    }

    /// Adds one log line directly; `stream` identifies its label set.
    pub fn ingest_log(
        &self,
        stream: u32,
        labels: &[(String, String)],
        timestamp_ms: i64,
        line: &str,
        level: Option<&str>,
    ) -> bool {
        let mut engine = self.engine();
        self.detectors.with_drain(|drain| {
            engine.ingest_log(
                stream,
                || Some(labels.to_vec()),
                timestamp_ms,
                line,
                level,
                drain,
            )
        })
    }

    /// Forgets the series and streams ingest evicted as idle (`series_idle`), and the state
    /// the engine and the latest samples keep per id.
    pub fn forget_idle_series(
        &self,
        ingest: &aegis_ingest::Ingest,
        latest: &Mutex<aegis_ingest::LatestSamples>,
    ) -> (usize, usize) {
        let (series, streams) = ingest.evict_idle(self.settings.series_idle);
        if series.is_empty() && streams.is_empty() {
            return (0, 0);
        }
        self.engine().forget_series(&series, &streams);
        latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(&series);
        tracing::info!(
            series = series.len(),
            streams = streams.len(),
            "forgot series and log streams idle for {} s",
            self.settings.series_idle.as_secs()
        );
        (series.len(), streams.len())
    }
}
