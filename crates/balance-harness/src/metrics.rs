//! Per-task metrics computed in Rust: exact AUC (ties get the average rank), average precision (PR-AUC,
//! ties as one threshold), log loss from logits, Normalized Entropy, MSE.
//!
//! Ranking metrics take scores of any monotone scale: the trainer passes logits, so nothing saturates
//! into ties as float32 sigmoids do at |z| > 17.

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

/// Average precision (the area under the precision-recall curve as a step function, as scikit-learn's
/// `average_precision_score`): `sum_k (R_k - R_{k-1}) P_k` over the distinct score thresholds in decreasing
/// order, so tied scores enter together as one threshold. `None` when there is no positive or a score is
/// NaN.
pub fn average_precision(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let positives = labels.iter().filter(|&&y| y > 0.5).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut true_pos, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0f64, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        true_pos += order[i..=j].iter().filter(|&&k| labels[k] > 0.5).count();
        seen += j - i + 1;
        let recall = true_pos as f64 / positives as f64;
        ap += (recall - last_recall) * (true_pos as f64 / seen as f64);
        last_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

/// Mean binary cross-entropy of `logits` against 0/1 `labels`, in `f64` from the logits
/// (`softplus(z) - y z`), so confident predictions are neither clipped nor infinite.
pub fn log_loss_from_logits(logits: &[f32], labels: &[f32]) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(&z, &y)| {
            let z = z as f64;
            let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
            softplus - if y > 0.5 { z } else { 0.0 }
        })
        .sum();
    total / logits.len().max(1) as f64
}

/// Entropy in nats of a Bernoulli(`p`) label: the log loss of the best constant predictor (0 at 0 and 1).
pub fn binary_entropy(p: f64) -> f64 {
    let term = |q: f64| if q > 0.0 { -q * q.ln() } else { 0.0 };
    term(p) + term(1.0 - p)
}

/// Normalized Entropy (He et al., 2014): the log loss divided by the entropy of the labels' base rate in
/// the same set, so 1 is the best constant predictor and lower is better. `None` (undefined) when the set
/// has no positive or no negative.
pub fn normalized_entropy(logits: &[f32], labels: &[f32]) -> Option<f64> {
    let positives = labels.iter().filter(|&&y| y > 0.5).count();
    if positives == 0 || positives == labels.len() {
        return None;
    }
    let base = binary_entropy(positives as f64 / labels.len() as f64);
    Some(log_loss_from_logits(logits, labels) / base)
}

/// The number of positive (`> 0.5`) labels.
pub fn positives(labels: &[f32]) -> u64 {
    labels.iter().filter(|&&y| y > 0.5).count() as u64
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
        // logit(0.8) = ln 4, logit(0.3) = ln(3/7).
        let logits = [4f64.ln() as f32, (3.0f64 / 7.0).ln() as f32];
        let ll = log_loss_from_logits(&logits, &[1.0, 0.0]);
        let expected = -(0.8f64.ln() + 0.7f64.ln()) / 2.0;
        assert!((ll - expected).abs() < 1e-7, "{ll} vs {expected}");
        // A confident wrong logit costs its size, not a clip.
        assert!((log_loss_from_logits(&[-50.0], &[1.0]) - 50.0).abs() < 1e-12);
        assert!(log_loss_from_logits(&[80.0], &[1.0]) < 1e-30);
        assert!((mse(&[1.0, 3.0], &[0.0, 1.0]) - 2.5).abs() < 1e-12);
    }

    /// The definition, independently: for every distinct threshold `t` (descending), precision and recall
    /// of `score >= t` by counting over all examples, summed as `(R_k - R_{k-1}) P_k`.
    fn ap_by_thresholds(scores: &[f32], labels: &[f32]) -> f64 {
        let mut thresholds: Vec<f32> = scores.to_vec();
        thresholds.sort_by(|a, b| b.total_cmp(a));
        thresholds.dedup();
        let positives = labels.iter().filter(|&&y| y > 0.5).count() as f64;
        let (mut ap, mut last) = (0.0, 0.0);
        for t in thresholds {
            let chosen: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] >= t).collect();
            let tp = chosen.iter().filter(|&&i| labels[i] > 0.5).count() as f64;
            let recall = tp / positives;
            ap += (recall - last) * tp / chosen.len() as f64;
            last = recall;
        }
        ap
    }

    #[test]
    fn average_precision_hand_examples() {
        // scikit-learn's documented example: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        // = 0.8333...: thresholds 0.8 (P 1, R 1/2), 0.4 (P 1/2), 0.35 (P 2/3, R 1): 1/2 + 1/2 * 2/3.
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-12, "{ap}");
        // All tied: one threshold, precision = base rate.
        let ap = average_precision(&[0.5; 4], &[1.0, 0.0, 0.0, 0.0]).unwrap();
        assert!((ap - 0.25).abs() < 1e-12);
        // Ties across classes are not broken in the positives' favour: [p, n] tied at the top then p.
        let ap = average_precision(&[0.9, 0.9, 0.1], &[1.0, 0.0, 1.0]).unwrap();
        assert!((ap - (0.5 * 0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-12, "{ap}");
        assert_eq!(average_precision(&[0.2, 0.9], &[0.0, 0.0]), None);
        assert_eq!(average_precision(&[f32::NAN], &[1.0]), None);
    }

    #[test]
    fn average_precision_equals_threshold_counting_with_many_ties() {
        let mut rng = Rng::new(9);
        for _ in 0..30 {
            let n = 1 + rng.below(300) as usize;
            let scores: Vec<f32> = (0..n).map(|_| rng.below(15) as f32 - 7.0).collect();
            let labels: Vec<f32> = (0..n)
                .map(|_| if rng.uniform() < 0.1 { 1.0 } else { 0.0 })
                .collect();
            match average_precision(&scores, &labels) {
                Some(ap) => assert!((ap - ap_by_thresholds(&scores, &labels)).abs() < 1e-12),
                None => assert!(labels.iter().all(|&y| y < 0.5)),
            }
        }
    }

    #[test]
    fn normalized_entropy_is_one_for_the_base_rate_and_undefined_without_both_classes() {
        let labels = [1.0, 0.0, 0.0, 0.0, 0.0];
        let base_logit = (0.2f64 / 0.8).ln() as f32;
        let ne = normalized_entropy(&[base_logit; 5], &labels).unwrap();
        assert!((ne - 1.0).abs() < 1e-6, "{ne}");
        // Better than the base rate: below 1; a perfect ranking with large logits: near 0.
        let good = normalized_entropy(&[3.0, -3.0, -3.0, -3.0, -3.0], &labels).unwrap();
        assert!(good < 0.2, "{good}");
        assert_eq!(normalized_entropy(&[0.0, 1.0], &[0.0, 0.0]), None);
        assert_eq!(normalized_entropy(&[0.0, 1.0], &[1.0, 1.0]), None);
        assert!((binary_entropy(0.5) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(binary_entropy(0.0), 0.0);
        assert_eq!(positives(&labels), 1);
    }
}
