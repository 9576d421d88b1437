//! Evaluation measures: ROC AUC for detectors, precision/recall/F1 for classifiers.

/// Area under the ROC curve of `scores` (higher = more anomalous) against `labels`
/// (true = anomaly), ties counted half (the Mann–Whitney U statistic). `None` when one
/// class is missing.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    let positives = labels[..n].iter().filter(|l| **l).count();
    let negatives = n - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' ranks, tied groups sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * order[i..j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Precision, recall and F1 of one class from counts; 0 where undefined.
pub fn precision_recall_f1(true_pos: usize, false_pos: usize, false_neg: usize) -> (f64, f64, f64) {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(true_pos, true_pos + false_pos);
    let recall = ratio(true_pos, true_pos + false_neg);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &labels), Some(0.5));
        // One positive above one of two negatives: 0.5; with a tie: 0.25 + 0.5 / 2.
        assert_eq!(roc_auc(&[0.1, 0.3, 0.2], &[false, false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.2, 0.3, 0.2], &[false, false, true]), Some(0.25));
        assert_eq!(roc_auc(&[0.2, 0.3], &[false, false]), None);
    }

    #[test]
    fn f1_from_counts() {
        let (p, r, f) = precision_recall_f1(8, 2, 8);
        assert!((p - 0.8).abs() < 1e-12 && (r - 0.5).abs() < 1e-12);
        assert!((f - 2.0 * 0.8 * 0.5 / 1.3).abs() < 1e-12);
        assert_eq!(precision_recall_f1(0, 0, 0), (0.0, 0.0, 0.0));
    }
}
