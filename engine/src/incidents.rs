//! Incidents per entity: one detection opens an incident and is reported once; the
//! incident closes only after the score has stayed below a lower threshold for a number of
//! ticks (hysteresis), so a signal flapping around the threshold acts once, not every time
//! it crosses.

use std::collections::HashMap;

use crate::Entity;

/// When an incident opens and closes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// Score at or above which an incident opens.
    pub open_at: f64,
    /// Score below which a tick counts as calm.
    pub calm_below: f64,
    /// Calm ticks in a row that close an incident.
    pub calm_ticks: u32,
    /// Ticks in a row at or above `open_at` that open one (like an alert's `for:`), so a
    /// single noisy tick does not act.
    pub open_ticks: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self {
            open_at: 0.6,
            calm_below: 0.55,
            calm_ticks: 30,
            open_ticks: 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Open {
    id: u64,
    calm: u32,
    peak: f64,
}

/// What a tick's score means for its entity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// A new incident: act on it.
    Opened {
        /// Incident id, unique in this process.
        id: u64,
    },
    /// Still the same incident: do not act again.
    Ongoing {
        /// Incident id.
        id: u64,
    },
    /// The incident ended after enough calm ticks.
    Closed {
        /// Incident id.
        id: u64,
        /// Highest score seen during it.
        peak: f64,
    },
    /// Nothing going on.
    Calm,
}

/// Open incidents by entity.
#[derive(Debug, Default)]
pub struct Incidents {
    rules: Hysteresis,
    open: HashMap<Entity, Open>,
    /// Entities above the threshold, not yet for `open_ticks`.
    pending: HashMap<Entity, u32>,
    next_id: u64,
}

impl Incidents {
    /// Tracking with `rules`.
    pub fn new(rules: Hysteresis) -> Self {
        Self {
            rules,
            open: HashMap::new(),
            pending: HashMap::new(),
            next_id: 1,
        }
    }

    /// Open incidents.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// A new incident id for an incident opened outside the scores (an alert from
    /// Alertmanager), so every incident of the process has its own.
    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Feeds one tick's score of `entity`.
    pub fn observe(&mut self, entity: &Entity, score: f64) -> Transition {
        let rules = self.rules;
        if let Some(open) = self.open.get_mut(entity) {
            open.peak = open.peak.max(score);
            if score < rules.calm_below {
                open.calm += 1;
                if open.calm >= rules.calm_ticks {
                    let (id, peak) = (open.id, open.peak);
                    self.open.remove(entity);
                    return Transition::Closed { id, peak };
                }
            } else {
                open.calm = 0;
            }
            return Transition::Ongoing { id: open.id };
        }
        if score >= rules.open_at {
            let seen = self.pending.entry(entity.clone()).or_insert(0);
            *seen += 1;
            if *seen < rules.open_ticks.max(1) {
                return Transition::Calm;
            }
            self.pending.remove(entity);
            let id = self.next_id;
            self.next_id += 1;
            self.open.insert(
                entity.clone(),
                Open {
                    id,
                    calm: 0,
                    peak: score,
                },
            );
            return Transition::Opened { id };
        }
        self.pending.remove(entity);
        Transition::Calm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Entity {
        Entity {
            namespace: "production".into(),
            workload: "api".into(),
        }
    }

    #[test]
    fn a_flapping_signal_opens_one_incident() {
        let mut inc = Incidents::new(Hysteresis {
            open_at: 0.6,
            calm_below: 0.55,
            calm_ticks: 3,
            open_ticks: 1,
        });
        let scores = [0.5, 0.61, 0.59, 0.62, 0.58, 0.61, 0.5, 0.5, 0.5, 0.5, 0.65];
        let t: Vec<Transition> = scores.iter().map(|s| inc.observe(&api(), *s)).collect();
        let opened: Vec<usize> = t
            .iter()
            .enumerate()
            .filter(|(_, x)| matches!(x, Transition::Opened { .. }))
            .map(|(i, _)| i)
            .collect();
        // Opens at the first crossing, stays open through the flapping, closes after three
        // calm ticks, and a later spike is a new incident.
        assert_eq!(opened, vec![1, 10]);
        assert_eq!(t[8], Transition::Closed { id: 1, peak: 0.62 });
        assert_eq!(t[9], Transition::Calm);
        assert_eq!(t[10], Transition::Opened { id: 2 });
        assert_eq!(t[5], Transition::Ongoing { id: 1 });
        // Entities are independent.
        let db = Entity {
            namespace: "production".into(),
            workload: "db".into(),
        };
        assert_eq!(inc.observe(&db, 0.7), Transition::Opened { id: 3 });
        assert_eq!(inc.open_count(), 2);
    }

    #[test]
    fn open_ticks_wait_for_a_sustained_signal() {
        let mut inc = Incidents::new(Hysteresis {
            open_at: 0.6,
            calm_below: 0.55,
            calm_ticks: 3,
            open_ticks: 3,
        });
        // Two ticks above, one below: nothing; three in a row: open on the third.
        let t: Vec<Transition> = [0.7, 0.7, 0.5, 0.7, 0.7, 0.7]
            .iter()
            .map(|s| inc.observe(&api(), *s))
            .collect();
        assert!(t[..5].iter().all(|x| *x == Transition::Calm), "{t:?}");
        assert_eq!(t[5], Transition::Opened { id: 1 });
    }
}
