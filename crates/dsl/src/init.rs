//! Seeded random tensors for model inputs and parameters.
//!
//! [`Rng`] is a small hand-written generator (xoshiro256**, seeded through
//! SplitMix64), and everything built on it uses only IEEE basic operations
//! (`+ - * /`, `sqrt`), which are correctly rounded everywhere. The
//! logarithm and cosine that Box–Muller needs are written out here rather
//! than taken from the platform's math library, whose last bit differs
//! between systems. So a seed gives the same values, bit for bit, on every
//! platform and in every version of this crate; changing any value this
//! module produces is a breaking change.
//!
//! [`Rng::fork`] derives an independent stream from a name, so each graph
//! input can draw from its own stream: adding, removing or reordering
//! inputs leaves the values of the others unchanged.
//!
//! ```
//! use birkhoff_dsl::{Init, Rng, random_tensor};
//! use birkhoff_ir::{DType, TensorType};
//!
//! let root = Rng::new(42);
//! let ty = TensorType::new(DType::F32, [2, 3]);
//! let x = random_tensor(&ty, &Init::default(), &mut root.fork("x"));
//! let again = random_tensor(&ty, &Init::default(), &mut root.fork("x"));
//! assert_eq!(x, again);
//! let w = random_tensor(&ty, &Init::Uniform { low: -1.0, high: 1.0 }, &mut root.fork("w"));
//! assert!(w.to_f64_vec().iter().all(|v| (-1.0..=1.0).contains(v)));
//! ```

use std::collections::BTreeMap;

use birkhoff_ir::{DType, Tensor, TensorType};

/// A deterministic pseudo-random number generator: xoshiro256** with its
/// state seeded by SplitMix64.
///
/// Not cryptographic. The stream for a seed is fixed forever (see the
/// module docs); it is `Clone`, and a clone continues the same stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded with `seed`. Every seed, including 0, gives a
    /// well-mixed, nonzero state.
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform sample from `[0, 1)`: a multiple of 2⁻⁵³, from the top 53
    /// bits of [`Rng::next_u64`].
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal sample (mean 0, standard deviation 1), by the
    /// Box–Muller transform. Each call consumes exactly two
    /// [`Rng::next_u64`] draws; the second value of the pair is not kept.
    /// Samples are finite, with magnitude below 8.6.
    pub fn normal(&mut self) -> f64 {
        // 1 - u is exact and lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * ln_unit(u1)).sqrt() * cos_turns(u2)
    }

    /// An independent generator derived from this one's current state and
    /// `name` (hashed with FNV-1a), without advancing this one.
    ///
    /// Forking the same state with the same name always gives the same
    /// stream; different names give unrelated streams.
    pub fn fork(&self, name: &str) -> Rng {
        let mut key = fnv1a64(name.as_bytes());
        for w in self.s {
            key = mix64(key ^ w);
        }
        Rng::new(key)
    }
}

/// How to draw the elements of a random tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// Normally distributed with this mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Uniformly distributed in `[low, high)` (before rounding to the
    /// dtype; see [`random_tensor`]).
    Uniform {
        /// Inclusive lower bound.
        low: f64,
        /// Exclusive upper bound.
        high: f64,
    },
    /// Every element equal to this value.
    Constant(f64),
    /// Exactly these values, drawn from nothing: the weights an imported
    /// model carries. A tensor of another type than the one asked for is
    /// ignored (the standard normal is drawn instead), so that a stale
    /// value never reaches a program with the wrong shape.
    Values(std::sync::Arc<Tensor>),
}

/// Suggested initialization per input name (what a model carries beside
/// its graph; [`random_inputs`] draws from it).
pub type Inits = BTreeMap<String, Init>;

impl Default for Init {
    /// The standard normal distribution.
    fn default() -> Self {
        Init::Normal {
            mean: 0.0,
            std: 1.0,
        }
    }
}

impl Init {
    /// One sample, in `f64`. `Constant` draws nothing.
    fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            Init::Normal { mean, std } => mean + std * rng.normal(),
            Init::Uniform { low, high } => low + (high - low) * rng.uniform(),
            Init::Constant(c) => c,
            Init::Values(_) => rng.normal(),
        }
    }
}

/// One input set for `graph`, drawn from `seed`: each input from its own
/// stream (`inits` suggests a distribution per name; standard normal
/// otherwise), so the values of one input do not depend on the others.
pub fn random_inputs(
    graph: &birkhoff_ir::Graph,
    inits: &crate::zoo::Inits,
    seed: u64,
) -> std::collections::BTreeMap<String, Tensor> {
    let root = Rng::new(seed);
    graph
        .inputs()
        .iter()
        .map(|&v| {
            let name = graph.input_name(v).unwrap_or_default().to_string();
            let init = inits.get(&name).cloned().unwrap_or_default();
            let t = random_tensor(graph.ty(v), &init, &mut root.fork(&name));
            (name, t)
        })
        .collect()
}

