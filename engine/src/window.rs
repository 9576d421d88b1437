//! One series at a fixed resolution over a fixed span, as a ring of slots.
//!
//! No single sample can move a window. A sample more than a span ahead of the head would
//! clear the whole ring; it is held until the next sample confirms the jump (that sample is
//! at or after the held one, less a span: the series really moved on, as after an outage or
//! a replay's shifted series) and dropped as [`SeriesWindow::jumps_refused`] when the next
//! sample refutes it (back near the old head: a skewed clock, a bad export, a sample from
//! years ahead). Likewise a lone first sample far ahead of every later one gives way to
//! them. So after any one out-of-bounds sample, the series keeps taking in-bounds ones.

/// What happened to a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Stored in a new or empty slot.
    Stored,
    /// Replaced an older sample of the same slot (a later timestamp wins).
    Replaced,
    /// Ignored: same slot, older or equal timestamp (a duplicate or a stale resend).
    Duplicate,
    /// Dropped: older than the window's span.
    TooLate,
    /// Held: more than a span ahead of the head; stored when the next sample confirms the
    /// jump, dropped when it refutes it.
    Held,
    /// Dropped: not a finite number.
    Invalid,
}

/// A ring of `slots` slots of `resolution_ms`; the newest slot is the one holding the
/// newest timestamp seen. Slots without a sample are missing (`None` from [`get`](Self::get)).
#[derive(Debug, Clone)]
pub struct SeriesWindow {
    resolution_ms: i64,
    values: Vec<f64>,
    stamps: Vec<i64>,
    /// Absolute slot number (`timestamp / resolution`) of the newest slot; `None` when empty.
    head: Option<i64>,
    /// Samples dropped because they were older than the span.
    pub late: u64,
    /// A sample more than a span ahead of the head, waiting for the next one.
    held: Option<(i64, f64)>,
    /// Samples dropped because they jumped ahead of the series and the next sample did not
    /// follow (or a lone first sample that every later one was far behind).
    pub jumps_refused: u64,
    /// Running sum, sum of squares and count of the present slots, so a long baseline's
    /// mean and spread cost O(1) per tick; recomputed exactly once per turn of the ring
    /// so rounding cannot drift.
    sum: f64,
    sum_sq: f64,
    present: usize,
    changes: usize,
}

