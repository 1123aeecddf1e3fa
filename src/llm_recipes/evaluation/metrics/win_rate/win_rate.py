"""Win rate of model A over model B from per-prompt scores (reward model or judge): a win counts 1, a tie 0.5.
Reports a bootstrap confidence interval over prompts.

predictions: scores of A; references: scores of B (same prompts, same order)."""

import datasets
import evaluate
import numpy as np


class WinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions: float scores of A; references: of B",
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references, tie_margin=0.0, confidence=0.95, n_bootstrap=2000, seed=0):
        a, b = np.asarray(predictions, float), np.asarray(references, float)
        diff = a - b
        outcome = np.where(diff > tie_margin, 1.0, np.where(diff < -tie_margin, 0.0, 0.5))
        rng = np.random.default_rng(seed)
        boots = outcome[rng.integers(0, len(outcome), (n_bootstrap, len(outcome)))].mean(axis=1)
        alpha = (1 - confidence) / 2
        return {"win_rate": float(outcome.mean()), "ci_low": float(np.quantile(boots, alpha)),
                "ci_high": float(np.quantile(boots, 1 - alpha)), "wins": int((outcome == 1).sum()),
                "ties": int((outcome == 0.5).sum()), "losses": int((outcome == 0).sum()), "n": len(outcome)}
