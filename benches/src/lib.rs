//! Aegis benchmarks: criterion suites under `benches/` (run with `cargo bench`, or
//! `cargo bench -- --quick` as CI does) and, as they arrive, load generators that compare
//! Aegis with its peers. Figures are recorded in `BENCHMARKS.md` at the repository root.
