//! Encoding steps shared by the loaders ([`census`](super::census), [`csv_schema`](super::csv_schema)):
//! dense columns standardised with training statistics, and categorical vocabularies built from the
//! training rows.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Per-column mean and population standard deviation of the training rows of a row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Standardiser {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Standardiser {
    /// Mean and population standard deviation (two passes, in `f64`) of each of the `width` columns over
    /// the first `rows` rows of `data`; a standard deviation that is 0 (or not finite) becomes 1, so a
    /// constant column is only centred.
    pub(crate) fn fit<T: Copy + Into<f64>>(data: &[T], width: usize, rows: usize) -> Self {
        let used = &data[..(rows * width).min(data.len())];
        let n = (used.len() / width.max(1)).max(1) as f64;
        let mut mean = vec![0.0f64; width];
        for row in used.chunks_exact(width.max(1)) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += (*x).into();
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0f64; width];
        for row in used.chunks_exact(width.max(1)) {
            for ((v, m), x) in var.iter_mut().zip(&mean).zip(row) {
                let d = (*x).into() - m;
                *v += d * d;
            }
        }
        let std = var
            .iter()
            .map(|v| {
                let s = (v / n).sqrt();
                if s > 0.0 && s.is_finite() {
                    s
                } else {
                    1.0
                }
            })
            .collect();
        Self { mean, std }
    }

    /// Column `j`'s value `x`, standardised.
    pub(crate) fn standardise(&self, j: usize, x: f64) -> f64 {
        (x - self.mean[j]) / self.std[j]
    }

    /// Standardises every row of the row-major `data` in place.
    pub(crate) fn apply_f32(&self, data: &mut [f32]) {
        let width = self.mean.len().max(1);
        for row in data.chunks_exact_mut(width) {
            for (j, x) in row.iter_mut().enumerate() {
                *x = self.standardise(j, f64::from(*x)) as f32;
            }
        }
    }

    /// Standardises every row of the row-major `data` in place.
    pub(crate) fn apply_f64(&self, data: &mut [f64]) {
        let width = self.mean.len().max(1);
        for row in data.chunks_exact_mut(width) {
            for (j, x) in row.iter_mut().enumerate() {
                *x = self.standardise(j, *x);
            }
        }
    }
}

/// A categorical vocabulary: values seen in the training rows get ids `1..` in order of first
/// appearance; id 0 is for anything else (unseen, or missing when the caller says so).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Vocabulary<K: Hash + Eq> {
    ids: HashMap<K, i64>,
}

impl<K: Hash + Eq> Default for Vocabulary<K> {
    fn default() -> Self {
        Self {
            ids: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Vocabulary<K> {
    /// The id of a training value, adding it when new.
    pub(crate) fn insert(&mut self, value: K) -> i64 {
        let next = self.ids.len() as i64 + 1;
        *self.ids.entry(value).or_insert(next)
    }

    /// The id of `value`: its training id, or 0 when it was not seen.
    pub(crate) fn id<Q>(&self, value: &Q) -> i64
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.ids.get(value).copied().unwrap_or(0)
    }

    /// The vocabulary size an embedding table needs: the distinct training values plus id 0.
    pub(crate) fn size(&self) -> i64 {
        self.ids.len() as i64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardiser_uses_the_training_rows_and_centres_constant_columns() {
        // Two columns; rows 0..3 train: [10, 20, 30] (mean 20, std sqrt(200/3)) and constant 5.
        let data = [10.0f32, 5.0, 20.0, 5.0, 30.0, 5.0, 1000.0, 7.0];
        let s = Standardiser::fit(&data, 2, 3);
        let mut out = data;
        s.apply_f32(&mut out);
        let sd = (200.0f64 / 3.0).sqrt();
        assert!((f64::from(out[0]) + 10.0 / sd).abs() < 1e-6);
        assert_eq!(out[2], 0.0);
        assert!((f64::from(out[6]) - 980.0 / sd).abs() < 1e-3);
        assert_eq!((out[1], out[7]), (0.0, 2.0));
        let mut wide: Vec<f64> = data.iter().map(|&x| f64::from(x)).collect();
        s.apply_f64(&mut wide);
        assert_eq!(wide[7], 2.0);
    }

    #[test]
    fn vocabulary_ids_follow_first_appearance_and_unseen_is_zero() {
        let mut v: Vocabulary<String> = Vocabulary::default();
        assert_eq!(v.insert("b".into()), 1);
        assert_eq!(v.insert("a".into()), 2);
        assert_eq!(v.insert("b".into()), 1);
        assert_eq!((v.id("a"), v.id("zzz"), v.size()), (2, 0, 3));
    }
}
