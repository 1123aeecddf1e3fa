"""The evaluation report: `results.json` -> `report.md` (tables, PNG plots in `report_files/`) and `report.html`
(one self-contained page, plots inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from llm_recipes.hub import write_text_atomic

# the metric shown for a benchmark in plots: first of these that the task reports
PRIMARY = ("acc", "exact_match", "pass@1", "bits_per_byte", "acc_norm")


def _short(name: str) -> str:
    return name.rstrip("/").split("/")[-1] or name


def primary_metric(metrics: dict) -> str | None:
    return next((m for m in PRIMARY if m in metrics), next(iter(metrics), None))


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.4g}"
    return str(v)


# --------------------------------------------------------------------------------------------------- tables
def tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every section that has data."""
    models = [m["name"] for m in results["models"]]
    # a plug-in's summary tables open the report
    out = [(t["title"], t["header"], [[_fmt(c) for c in row] for row in t["rows"]]) for t in results.get("lead_tables", [])]
    bench = results.get("benchmarks", {})
    columns = []
    for m in models:
        for task, metrics in bench.get(m, {}).items():
            for metric in metrics:
                if (task, metric) not in columns:
                    columns.append((task, metric))
    if columns:
        out.append(("Benchmarks", ["benchmark", "metric", *models],
                    [[t, k, *[_fmt(bench.get(m, {}).get(t, {}).get(k)) for m in models]] for t, k in columns]))
    from llm_recipes.evaluation.decontamination import report_tables

    out += report_tables(results.get("decontamination"))
    red = results.get("red_team", {})
    if red:
        rows = []
        wrappers = sorted({w for m in models for w in red.get(m, {}).get("by_jailbreak", {})})
        for m in models:
            r = red.get(m)
            if not r:
                continue
            rows.append([m, "all", _fmt(r["refusal_rate"]), _fmt(r["harmful_compliance_rate"]), str(r["n"])])
            for w in wrappers:
                x = r["by_jailbreak"].get(w)
                if x:
                    rows.append([m, w, _fmt(x["refusal_rate"]), _fmt(x["harmful_compliance_rate"]), str(x["n"])])
        out.append((f"Red teaming (judge: {next(iter(red.values())).get('judge', '?')})",
                    ["model", "jailbreak", "refusal rate", "harmful compliance", "n"], rows))
    bias = results.get("bias", {})
    if bias:
        rows = []
        for m in models:
            for kind, attrs in bias.get(m, {}).items():
                for attr, g in attrs.items():
                    rows.append([m, kind, f"{attr} ({' vs '.join(g.get('terms', []))})", _fmt(g["gap"]),
                                 f"[{_fmt(g['ci_low'])}, {_fmt(g['ci_high'])}]", "yes" if g["significant"] else "no"])
        out.append(("Bias gaps (A - B, 95% CI)", ["model", "score", "attribute", "gap", "CI", "significant"], rows))
    comp = results.get("comparison", {})
    if comp.get("win_rates"):
        rows = []
        for m, entry in comp["win_rates"].items():
            for by, w in entry.items():
                rows.append([m, comp["baseline"], by, _fmt(w["win_rate"]), f"[{_fmt(w['ci_low'])}, {_fmt(w['ci_high'])}]",
                             f"{w['wins']}/{w['ties']}/{w['losses']}"])
        out.append((f"Win rate over {comp['baseline']} (scored by {comp.get('scored_by', '?')})",
                    ["model", "baseline", "by", "win rate", "CI", "W/T/L"], rows))
    limits = results.get("code_sandbox_limits")
    if limits:  # a run with allow_weaker_sandbox shows here which limits did not hold
        out.append(("Code sandbox: limits that held on this machine", ["limit", "held"],
                    [[name, "yes" if held else "NO"] for name, held in limits.items()]))
    for table in results.get("extra_tables", []):  # a benchmark plug-in's own tables
        out.append((table["title"], table["header"], [[_fmt(c) for c in row] for row in table["rows"]]))
    return out


