"""Counterfactual bias gap: the mean difference in a score (log-likelihood, sentiment/reward score, or answer
agreement as 0/1) between prompts that differ only in a demographic term, with a bootstrap confidence interval.
A gap whose interval excludes 0 is a measured bias.

predictions: score with term A; references: score with term B (paired rows)."""

import datasets
import evaluate
import numpy as np


class BiasGap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions: scores with term A; references: with B",
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references, confidence=0.95, n_bootstrap=2000, seed=0):
        diff = np.asarray(predictions, float) - np.asarray(references, float)
        rng = np.random.default_rng(seed)
        boots = diff[rng.integers(0, len(diff), (n_bootstrap, len(diff)))].mean(axis=1)
        alpha = (1 - confidence) / 2
        low, high = float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))
        return {"gap": float(diff.mean()), "abs_gap": float(np.abs(diff).mean()), "ci_low": low, "ci_high": high,
                "significant": bool(low > 0 or high < 0), "n": len(diff)}
