//! Seeded synthetic data. For now: the benchmark scenario of GUIDE section 5, three cascading binary tasks
//! (response -> conversion -> high-value, each nested in the previous) over 8 dense and 4 categorical
//! features. A pure-Rust generator (SplitMix64 + Box-Muller), so data never depends on libtorch's RNG.

use tch::{Kind, Tensor};

use crate::batch::Batch;
use crate::input::InputConfig;

/// A small, seedable generator (SplitMix64) whose whole state is one `u64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `[0, n)` (`n >= 1`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The benchmark scenario's input: 8 dense features, 4 categorical features of vocabulary 1,000,
/// embedding width 16.
pub fn bench_input() -> InputConfig {
    InputConfig {
        dense: 8,
        vocab_sizes: vec![1000; 4],
        embedding_dim: 16,
    }
}

/// `rows` examples of the cascade: `y1 ~ B(sigmoid(z1))`, `y2 = y1 * B(sigmoid(z2))`,
/// `y3 = y2 * B(sigmoid(z3))`, each `z` a linear function of the dense features plus per-id effects plus an
/// intercept chosen for positive rates near 34 %, 10 % and 6 %.
pub fn cascade(rows: usize, seed: u64) -> Batch {
    let input = bench_input();
    let mut rng = Rng::new(seed);
    let dense_n = input.dense as usize;
    let cats = input.vocab_sizes.len();
    // The teacher: dense coefficients and per-id effects per task.
    let coef: Vec<Vec<f64>> = (0..3)
        .map(|_| (0..dense_n).map(|_| rng.normal() * 0.5).collect())
        .collect();
    let effects: Vec<Vec<Vec<f64>>> = (0..3)
        .map(|_| {
            input
                .vocab_sizes
                .iter()
                .map(|&v| (0..v).map(|_| rng.normal() * 0.4).collect())
                .collect()
        })
        .collect();
    let intercepts = [-0.9, -1.0, 0.6];
    let mut dense = Vec::with_capacity(rows * dense_n);
    let mut ids = Vec::with_capacity(rows * cats);
    let mut labels = Vec::with_capacity(rows * 3);
    for _ in 0..rows {
        let x: Vec<f64> = (0..dense_n).map(|_| rng.normal()).collect();
        let row_ids: Vec<usize> = input
            .vocab_sizes
            .iter()
            .map(|&v| rng.below(v as u64) as usize)
            .collect();
        let mut alive = 1.0;
        for t in 0..3 {
            let z = intercepts[t]
                + x.iter().zip(&coef[t]).map(|(a, b)| a * b).sum::<f64>()
                + row_ids
                    .iter()
                    .enumerate()
                    .map(|(c, &id)| effects[t][c][id])
                    .sum::<f64>();
            let y = if rng.uniform() < sigmoid(z) {
                alive
            } else {
                0.0
            };
            labels.push(y as f32);
            alive = y;
        }
        dense.extend(x.iter().map(|&v| v as f32));
        ids.extend(row_ids.iter().map(|&i| i as i64));
    }
    Batch {
        dense: Tensor::from_slice(&dense).reshape([rows as i64, dense_n as i64]),
        sparse: Tensor::from_slice(&ids).reshape([rows as i64, cats as i64]),
        labels: Tensor::from_slice(&labels)
            .reshape([rows as i64, 3])
            .to_kind(Kind::Float),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascade_is_nested_seeded_and_near_its_rates() {
        let a = cascade(20_000, 7);
        let b = cascade(20_000, 7);
        assert!(a.labels.equal(&b.labels) && a.dense.equal(&b.dense));
        let rates: Vec<f64> = (0..3)
            .map(|t| a.task_labels(t).mean(Kind::Double).double_value(&[]))
            .collect();
        assert!((0.25..0.45).contains(&rates[0]), "{rates:?}");
        assert!((0.06..0.16).contains(&rates[1]), "{rates:?}");
        assert!((0.03..0.10).contains(&rates[2]), "{rates:?}");
        // Nested: a conversion implies a response, a high-value label implies a conversion.
        let l = &a.labels;
        assert_eq!(
            l.narrow(1, 1, 1)
                .gt_tensor(&l.narrow(1, 0, 1))
                .sum(Kind::Int64)
                .int64_value(&[]),
            0
        );
        assert_eq!(
            l.narrow(1, 2, 1)
                .gt_tensor(&l.narrow(1, 1, 1))
                .sum(Kind::Int64)
                .int64_value(&[]),
            0
        );
    }

    #[test]
    fn rng_uniform_and_normal_moments() {
        let mut rng = Rng::new(1);
        let n = 100_000;
        let u: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
        let mean = u.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01);
        let z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let var = z.iter().map(|x| x * x).sum::<f64>() / n as f64;
        assert!((var - 1.0).abs() < 0.02);
    }
}
