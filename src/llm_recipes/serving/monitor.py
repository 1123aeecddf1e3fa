"""`llm-recipes monitor <log.jsonl>`: the serve log summed up (requests, errors by status, latency percentiles,
tokens, filter firings per filter, feedback, the most flagged prompts) and a plot (latency histogram, filter
firings over time).

    llm-recipes monitor runs/serve/requests.jsonl [--output plot.png] [--json summary.json] [--top 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

from llm_recipes.errors import DataError
from llm_recipes.serving.config import CHAT_PATH, FEEDBACK_PATH


def read_log(path: str | Path) -> list[dict]:
    """Every line of the log as a dict; a line that is not a JSON object with `path` and `status` is a DataError
    naming the file and line (nothing is summed from a log that cannot be read whole)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such log file")
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not a JSON line ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: not a JSON object")
            for key in ("path", "status"):
                if key not in record:
                    raise DataError(f"{path}:{number}: no '{key}' (not a line of the serve log)")
            problem = _bad_field(record)
            if problem:
                raise DataError(f"{path}:{number}: {problem}")
            records.append(record)
    return records


def _bad_field(record: dict) -> str | None:
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(record["status"], int) or isinstance(record["status"], bool):
        return f"'status' must be an HTTP status, got {record['status']!r}"
    if record.get("latency_s") is not None and not number(record["latency_s"]):
        return f"'latency_s' must be a number, got {record['latency_s']!r}"
    for key in ("prompt_tokens", "completion_tokens"):
        if record.get(key) is not None and not (isinstance(record[key], int) and not isinstance(record[key], bool)):
            return f"'{key}' must be an integer, got {record[key]!r}"
    filters = record.get("filters")
    if filters is not None and not (isinstance(filters, list) and all(isinstance(h, dict) for h in filters)):
        return "'filters' must be a list of {filter, stage, action, detail}"
    if record.get("kind") == "rating" and not number(record.get("rating")):
        return f"'rating' must be a number, got {record.get('rating')!r}"
    return None


