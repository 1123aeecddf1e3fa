"""Evaluation: lm-eval benchmarks, sandboxed code execution, red teaming, bias audits, model comparison, report."""