/// A tensor of type `ty` whose elements are drawn from `init`, one after
/// another in row-major order, using `rng`.
///
/// `Init::Values` of type `ty` gives its tensor as it is. Otherwise, per
/// dtype:
/// * floats: the `f64` sample rounded to the dtype (nearest, ties to even).
///   Rounding is monotonic, so `Uniform { low, high }` gives values in
///   `[round(low), round(high)]`; for `f64`, in `[low, high)`.
/// * `i32`: the sample rounded to the nearest integer (ties to even),
///   saturating at the `i32` range (NaN becomes 0).
/// * `bool`: a fair coin per element, `uniform() < 0.5`, whatever the
///   distribution, except that `Constant(c)` gives `c != 0` everywhere.
///
/// # Panics
///
/// If `ty` has more than [`birkhoff_ir::MAX_ELEMENTS`] elements; a verified
/// graph never has such a type.
pub fn random_tensor(ty: &TensorType, init: &Init, rng: &mut Rng) -> Tensor {
    let n = birkhoff_ir::num_elements(&ty.shape)
        .unwrap_or_else(|| panic!("random_tensor: type {ty} has too many elements"));
    if let Init::Values(t) = init
        && t.ty() == ty
    {
        return Tensor::clone(t);
    }
    let values: Vec<f64> = match (ty.dtype, init) {
        (DType::Bool, Init::Constant(c)) => vec![f64::from(u8::from(*c != 0.0)); n],
        (DType::Bool, _) => (0..n)
            .map(|_| f64::from(u8::from(rng.uniform() < 0.5)))
            .collect(),
        (DType::I32, _) => (0..n).map(|_| init.sample(rng).round_ties_even()).collect(),
        _ => (0..n).map(|_| init.sample(rng)).collect(),
    };
    // `from_f64` rounds floats to the dtype and converts integers with a
    // saturating cast; the count matches by construction.
    Tensor::from_f64(ty.clone(), &values).expect("element count matches the type")
}

/// One SplitMix64 step: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mix64(*state)
}

/// SplitMix64's output function: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a hash.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `ln(x)` for `x` in `[2⁻¹⁰²², 1]` (normal numbers only), within a few ulp,
/// from basic operations only.
///
/// With `x = 2^e · m`, `m` in `[√½, √2)`: `ln m = 2·atanh(f)`,
/// `f = (m − 1)/(m + 1)`, `|f| < 0.172`, and the series
/// `2f·Σ f^(2k)/(2k+1)` is cut where its terms drop below 10⁻¹⁸.
fn ln_unit(x: f64) -> f64 {
    debug_assert!(x.is_normal() && x > 0.0 && x <= 1.0);
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // The mantissa with the exponent of 1.0: m in [1, 2).
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let f = (m - 1.0) / (m + 1.0);
    let s = f * f;
    let mut p = 0.0;
    for k in (0..=11).rev() {
        p = p * s + 1.0 / f64::from(2 * k + 1);
    }
    e as f64 * std::f64::consts::LN_2 + 2.0 * f * p
}