impl SeriesWindow {
    /// A window of `span_ms` at `resolution_ms` (at least one slot).
    pub fn new(span_ms: i64, resolution_ms: i64) -> Self {
        let resolution_ms = resolution_ms.max(1);
        let slots = (span_ms / resolution_ms).max(1) as usize;
        Self {
            resolution_ms,
            values: vec![f64::NAN; slots],
            stamps: vec![i64::MIN; slots],
            head: None,
            late: 0,
            held: None,
            jumps_refused: 0,
            sum: 0.0,
            sum_sq: 0.0,
            present: 0,
            changes: 0,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.values.len()
    }

    /// Bytes held by the buffers (for memory accounting).
    pub fn memory_bytes(&self) -> usize {
        self.values.len() * (std::mem::size_of::<f64>() + std::mem::size_of::<i64>())
    }

    fn index(&self, slot: i64) -> usize {
        slot.rem_euclid(self.values.len() as i64) as usize
    }

    /// Adds a sample at `timestamp_ms` (see the module documentation for jumps).
    pub fn insert(&mut self, timestamp_ms: i64, value: f64) -> Insert {
        if !value.is_finite() {
            return Insert::Invalid;
        }
        let slot = timestamp_ms.div_euclid(self.resolution_ms);
        let n = self.values.len() as i64;
        if let Some((held_ms, held_value)) = self.held.take() {
            if slot > held_ms.div_euclid(self.resolution_ms).saturating_sub(n) {
                // The series moved on: the held sample was real.
                self.place(held_ms, held_value);
            } else {
                self.jumps_refused += 1;
            }
        }
        match self.head {
            Some(head) if slot.saturating_sub(head) >= n => {
                self.held = Some((timestamp_ms, value));
                return Insert::Held;
            }
            Some(head) if slot <= head.saturating_sub(n) && self.present == 1 => {
                // The window holds one sample, far ahead of this one: a lone outlier
                // must not make the series "late" for ever.
                self.jumps_refused += 1;
                self.clear();
            }
            _ => {}
        }
        self.place(timestamp_ms, value)
    }

    /// Empties the ring.
    fn clear(&mut self) {
        self.values.fill(f64::NAN);
        self.stamps.fill(i64::MIN);
        self.head = None;
        self.sum = 0.0;
        self.sum_sq = 0.0;
        self.present = 0;
        self.changes = 0;
    }

    /// Stores a sample, moving the head forward when it is newer.
    fn place(&mut self, timestamp_ms: i64, value: f64) -> Insert {
        let slot = timestamp_ms.div_euclid(self.resolution_ms);
        let n = self.values.len() as i64;
        match self.head {
            None => self.head = Some(slot),
            Some(head) if slot > head => {
                // Clear the slots the ring moves over (all of them after a long gap).
                let steps = (slot - head).min(n);
                for s in (slot - steps + 1)..=slot {
                    let i = self.index(s);
                    self.set(i, f64::NAN);
                    self.stamps[i] = i64::MIN;
                }
                self.head = Some(slot);
            }
            Some(head) if slot <= head - n => {
                self.late += 1;
                return Insert::TooLate;
            }
            Some(_) => {}
        }
        let i = self.index(slot);
        if self.stamps[i] == i64::MIN {
            self.set(i, value);
            self.stamps[i] = timestamp_ms;
            Insert::Stored
        } else if timestamp_ms > self.stamps[i] {
            self.set(i, value);
            self.stamps[i] = timestamp_ms;
            Insert::Replaced
        } else {
            Insert::Duplicate
        }
    }

    /// Writes slot `i`, keeping the running sums.
    fn set(&mut self, i: usize, value: f64) {
        let old = self.values[i];
        if !old.is_nan() {
            self.sum -= old;
            self.sum_sq -= old * old;
            self.present -= 1;
        }
        if !value.is_nan() {
            self.sum += value;
            self.sum_sq += value * value;
            self.present += 1;
        }
        self.values[i] = value;
        self.changes += 1;
        if self.changes >= self.values.len() {
            self.changes = 0;
            let present = self.values.iter().filter(|v| !v.is_nan());
            self.sum = present.clone().sum();
            self.sum_sq = present.clone().map(|v| v * v).sum();
            self.present = present.count();
        }
    }

    /// Count, mean and population standard deviation of the present slots, in O(1).
    pub fn mean_std(&self) -> (usize, f64, f64) {
        if self.present == 0 {
            return (0, 0.0, 0.0);
        }
        let n = self.present as f64;
        let mean = self.sum / n;
        (
            self.present,
            mean,
            (self.sum_sq / n - mean * mean).max(0.0).sqrt(),
        )
    }

    /// The value of the slot `age` slots before the newest (0 = newest).
    pub fn get(&self, age: usize) -> Option<f64> {
        let head = self.head?;
        if age >= self.values.len() {
            return None;
        }
        let v = self.values[self.index(head - age as i64)];
        (!v.is_nan()).then_some(v)
    }

    /// The slots oldest first (missing as NaN), into `out`.
    pub fn values_into(&self, out: &mut Vec<f64>) {
        out.clear();
        let Some(head) = self.head else { return };
        let n = self.values.len() as i64;
        out.extend((head - n + 1..=head).map(|s| self.values[self.index(s)]));
    }

    /// The slots oldest first as two slices (the ring's two halves), without copying;
    /// empty when nothing was inserted.
    pub fn slices(&self) -> (&[f64], &[f64]) {
        let Some(head) = self.head else {
            return (&[], &[]);
        };
        let split = self.index(head) + 1;
        let (newer, older) = self.values.split_at(split);
        (older, newer)
    }

    /// The present samples, oldest first, as `(timestamp_ms, value)` (each slot keeps the
    /// latest sample it was given).
    pub fn for_each(&self, mut f: impl FnMut(i64, f64)) {
        let Some(head) = self.head else { return };
        let n = self.values.len() as i64;
        for slot in head - n + 1..=head {
            let i = self.index(slot);
            let v = self.values[i];
            if !v.is_nan() {
                f(self.stamps[i], v);
            }
        }
    }

    /// The newest slot's start time in milliseconds.
    pub fn head_ms(&self) -> Option<i64> {
        self.head.map(|h| h * self.resolution_ms)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn gaps_duplicates_out_of_order_and_late_samples() {
        let mut w = SeriesWindow::new(5_000, 1_000);
        assert_eq!(w.slots(), 5);
        assert_eq!(w.insert(10_000, 1.0), Insert::Stored);
        assert_eq!(w.insert(12_000, 3.0), Insert::Stored);
        // Out of order but inside the span.
        assert_eq!(w.insert(11_000, 2.0), Insert::Stored);
        // Same slot: a later timestamp wins, an older one or a resend does not.
        assert_eq!(w.insert(12_500, 3.5), Insert::Replaced);
        assert_eq!(w.insert(12_200, 9.0), Insert::Duplicate);
        assert_eq!(w.insert(12_500, 9.0), Insert::Duplicate);
        assert_eq!(w.insert(12_600, f64::NAN), Insert::Invalid);
        assert_eq!(
            (w.get(0), w.get(1), w.get(2)),
            (Some(3.5), Some(2.0), Some(1.0))
        );
        // A gap: slots 13 and 14 stay missing.
        assert_eq!(w.insert(15_000, 5.0), Insert::Stored);
        assert_eq!(
            (w.get(0), w.get(1), w.get(2), w.get(3)),
            (Some(5.0), None, None, Some(3.5))
        );
        // Older than the span (slot 10 ≤ 15 − 5).
        assert_eq!(w.insert(10_999, 0.0), Insert::TooLate);
        assert_eq!(w.late, 1);
        let mut v = Vec::new();
        w.values_into(&mut v);
        let (a, b) = w.slices();
        let joined: Vec<f64> = a.iter().chain(b).copied().collect();
        assert_eq!(
            format!("{joined:?}"),
            format!("{v:?}"),
            "slices are the same slots, oldest first"
        );
        assert_eq!(v.len(), 5);
        assert_eq!(v[0], 2.0);
        assert!(v[2].is_nan());
        // A jump past the whole span is held until the next sample follows it; then it
        // clears everything.
        assert_eq!(w.insert(100_000, 7.0), Insert::Held);
        assert_eq!(w.get(0), Some(5.0), "one sample does not move the window");
        assert_eq!(w.insert(101_000, 8.0), Insert::Stored);
        assert_eq!((w.get(0), w.get(1)), (Some(8.0), Some(7.0)));
        assert!((2..5).all(|a| w.get(a).is_none()));
        // A jump the next sample does not follow is dropped.
        assert_eq!(w.insert(9_000_000, 1e9), Insert::Held);
        assert_eq!(w.insert(102_000, 9.0), Insert::Stored);
        assert_eq!(w.jumps_refused, 1);
        assert_eq!(
            (w.get(0), w.get(1), w.get(2)),
            (Some(9.0), Some(8.0), Some(7.0))
        );
        // A lone first sample far ahead gives way to the series.
        let mut w = SeriesWindow::new(5_000, 1_000);
        assert_eq!(w.insert(9_000_000, 1e9), Insert::Stored);
        assert_eq!(w.insert(10_000, 1.0), Insert::Stored);
        assert_eq!(w.insert(11_000, 2.0), Insert::Stored);
        assert_eq!(
            (w.get(0), w.get(1), w.jumps_refused),
            (Some(2.0), Some(1.0), 1)
        );
    }

    #[test]
    fn running_mean_and_spread_match_a_full_pass() {
        let mut w = SeriesWindow::new(50_000, 1_000);
        for t in 0..500i64 {
            w.insert(
                t * 1_000 + (t % 3) * 100,
                (t as f64 * 0.37).sin() * 100.0 + 1e6,
            );
            if t % 7 == 0 {
                w.insert(t * 1_000 + 900, 5.0);
            }
            let mut v = Vec::new();
            w.values_into(&mut v);
            let full = crate::features::summarize(&v);
            let (n, mean, std) = w.mean_std();
            assert_eq!(n, full.count);
            assert!((mean - full.mean).abs() < 1e-6, "{mean} vs {}", full.mean);
            assert!((std - full.std).abs() < 1e-3, "{std} vs {}", full.std);
        }
    }

    proptest! {
        /// Issue 30: after any one out-of-bounds sample (years ahead or behind, anywhere in
        /// the stream), the series keeps taking in-bounds ones: the window ends as it would
        /// have without that sample. The one exception is a sample far behind a window that
        /// holds a single slot: two samples far apart cannot tell which is the outlier, so
        /// the window starts over from the samples that follow (and ends as a window fed
        /// only those).
        #[test]
        fn one_sample_never_moves_the_window(
            gaps in proptest::collection::vec(0i64..3_000, 3..150),
            at in 0usize..150,
            offset in prop_oneof![Just(-6 * 365 * 86_400_000i64), Just(200_000_000_000i64), 1_000_000i64..10_000_000_000],
        ) {
            let mut ts = 1_600_000_000_000i64;
            let samples: Vec<(i64, f64)> = gaps.iter().enumerate().map(|(i, g)| { ts += g; (ts, i as f64) }).collect();
            let at = at.min(samples.len() - 2);
            let mut clean = SeriesWindow::new(60_000, 1_000);
            let mut dirty = SeriesWindow::new(60_000, 1_000);
            let mut lone_before = false;
            for (i, (t, v)) in samples.iter().enumerate() {
                if i == at {
                    lone_before = clean.mean_std().0 == 1;
                    let bogus = samples[i.saturating_sub(1)].0 + offset;
                    dirty.insert(bogus, -1.0);
                }
                clean.insert(*t, *v);
                dirty.insert(*t, *v);
            }
            let same = |a: &SeriesWindow, b: &SeriesWindow| {
                a.head_ms() == b.head_ms() && (0..60).all(|age| a.get(age) == b.get(age))
            };
            if !same(&dirty, &clean) {
                prop_assert!(offset < 0 && lone_before, "the window moved: head {:?} vs {:?}", dirty.head_ms(), clean.head_ms());
                let mut rest = SeriesWindow::new(60_000, 1_000);
                for (t, v) in &samples[at..] {
                    rest.insert(*t, *v);
                }
                prop_assert!(same(&dirty, &rest), "head {:?} vs {:?}", dirty.head_ms(), rest.head_ms());
            }
        }

        /// Against a plain map of slot → (timestamp, value), for any order of samples.
        #[test]
        fn agrees_with_a_naive_model(samples in proptest::collection::vec((0i64..60_000, -1e6f64..1e6), 1..200)) {
            let mut w = SeriesWindow::new(10_000, 1_000);
            let mut naive: std::collections::BTreeMap<i64, (i64, f64)> = Default::default();
            let mut head: Option<i64> = None;
            // The jump rule, spelled out: a sample ten or more slots ahead of the head waits
            // for the next one, which confirms it (not ten slots behind it) or drops it; a
            // sample ten slots behind a lone first sample replaces it.
            let mut held: Option<(i64, f64)> = None;
            let place = |naive: &mut std::collections::BTreeMap<i64, (i64, f64)>, head: &mut Option<i64>, ts: i64, v: f64| {
                let slot = ts / 1_000;
                if head.is_some_and(|h| slot <= h - 10) { return; }
                *head = Some(head.map_or(slot, |h| h.max(slot)));
                let e = naive.entry(slot).or_insert((i64::MIN, 0.0));
                if ts > e.0 { *e = (ts, v); }
            };
            for (ts, v) in &samples {
                w.insert(*ts, *v);
                let slot = ts / 1_000;
                if let Some((hts, hv)) = held.take()
                    && slot > hts / 1_000 - 10
                {
                    place(&mut naive, &mut head, hts, hv);
                }
                if let Some(h) = head {
                    if slot - h >= 10 {
                        held = Some((*ts, *v));
                        continue;
                    }
                    let live: Vec<i64> = naive.keys().copied().filter(|k| *k > h - 10).collect();
                    if slot <= h - 10 && live.len() == 1 {
                        naive.clear();
                        head = None;
                    }
                }
                place(&mut naive, &mut head, *ts, *v);
            }
            let head = head.unwrap_or(0);
            for age in 0..10 {
                let slot = head - age as i64;
                let expected = naive.get(&slot).map(|(_, v)| *v);
                prop_assert_eq!(w.get(age), expected, "age {}", age);
            }
        }
    }
}