def markdown_tables(results: dict) -> str:
    """Every table of the report as markdown (what the evaluate stage prints when it ends)."""
    return "\n\n".join(f"{title}\n{md_table(header, rows)}" for title, header, rows in tables(results))


# --------------------------------------------------------------------------------------------------- plots
def plots(results: dict) -> dict[str, bytes]:
    """name -> PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = [m["name"] for m in results["models"]]
    labels = [_short(m) for m in models]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figs: dict[str, bytes] = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        figs[name] = buf.getvalue()

    def error_bars(points: list[float], lows: list[float], highs: list[float]) -> np.ndarray:
        """matplotlib's yerr (distances below and above), never negative: a bootstrap interval need not
        contain its point estimate, and rounding can put a Wilson bound a hair past it."""
        points = np.asarray(points, dtype=float)
        return np.clip(np.array([points - np.asarray(lows, dtype=float), np.asarray(highs, dtype=float) - points]), 0, None)

    def grouped(ax, groups, values, errors=None):
        width = 0.8 / max(1, len(models))
        x = np.arange(len(groups))
        for i, label in enumerate(labels):
            ax.bar(x + i * width - 0.4 + width / 2, values[i], width, label=label, color=colors[i % len(colors)],
                   yerr=None if errors is None else errors[i], capsize=3)
        ax.set_xticks(x, groups, rotation=20, ha="right", fontsize=8)
        ax.legend(fontsize=7)

    bench = results.get("benchmarks", {})
    tasks = sorted({t for m in models for t in bench.get(m, {})})
    if tasks:  # one panel per task: metrics live on different scales (accuracy, bits per byte, pass@k)
        cols = min(4, len(tasks))
        rows = -(-len(tasks) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 0.6, 2.6 * rows), squeeze=False)
        for ax, task in zip(axes.flat, tasks):
            metric = primary_metric(next(bench[m][task] for m in models if task in bench.get(m, {})))
            values = [bench.get(m, {}).get(task, {}).get(metric, 0) or 0 for m in models]
            ax.bar(range(len(models)), values, color=[colors[i % len(colors)] for i in range(len(models))])
            ax.set_xticks(range(len(models)), labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{task}: {metric}", fontsize=9)
            if metric in ("acc", "acc_norm", "exact_match") or metric.startswith("pass@"):
                ax.set_ylim(0, 1)
        for ax in list(axes.flat)[len(tasks):]:
            ax.axis("off")
        save(fig, "benchmarks")
    red = results.get("red_team", {})
    if red:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        keys = ["refusal_rate", "harmful_compliance_rate"]
        values = [[red.get(m, {}).get(k, 0) for k in keys] for m in models]
        errors = [error_bars([red.get(m, {}).get(k, 0) for k in keys], [red.get(m, {}).get(f"{k}_ci_low", 0) for k in keys],
                             [red.get(m, {}).get(f"{k}_ci_high", 0) for k in keys]) for m in models]
        grouped(ax, ["refusal rate", "harmful compliance"], values, errors)
        ax.set_ylim(0, 1.05)
        ax.set_title("Red teaming (95% Wilson CI)")
        save(fig, "red_team")
    bias = results.get("bias", {})
    kinds = sorted({k for m in models for k in bias.get(m, {})})
    if kinds:
        fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.2), squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            attrs = sorted({a for m in models for a in bias.get(m, {}).get(kind, {})})
            vals = [[bias.get(m, {}).get(kind, {}).get(a, {}).get("gap", 0) for a in attrs] for m in models]
            errs = [error_bars([g.get("gap", 0) for g in gs], [g.get("ci_low", 0) for g in gs], [g.get("ci_high", 0) for g in gs])
                    for gs in ([bias.get(m, {}).get(kind, {}).get(a, {}) for a in attrs] for m in models)]
            grouped(ax, attrs, vals, errs)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_title(f"bias gap: {kind}")
        save(fig, "bias")
    comp = results.get("comparison", {}).get("win_rates", {})
    if comp:
        fig, ax = plt.subplots(figsize=(5, 3))
        names = list(comp)
        for j, by in enumerate(sorted({b for e in comp.values() for b in e})):
            vals = [comp[m].get(by, {}).get("win_rate", 0) for m in names]
            stats = [comp[m].get(by, {}) for m in names]
            err = error_bars([w.get("win_rate", 0) for w in stats], [w.get("ci_low", 0) for w in stats],
                             [w.get("ci_high", 0) for w in stats])
            ax.bar(np.arange(len(names)) + 0.4 * j, vals, 0.4, yerr=err, capsize=3, label=by, color=colors[j])
        ax.axhline(0.5, color="black", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(names)), [_short(n) for n in names], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        ax.set_title(f"Win rate over {_short(results['comparison']['baseline'])}")
        save(fig, "win_rate")
    curves = results.get("curves", {})
    panels = [p for p in ("loss", "reward", "kl") if any(p in curves.get(m, {}) for m in models)]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            for i, m in enumerate(models):
                for key, points in curves.get(m, {}).get(panel, {}).items():
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, label=f"{_short(m)}: {key}", color=colors[i % len(colors)],
                            ls="-" if not key.startswith("eval") else "--", marker="." if len(xs) < 3 else None)
            ax.set_title(panel)
            ax.set_xlabel("step")
            ax.legend(fontsize=6)
        save(fig, "training_curves")
    return figs


# --------------------------------------------------------------------------------------------------- writers
def md_table(header, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header),
                      *["| " + " | ".join(map(esc, r)) + " |" for r in rows]])


def _html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


TITLES = {"benchmarks": "Benchmark scores", "red_team": "Red-team refusal rates", "bias": "Bias gaps",
          "win_rate": "Model comparison", "training_curves": "Training curves (loss, reward, KL)"}
CSS = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
       "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}img{max-width:100%;"
       "display:block;margin:1em 0}")


def write_report(results: dict, out_dir: str | Path) -> dict[str, str]:
    """Write report.md (+ report_files/*.png) and report.html; returns their paths."""
    out_dir = Path(out_dir)
    models = results["models"]
    figs = plots(results)
    sections = tables(results)
    md = [f"# {results.get('title', 'Evaluation report')}", "",
          "Models: " + ", ".join(f"`{m['name']}`" for m in models), ""]
    page = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(results.get('title', 'Evaluation report'))}"
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(results.get('title', 'Evaluation report'))}</h1>",
            "<p>Models: " + ", ".join(f"<code>{html.escape(m['name'])}</code>" for m in models) + "</p>"]
    (out_dir / "report_files").mkdir(parents=True, exist_ok=True)
    for name, png in figs.items():
        (out_dir / "report_files" / f"{name}.png").write_bytes(png)
    n_lead = len(results.get("lead_tables", []))  # a plug-in's summary tables open the report, before the plots

    def add_tables(chosen) -> None:
        nonlocal md, page
        for title, header, rows in chosen:
            md += [f"## {title}", "", md_table(header, rows), ""]
            page += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]

    add_tables(sections[:n_lead])
    for name, png in figs.items():  # then the plots: the side-by-side picture, then the numbers behind it
        md += [f"## {TITLES.get(name, name)}", "", f"![{name}](report_files/{name}.png)", ""]
        page.append(f"<h2>{TITLES.get(name, name)}</h2><img alt='{name}' src='data:image/png;base64,"
                    f"{base64.b64encode(png).decode()}'>")
    add_tables(sections[n_lead:])
    page.append("</body></html>")
    write_text_atomic(out_dir / "report.md", "\n".join(md) + "\n")
    write_text_atomic(out_dir / "report.html", "\n".join(page) + "\n")
    return {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html")}
