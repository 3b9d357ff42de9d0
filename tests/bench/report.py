"""docs/performance.md from the results ``run.py`` collected: the W1-W8 table (medians of the
interleaved floor/pipekit pairs, the ratio of the medians, the per-pair ratios' range, the
target and the verdict), W7's per-size table, the machine and how to reproduce. Imports
nothing from pipekit.
"""

from __future__ import annotations

from typing import Any

Row = tuple[str, ...]
HEADER = ("id", "workload", "pipekit (median)", "floor (median, same run)", "ratio of medians",
          "per-pair ratios (min–max)", "target", "result")

W1_FLOOR = "row insert + update, autocommit, WAL, synchronous=NORMAL"


def fmt(seconds: float) -> str:
    """A time with a unit that keeps 2-3 significant digits."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        ms = seconds * 1e3
        return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def times(x: float) -> str:
    """A ratio, 2-3 significant digits."""
    if x >= 20:
        return f"{x:.0f}×"
    return f"{x:.1f}×" if x >= 1 else f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"


def span(s: dict[str, Any]) -> str:
    if s["pairs"] == 1:
        return f"{times(s['pair_min'])} (1 pair)"
    return f"{times(s['pair_min'])}–{times(s['pair_max'])} ({s['pairs']} pairs)"


def verdict(ok: bool) -> str:
    return "pass" if ok else "**fail**"


def error_row(wid: str, what: str, result: dict[str, Any]) -> Row:
    return (wid, what, f"error: {result['error']}", "", "", "", "", "**error**")


def chain_row(wid: str, api: str, result: dict[str, Any], default_steps: int) -> Row:
    steps = result.get("steps", default_steps)
    what = f"chain of {steps:,} `x -> x + 1` function steps, {api}"
    if "error" in result:
        return error_row(wid, what, result)
    if "fallback_from" in result:
        what += (f" (**N={steps:,}**: one run at N={result['fallback_from']:,} took "
                 f"{result['fallback_wall']:.0f} s, over the 60 s limit)")
    s = result["summary"]
    ours = f"{fmt(s['ours'])}/step"
    if "define" in result:
        ours += f" (define {fmt(result['define'])} + run {fmt(result['run'])})"
    return (wid, what, ours, f"{fmt(s['floor'])}/step ({W1_FLOOR})", times(s["ratio"]),
            span(s), "≤ 4×", verdict(s["ratio"] <= 4.0))


def cache_row(result: dict[str, Any], default_steps: int) -> Row:
    steps = result.get("steps", default_steps)
    what = (f"cache hits: the W1 controller chain ({steps:,} steps, "
            "`add_function_step(..., cache_executed_step=True)`, inline executor) run again "
            "in a new process, every step `cached`")
    if "error" in result:
        return error_row("W3", what, result)
    if "fallback_from" in result:
        what += (f" (**N={steps:,}**: populating at N={result['fallback_from']:,} took "
                 f"{result['fallback_wall']:.0f} s, over the 60 s limit)")
    s = result["summary"]
    ours = f"{fmt(s['ours'])}/hit (define {fmt(result['define'])} + run {fmt(result['run'])})"
    floor = (f"{fmt(s['floor'])}/lookup (`SELECT id ... WHERE key = ? AND status IN (...) "
             f"LIMIT 1`, {steps:,} indexed keys, WAL)")
    return ("W3", what, ours, floor, times(s["ratio"]), span(s), "≤ 10× per hit",
            verdict(s["ratio"] <= 10.0))


def wall_row(wid: str, what: str, floor_what: str, limit: float,
             result: dict[str, Any]) -> Row:
    if "error" in result:
        return error_row(wid, what, result)
    if "skipped" in result:
        return (wid, what, f"skipped: {result['skipped']}", "", "", "", f"≤ {limit:g}×", "—")
    s = result["summary"]
    return (wid, what, fmt(s["ours"]), f"{fmt(s['floor'])} ({floor_what})", times(s["ratio"]),
            span(s), f"≤ {limit:g}×", verdict(s["ratio"] <= limit))


def import_row(result: dict[str, Any]) -> Row:
    s = result["summary"]
    deltas = [p["ours"] - p["floor"] for p in result["pairs"]]
    delta = s["ours"] - s["floor"]
    return ("W8", "`import pipekit` (a new interpreter each time)", fmt(s["ours"]),
            f"{fmt(s['floor'])} (`python -c pass`)",
            f"+{delta * 1e3:.0f} ms ({times(s['ratio'])})",
            f"+{min(deltas) * 1e3:.0f} to +{max(deltas) * 1e3:.0f} ms; {span(s)}",
            "≤ +100 ms", verdict(delta <= 0.1))


def task_row(result: dict[str, Any], n: int) -> Row:
    s = result["summary"]
    return ("T1", f"persist one task ({n} tasks): create + parameter + inline artifact + "
            "completed, through `Task` / the store", f"{fmt(s['ours'])}/task",
            f"{fmt(s['floor'])}/task (insert + update, WAL)", times(s["ratio"]), span(s),
            "— (baseline for W1)", "—")


def queue_row(result: dict[str, Any], agents: int, tasks: int) -> Row:
    what = (f"queue throughput ({result['label']}): {agents} `pipekit agent --in-process` "
            f"processes, {tasks:,} queued no-op function tasks")
    if "error" in result:
        return error_row("W6", what, result)
    s = result["summary"]
    return ("W6", what, f"{s['ours']:,.0f} tasks/s",
            f"{s['floor']:,.0f} tasks/s ({agents} processes, bare SQLite claim + complete, "
            "`BEGIN IMMEDIATE`)", times(s["ratio"]), span(s), "≥ 0.5× floor tasks/s",
            verdict(s["ratio"] >= 0.5))


W7_API = {
    "controller": "`PipelineController.add_function_step` + `start_locally("
                  "run_pipeline_steps_locally=True, executor=\"inline\")`",
    "decorator": "`@PipelineDecorator.component` calls under "
                 "`PipelineDecorator.debug_pipeline()`",
}


def scale_rows(w7: dict[str, Any]) -> list[Row]:
    sizes = w7["sizes"]
    small, large = sizes[0], sizes[-1]
    target = f"≤ 1.3× per-step cost at {large:,} vs {small:,}"
    rows = []
    for api in ("controller", "decorator"):
        if api not in w7:
            continue
        what = (f"scale: layered DAGs of {' / '.join(f'{n:,}' for n in sizes)} steps "
                f"(width {w7['width']}), {W7_API[api]}, each size in a fresh process")
        big, little = w7[api][str(large)], w7[api][str(small)]
        if "error" in little or "error" in big:
            rows.append(error_row("W7", what, little if "error" in little else big))
        elif "over_budget" in big:
            budget = big["over_budget"]
            bound = budget_bound(big, little, large)
            rows.append(("W7", what, f"{large:,} steps: **over budget** (process killed "
                         f"after {budget:g} s: > {fmt(bound)}/step)",
                         f"{fmt(little['per_step'])}/step at {small:,} steps",
                         f"> {times(bound / little['per_step'])}", "", target,
                         "**fail** (over budget)" if bound / little["per_step"] > 1.3
                         else "— (over budget: a larger budget would tell)"))
        else:
            g = w7[api]["growth"]
            pairs = {"pair_min": g["pair_min"], "pair_max": g["pair_max"],
                     "pairs": min(big["runs"], little["runs"])}
            rows.append(("W7", what, f"{fmt(big['per_step'])}/step at {large:,} steps",
                         f"{fmt(little['per_step'])}/step at {small:,} steps (same API, "
                         "same run)", times(g["ratio"]), span(pairs), target,
                         verdict(g["ratio"] <= 1.3)))
    return rows


def budget_bound(over: dict[str, Any], smallest: dict[str, Any], n: int) -> float:
    """A lower bound of the per-step cost of a run killed at its budget: the budget less
    what the smallest size's process spent outside its pipeline call (start-up, imports,
    floor, checks), over the steps."""
    outside = max(0.0, smallest.get("process_wall", 0.0) - smallest.get("wall", 0.0))
    return max(0.0, over["over_budget"] - outside) / n


def scale_table(w7: dict[str, Any]) -> list[str]:
    """W7 per size: wall, per-step cost, against the smallest size and against the W1 floor
    at the same N (timed in the same process), peak RSS and its growth over the imports.
    """
    sizes = w7["sizes"]
    lines = [
        "| API | steps | wall (median) | per step | × per step at "
        f"{sizes[0]:,} | per step added since the size before | × W1 floor per step (same "
        f"process) | peak RSS (`ru_maxrss`) | RSS after the imports | peak RSS per step added "
        f"since {sizes[0]:,} | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for api in ("controller", "decorator"):
        if api not in w7:
            continue
        base = w7[api][str(sizes[0])].get("per_step")
        base_rss = w7[api][str(sizes[0])].get("rss_peak_kib")
        before: dict[str, Any] | None = None
        for n in sizes:
            r = w7[api][str(n)]
            if "over_budget" in r:
                bound = budget_bound(r, w7[api][str(sizes[0])], n)
                lines.append(f"| {api} | {n:,} | **over budget** (process killed after "
                             f"{r['over_budget']:g} s) | > {fmt(bound)} | "
                             + (f"> {times(bound / base)}" if base else "")
                             + " | | | | | | 0 |")
                before = None
                continue
            if "error" in r:
                lines.append(f"| {api} | {n:,} | error: {r['error']} | | | | | | | | 0 |")
                before = None
                continue
            marginal = ""
            if base_rss is not None and n > sizes[0]:
                marginal = f"{(r['rss_peak_kib'] - base_rss) / (n - sizes[0]):.1f} KiB"
            note = ""
            if "later" in r:
                later = r["later"]
                note = (f" (a later run: over budget, > {later['over_budget']:.0f} s)"
                        if "over_budget" in later else f" (a later run: {later.get('error')})")
            added = ""
            if before is not None:
                added = fmt((r["wall"] - before["wall"]) / (n - before["steps"]))
            before = {**r, "steps": n}
            lines.append(
                f"| {api} | {n:,} | {fmt(r['wall'])} | {fmt(r['per_step'])} | "
                f"{times(r['per_step'] / base) if base else ''} | {added} | "
                f"{times(r['per_step'] / r['floor_per_step'])} | "
                f"{r['rss_peak_kib'] / 1024:.1f} MiB | {r['rss_start_kib'] / 1024:.1f} MiB | "
                f"{marginal} | {r['runs']}{note} |")
    return lines


def table(rows: list[Row]) -> list[str]:
    return [f"| {' | '.join(HEADER)} |", "|" + "---|" * len(HEADER),
            *[f"| {' | '.join(r)} |" for r in rows]]