/// `cos(2π·u)` for `u` in `[0, 1)`, within a few ulp, from basic operations
/// only.
///
/// `4u = q + r` splits the turn into a quarter-turn count `q` and a
/// fraction `r`; the angle is then `k·π/2 + φ` with `|φ| ≤ π/4` (rounding
/// `r` to the nearer quarter turn), and `cos`/`sin` of `φ` come from their
/// Taylor series, whose first omitted term is below 10⁻²⁰ there.
fn cos_turns(u: f64) -> f64 {
    debug_assert!((0.0..1.0).contains(&u));
    let quarters = 4.0 * u; // exact
    let q = quarters.floor();
    let r = quarters - q; // exact, in [0, 1)
    let (k, phi) = if r <= 0.5 {
        (q as u32, r * std::f64::consts::FRAC_PI_2)
    } else {
        (q as u32 + 1, -((1.0 - r) * std::f64::consts::FRAC_PI_2))
    };
    let t = phi * phi;
    // cos φ = 1 − t/(1·2)·(1 − t/(3·4)·(1 − …)), sin φ = φ·(1 − t/(2·3)·(1 − …)).
    let mut cos = 1.0;
    let mut sin = 1.0;
    for n in (1..=10).rev() {
        let n = f64::from(n);
        cos = 1.0 - t / ((2.0 * n - 1.0) * (2.0 * n)) * cos;
        sin = 1.0 - t / ((2.0 * n) * (2.0 * n + 1.0)) * sin;
    }
    let sin = phi * sin;
    match k % 4 {
        0 => cos,
        1 => -sin,
        2 => -cos,
        _ => sin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use birkhoff_ir::TensorData;

    #[test]
    fn streams_are_pinned() {
        // Reference values from an independent implementation of
        // SplitMix64 + xoshiro256**; they must never change.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0x99ec_5f36_cb75_f2b4);
        assert_eq!(r.next_u64(), 0xbf6e_1f78_4956_452a);
        assert_eq!(r.next_u64(), 0x1a5f_849d_4933_e6e0);
        let mut r = Rng::new(42);
        assert_eq!(r.next_u64(), 0x1578_0b2e_0c2e_c716);
        assert_eq!(r.next_u64(), 0x6104_d986_6d11_3a7e);
        assert_eq!(r.next_u64(), 0xae17_5332_39e4_99a1);
        // FNV-1a test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn derived_values_are_pinned() {
        // Pinned so that an accidental change to the samplers or to `fork`
        // shows up here. Checked against an independent implementation; its
        // normals, which used the platform's `ln` and `cos`, agreed to 2 ulp.
        let mut r = Rng::new(7);
        let got: Vec<u64> = (0..3).map(|_| r.normal().to_bits()).collect();
        assert_eq!(got, PINNED_NORMALS);
        let mut f = Rng::new(7).fork("x");
        assert_eq!(f.next_u64(), PINNED_FORK);
        assert_eq!(Rng::new(7).uniform().to_bits(), PINNED_UNIFORM);
    }

    const PINNED_NORMALS: [u64; 3] = [
        0xbfd1_db87_7110_2afd,
        0x3ffe_6573_bcb6_ffe2,
        0x4001_1727_9b9c_2ee5,
    ];
    const PINNED_FORK: u64 = 0xec32_376b_6df9_65c4;
    const PINNED_UNIFORM: u64 = 0x3fe6_6b1f_5ee9_df2e;

    #[test]
    fn same_seed_same_values_and_forks_are_independent() {
        let ty = TensorType::new(DType::F32, [4, 5]);
        let init = Init::default();
        let a = random_tensor(&ty, &init, &mut Rng::new(3));
        assert_eq!(a, random_tensor(&ty, &init, &mut Rng::new(3)));
        assert_ne!(a, random_tensor(&ty, &init, &mut Rng::new(4)));

        let root = Rng::new(3);
        let x = random_tensor(&ty, &init, &mut root.fork("x"));
        let y = random_tensor(&ty, &init, &mut root.fork("y"));
        assert_ne!(x, y);
        assert_ne!(x, a);
        // Forking does not advance the parent, and draws elsewhere do not
        // change a fork's stream.
        let mut other = root.fork("w");
        other.next_u64();
        assert_eq!(x, random_tensor(&ty, &init, &mut root.fork("x")));
        assert_eq!(root, Rng::new(3));
        // Nearby names give unrelated streams.
        let (mut p, mut q) = (root.fork("x0"), root.fork("x1"));
        let same = (0..64).filter(|_| p.next_u64() == q.next_u64()).count();
        assert_eq!(same, 0);
        // Forks of forks differ from both parents' forks.
        assert_ne!(root.fork("x").fork("x"), root.fork("x"));
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::new(1);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
        // Standard errors are 0.003 (mean) and 0.002 (std): allow 5σ.
        assert!(mean.abs() < 0.016, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 0.011, "std {}", var.sqrt());
        let skew = xs.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / n as f64;
        assert!(skew.abs() < 0.04, "skew {skew}");
        // Tails: P(|z| > 2) = 4.55%.
        let tail = xs.iter().filter(|x| x.abs() > 2.0).count() as f64 / n as f64;
        assert!((tail - 0.0455).abs() < 0.004, "tail {tail}");
        assert!(xs.iter().all(|x| x.is_finite() && x.abs() < 8.6));

        let t = random_tensor(
            &TensorType::new(DType::F64, [n]),
            &Init::Normal {
                mean: 3.0,
                std: 0.5,
            },
            &mut Rng::new(2),
        );
        let v = t.to_f64_vec();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        assert!((mean - 3.0).abs() < 0.008 && (std - 0.5).abs() < 0.006);
    }

    #[test]
    fn uniform_range_is_respected() {
        let mut r = Rng::new(5);
        let us: Vec<f64> = (0..100_000).map(|_| r.uniform()).collect();
        assert!(us.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = us.iter().sum::<f64>() / us.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");

        let (low, high) = (-0.3, 0.7);
        let init = Init::Uniform { low, high };
        for dtype in [DType::F32, DType::Bf16, DType::F64] {
            let t = random_tensor(&TensorType::new(dtype, [10_000]), &init, &mut Rng::new(6));
            let (lo, hi) = (dtype.round(low), dtype.round(high));
            let v = t.to_f64_vec();
            assert!(v.iter().all(|x| (lo..=hi).contains(x)), "{dtype}");
            if dtype == DType::F64 {
                assert!(v.iter().all(|x| (low..high).contains(x)));
            }
            // Both ends of the range are reached.
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert!(
                min < low + 0.01 && max > high - 0.01,
                "{dtype}: {min} {max}"
            );
        }
        let i = random_tensor(
            &TensorType::new(DType::I32, [1000]),
            &Init::Uniform {
                low: -2.0,
                high: 2.0,
            },
            &mut Rng::new(6),
        );
        let v = i.to_f64_vec();
        assert!(v.iter().all(|x| (-2.0..=2.0).contains(x)));
        for k in -2..=2 {
            assert!(v.contains(&f64::from(k)), "{k} never drawn");
        }
    }

    #[test]
    fn every_dtype_is_produced() {
        let init = Init::Normal {
            mean: 0.0,
            std: 10.0,
        };
        for dtype in DType::ALL {
            let ty = TensorType::new(dtype, [3, 4]);
            let t = random_tensor(&ty, &init, &mut Rng::new(9));
            assert_eq!(t.ty(), &ty);
            assert!(t.to_f64_vec().iter().all(|&x| dtype.holds(x)));
        }
        // Rank 0.
        let s = random_tensor(&TensorType::scalar(DType::F32), &init, &mut Rng::new(9));
        assert_eq!(s.shape(), &[] as &[usize]);

        // i32 rounds to nearest rather than truncating.
        let mut r = Rng::new(9);
        let expected: Vec<i32> = (0..12)
            .map(|_| init.sample(&mut r).round_ties_even() as i32)
            .collect();
        let t = random_tensor(&TensorType::new(DType::I32, [12]), &init, &mut Rng::new(9));
        assert_eq!(t.data(), &TensorData::I32(expected));

        // bool is a fair coin; a constant is a constant.
        let b = random_tensor(
            &TensorType::new(DType::Bool, [1000]),
            &init,
            &mut Rng::new(9),
        );
        let trues = b.to_f64_vec().iter().filter(|&&x| x == 1.0).count();
        assert!((400..600).contains(&trues), "{trues}");
        let c = random_tensor(
            &TensorType::new(DType::Bool, [3]),
            &Init::Constant(2.0),
            &mut Rng::new(9),
        );
        assert_eq!(c.data(), &TensorData::Bool(vec![true; 3]));
        let c = random_tensor(
            &TensorType::new(DType::Bf16, [2]),
            &Init::Constant(0.1),
            &mut Rng::new(9),
        );
        assert_eq!(c.to_f64_vec(), vec![DType::Bf16.round(0.1); 2]);
    }

    #[test]
    fn hand_written_math_matches_std() {
        let mut r = Rng::new(11);
        let mut worst_ln: f64 = 0.0;
        let mut worst_cos: f64 = 0.0;
        let mut check = |u: f64| {
            let x = 1.0 - u;
            worst_ln = worst_ln.max((ln_unit(x) - x.ln()).abs() / x.ln().abs().max(1e-300));
            let c = (2.0 * std::f64::consts::PI * u).cos();
            worst_cos = worst_cos.max((cos_turns(u) - c).abs());
        };
        for _ in 0..100_000 {
            check(r.uniform());
        }
        for u in [
            0.0,
            0.125,
            0.25,
            0.375,
            0.5,
            0.625,
            0.75,
            0.875,
            1.0 - 1e-16,
        ] {
            check(u);
        }
        // A few ulp; std's own cos(2πu) carries the rounding of 2πu (≤ 7e-16).
        assert!(worst_ln < 1e-15, "ln relative error {worst_ln:e}");
        assert!(worst_cos < 2e-15, "cos absolute error {worst_cos:e}");
        assert_eq!(ln_unit(1.0), 0.0);
        assert_eq!(cos_turns(0.0), 1.0);
        assert_eq!(cos_turns(0.5), -1.0);
        assert_eq!(ln_unit(0.5), -std::f64::consts::LN_2);
        assert!((ln_unit(2f64.powi(-53)) - (-53.0 * std::f64::consts::LN_2)).abs() < 1e-13);
    }
}
