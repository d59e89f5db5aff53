"""The bench chart: output tokens/s and TTFT against concurrency, one line per fingerprint, as a PNG.

matplotlib is the optional extra `runrecipe[bench]`: only the chart needs it, so a missing one is a
clear error naming how to install it, and nothing else of bench depends on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .results import BenchError, differences

INSTALL = "pip install 'runrecipe[bench]' (or pip install matplotlib)"


def series(groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fingerprint (and a stack's model), its latest run's points (concurrency, output tok/s, TTFT median ms),
    labelled with its id and what differs from the first fingerprint (the flag, mod or image a reader looks for)."""
    out = []
    for group in groups:
        run = group["runs"][-1]
        changed = differences(groups[0]["fingerprint"], group["fingerprint"])
        what = ", ".join(d["item"] if d["b"] in (None, "") else f"{d['item']} {str(d['b'])[:19]}"
                         for d in changed if d["what"] != "inputs")
        for model in dict.fromkeys(lv.get("model") for lv in run["levels"]):  # a stack's: a line per model
            points = sorted((lv["concurrency"], lv["output_tok_s"], lv["ttft_median_ms"]) for lv in run["levels"]
                            if lv.get("model") == model)
            out.append({"label": f"{group['fingerprint_id'][:8]}" + (f" {model}" if model else "")
                        + (f": {what}" if what else ""), "points": points})
    return out


def write(groups: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Draw the chart into `path` (a PNG), without a display."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError(f"--chart needs matplotlib, which is not installed: {INSTALL}") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    fig, (tput, ttft) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    for line in series(groups):
        xs = [p[0] for p in line["points"]]
        tput.plot(xs, [p[1] for p in line["points"]], marker="o", label=line["label"])
        ttft.plot(xs, [p[2] for p in line["points"]], marker="o", label=line["label"])
    ticks = sorted({p[0] for line in series(groups) for p in line["points"]})
    for ax, what in ((tput, "output tokens/s"), (ttft, "TTFT median (ms)")):
        ax.set_xlabel("concurrency")
        ax.set_ylabel(what)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
    tput.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise BenchError(f"--chart {path}: cannot write it ({exc.strerror}); give a path in a folder you can "
                         "write") from None
    finally:
        pyplot.close(fig)

