//! Seeded random numbers: one reproducible stream per tree, whatever the thread count.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The generator every detector uses; documented as stable for a given seed and build.
pub(crate) type DetRng = Xoshiro256PlusPlus;

/// The stream for item `index` (a tree) under `seed`, independent of scheduling.
pub(crate) fn stream(seed: u64, index: u64) -> DetRng {
    // SplitMix64 of the pair so neighbouring indices get unrelated streams.
    let mut z = seed
        ^ index
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Xoshiro256PlusPlus::seed_from_u64(z ^ (z >> 31))
}

/// A standard normal draw (Box–Muller), for hyperplane normals and synthetic data.
pub(crate) fn normal(rng: &mut DetRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
