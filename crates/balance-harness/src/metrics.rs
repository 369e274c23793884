//! Per-task metrics computed in Rust: exact AUC (ties get the average rank), log loss, MSE.

/// Area under the ROC curve by the rank statistic (Mann-Whitney U), exact, with tied scores sharing
/// their average rank. `None` when either class is absent or a score is NaN.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels.iter().filter(|&&y| y > 0.5).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let tied_positives = order[i..=j].iter().filter(|&&k| labels[k] > 0.5).count();
        rank_sum += average_rank * tied_positives as f64;
        i = j + 1;
    }
    let p = positives as f64;
    let n = negatives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Mean binary cross-entropy of probabilities `probs` against 0/1 `labels`, probabilities clipped to
/// `[1e-7, 1 - 1e-7]`.
pub fn log_loss(probs: &[f32], labels: &[f32]) -> f64 {
    const CLIP: f64 = 1e-7;
    let total: f64 = probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(CLIP, 1.0 - CLIP);
            if y > 0.5 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    total / probs.len().max(1) as f64
}

/// Mean squared error.
pub fn mse(predictions: &[f32], targets: &[f32]) -> f64 {
    let total: f64 = predictions
        .iter()
        .zip(targets)
        .map(|(&p, &y)| (p as f64 - y as f64).powi(2))
        .sum();
    total / predictions.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Rng;

    /// The definition, independently: the share of (positive, negative) pairs ranked correctly, ties 1/2.
    fn auc_by_pairs(scores: &[f32], labels: &[f32]) -> f64 {
        let mut correct = 0.0;
        let mut pairs = 0.0;
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if labels[i] > 0.5 && labels[j] < 0.5 {
                    pairs += 1.0;
                    correct += if si > sj {
                        1.0
                    } else if si == sj {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        correct / pairs
    }

    #[test]
    fn auc_hand_examples() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]),
            Some(0.75)
        );
        assert_eq!(auc(&[0.5, 0.5, 0.5], &[0.0, 1.0, 0.0]), Some(0.5));
        assert_eq!(auc(&[0.2, 0.9], &[1.0, 0.0]), Some(0.0));
        assert_eq!(auc(&[0.2, 0.9], &[1.0, 1.0]), None);
        assert_eq!(auc(&[f32::NAN, 0.9], &[1.0, 0.0]), None);
    }

    #[test]
    fn auc_equals_pair_counting_with_many_ties() {
        let mut rng = Rng::new(3);
        for _ in 0..20 {
            let n = 1 + rng.below(300) as usize;
            // Coarse scores so ties are frequent.
            let scores: Vec<f32> = (0..n).map(|_| rng.below(12) as f32 / 11.0).collect();
            let labels: Vec<f32> = (0..n)
                .map(|_| if rng.uniform() < 0.3 { 1.0 } else { 0.0 })
                .collect();
            match auc(&scores, &labels) {
                Some(a) => assert!((a - auc_by_pairs(&scores, &labels)).abs() < 1e-12),
                None => assert!(labels.iter().all(|&y| y == labels[0])),
            }
        }
    }

    #[test]
    fn log_loss_and_mse_closed_forms() {
        let ll = log_loss(&[0.8, 0.3], &[1.0, 0.0]);
        let expected = -((0.8f32 as f64).ln() + (1.0 - 0.3f32 as f64).ln()) / 2.0;
        assert!((ll - expected).abs() < 1e-12);
        assert!(log_loss(&[0.0], &[1.0]).is_finite());
        assert!((mse(&[1.0, 3.0], &[0.0, 1.0]) - 2.5).abs() < 1e-12);
    }
}