def last_user_text(messages: list | None) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def summarize(records: list[dict], top: int = 5) -> dict:
    """The figures `monitor` prints. Rates are over served chat requests (HTTP 200, refusals included: the filters
    ran on each of them); latency is of served requests."""
    chat = [r for r in records if r["path"] == CHAT_PATH]
    served = [r for r in chat if r["status"] == 200]
    latencies = [float(r["latency_s"]) for r in served if r.get("latency_s") is not None]
    p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95])) if latencies else (None, None)
    fired: Counter = Counter()
    flagged: Counter = Counter()
    for record in served:
        hits = record.get("filters") or []
        for key in {(h.get("filter"), h.get("stage"), h.get("action")) for h in hits}:
            fired[key] += 1
        if hits:
            flagged[last_user_text(record.get("messages"))] += 1
    filters = [{"filter": f, "stage": s, "action": a, "requests": n, "rate": n / len(served)}
               for (f, s, a), n in sorted(fired.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    feedback = [r for r in records if r["path"] == FEEDBACK_PATH]
    recorded = [r for r in feedback if r["status"] == 200]
    thumbs = [r["rating"] for r in recorded if r.get("kind") == "rating" and r.get("scale", "thumbs") == "thumbs"]
    stars = [r["rating"] for r in recorded if r.get("kind") == "rating" and r.get("scale") == "stars"]
    blocked = sum(1 for r in served if r.get("blocked"))
    return {
        "requests": len(chat), "served": len(served),
        "errors_by_status": dict(sorted(Counter(r["status"] for r in chat if r["status"] != 200).items())),
        "model_versions": sorted({str(r.get("model_version")) for r in chat if r.get("model_version")}),
        "latency_s": {"p50": p50, "p95": p95, "mean": statistics.fmean(latencies) if latencies else None},
        "tokens": {"in": sum(r.get("prompt_tokens") or 0 for r in served),
                   "out": sum(r.get("completion_tokens") or 0 for r in served)},
        "blocked": blocked, "blocked_rate": blocked / len(served) if served else None,
        "filters": filters,
        "feedback": {"ratings": len(thumbs) + len(stars), "thumbs_up": thumbs.count(1), "thumbs_down": thumbs.count(-1),
                     "thumbs_mean": statistics.fmean(thumbs) if thumbs else None,
                     "stars": len(stars), "stars_mean": statistics.fmean(stars) if stars else None,
                     "choices": sum(1 for r in recorded if r.get("kind") == "choice"),
                     "rejected_by_status": dict(sorted(Counter(r["status"] for r in feedback
                                                               if r["status"] != 200).items()))},
        "top_flagged_prompts": [{"prompt": p, "requests": n} for p, n in flagged.most_common(top)],
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def format_summary(name: str, s: dict) -> str:
    errors = ", ".join(f"{status}: {n}" for status, n in s["errors_by_status"].items()) or "none"
    lines = [f"{name}: {s['requests']} chat requests, {s['served']} served; model version(s): "
             f"{', '.join(s['model_versions']) or '-'}",
             f"errors by status: {errors}",
             f"latency (served): p50 {_seconds(s['latency_s']['p50'])}, p95 {_seconds(s['latency_s']['p95'])}, "
             f"mean {_seconds(s['latency_s']['mean'])}",
             f"tokens: {s['tokens']['in']} in, {s['tokens']['out']} out"]
    if s["served"]:
        lines.append(f"blocked: {s['blocked']} of {s['served']} served ({s['blocked_rate']:.1%})")
    lines.append("filters fired (share of served requests):" if s["filters"] else "filters fired: none")
    lines += [f"  {f['filter']:<10} {f['stage']:<7} {f['action']:<7} {f['requests']:>5}  {f['rate']:.1%}"
              for f in s["filters"]]
    fb = s["feedback"]
    thumbs = f"{fb['thumbs_up']} up, {fb['thumbs_down']} down" + (
        f", mean {fb['thumbs_mean']:+.2f}" if fb["thumbs_mean"] is not None else "")
    stars = f"{fb['stars']}" + (f", mean {fb['stars_mean']:.2f}" if fb["stars_mean"] is not None else "")
    rejected = ", ".join(f"{status}: {n}" for status, n in fb["rejected_by_status"].items())
    lines.append(f"feedback: {fb['ratings']} ratings (thumbs: {thumbs}; stars: {stars}), {fb['choices']} choices"
                 + (f"; rejected: {rejected}" if rejected else ""))
    if s["top_flagged_prompts"]:
        lines.append("top flagged prompts:")
        lines += [f"  {p['requests']:>4}  {json.dumps(p['prompt'][:100], ensure_ascii=False)}"
                  for p in s["top_flagged_prompts"]]
    return "\n".join(lines)


def plot(records: list[dict], path: str | Path) -> Path:
    """Latency histogram of served requests, and the cumulative firings of each filter over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = [r for r in records if r["path"] == CHAT_PATH and r["status"] == 200]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    latencies = [float(r["latency_s"]) for r in served if r.get("latency_s") is not None]
    left.hist(latencies, bins=min(30, max(1, len(latencies))), range=(0, max(latencies, default=1) * 1.05),
              color="#4c72b0")
    left.set(title=f"latency of {len(latencies)} served requests", xlabel="seconds", ylabel="requests")
    firings: dict[str, list[datetime]] = {}
    seen: list[datetime] = []
    for record in served:
        if not record.get("time"):
            continue
        when = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
        seen.append(when)
        for hit in {(h.get("filter"), h.get("stage"), h.get("action")) for h in record.get("filters") or []}:
            firings.setdefault(" ".join(map(str, hit)), []).append(when)
    for label, times in sorted(firings.items()):
        times.sort()  # each line from the log's first served request (0 firings) to its last
        right.step([min(seen), *times, max(seen)], [0, *range(1, len(times) + 1), len(times)], where="post",
                   label=label)
    if firings:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
        from matplotlib.ticker import MaxNLocator

        locator = AutoDateLocator()
        right.xaxis.set_major_locator(locator)
        right.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "no filter fired", ha="center", va="center", transform=right.transAxes)
    right.set(title="filter firings over time (cumulative)", xlabel="time (UTC)", ylabel="requests")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llm-recipes monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="the serve log (JSONL), e.g. runs/serve/requests.jsonl")
    parser.add_argument("--output", help="the plot (PNG); default: next to the log, <log name>.png")
    parser.add_argument("--json", help="also write the summary as JSON to this path")
    parser.add_argument("--top", type=int, default=5, help="how many flagged prompts to list")
    args = parser.parse_args(argv)
    records = read_log(args.log)
    summary = summarize(records, top=args.top)
    output = Path(args.output) if args.output else Path(args.log).with_suffix(".png")
    print(format_summary(args.log, summary))
    print(f"plot: {plot(records, output)}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"summary: {args.json}")
