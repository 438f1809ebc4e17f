#!/usr/bin/env python
"""
The growth curves of issue 22 as PNG plots in docs/, from the results of bench/scale.py and
bench/curves.py (matplotlib, Agg backend: no display needed):

- docs/growth-sockets.png: delivered/s and end-to-end latency against sockets online
  (bench/results/scale-latest.json, its "levels");
- docs/growth-inbox-size.png: send, list and unread-count latencies against the rows of one
  user's inbox (bench/results/curves-latest.json, "inbox_size");
- docs/growth-bulk.png: a bulk send's request time and time until every recipient has it,
  against recipients ("bulk" of the same file).

    python bench/plots.py
    python bench/plots.py --curves bench/results/curves-latest-quick.json --out /tmp/plots

A results file or curve that is missing is skipped with a message. Each plot's footnote names the
machine, the git commit and the date of the run it plots.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--curves", default=str(HERE / "results" / "curves-latest.json"), help="bench/curves.py's results")
    p.add_argument("--scale", default=str(HERE / "results" / "scale-latest.json"), help="bench/scale.py's results")
    p.add_argument("--out", default=str(ROOT / "docs"), help="directory of the PNG files (default docs/)")
    return p.parse_args(argv)


def load(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def values(points: list[dict], key: str) -> list[float]:
    """The key of every point; NaN (a gap in the line) where it is missing or None."""
    return [math.nan if p.get(key) is None else float(p[key]) for p in points]


def compact(v: float, _pos=None) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"  # 49,999 sockets: "50k"
    return f"{v:g}"


def x_axis(ax, xs: list[float], label: str) -> None:
    """Log x with a tick at every measured point."""
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.xaxis.set_major_formatter(FuncFormatter(compact))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def footnote(fig, doc: dict) -> None:
    m = doc.get("machine", {})
    stack = doc.get("stack", {})
    server = f"{stack.get('workers')} x {stack.get('server')}" if stack else ""
    fig.text(0.01, 0.035, f"{m.get('cores', '?')} cores, {m.get('cpu') or 'CPU model unknown'}; {server}; git {doc.get('git') or '?'}; "
             f"run of {doc.get('started', '?')} ({doc.get('mode', '')})", fontsize=7, color="0.3")
    fig.text(0.01, 0.01, doc.get("command", ""), fontsize=7, color="0.3")


def mark_losses(ax, xs, ys, points: list[dict], keys: tuple[str, ...]) -> None:
    """Write 'lost N' (and the like) beside every point where one of ``keys`` is not 0."""
    for x, y, p in zip(xs, ys, points):
        bad = [f"{k} {p[k]:,}" for k in keys if p.get(k)]
        if bad and not math.isnan(y):
            ax.annotate(", ".join(bad), (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7, color="tab:red")


def log_y(ax) -> None:
    """Log y labelled at 1, 2 and 5 of every decade."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def latency_scale(ax, series: list[list[float]]) -> str:
    """Log y when the latencies span more than 30 times, else linear from 0; returns the axis label's note."""
    finite = [v for s in series for v in s if not math.isnan(v) and v > 0]
    if finite and max(finite) / min(finite) > 30:
        log_y(ax)
        return " (log scale)"
    ax.set_ylim(bottom=0)
    return ""


def plot(doc: dict, key: str, x: str, draw, out: Path, name: str) -> Path:
    """
    One PNG of the points ``doc[key]`` against their ``x``: ``draw(ax, xs, points)`` draws the
    curves, then the footnote names the run; written to ``out / name``.
    """
    points = doc[key]
    fig, ax = plt.subplots(figsize=(8, 5))
    draw(ax, values(points, x), points)
    footnote(fig, doc)
    fig.subplots_adjust(bottom=0.2)
    path = out / name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_sockets(ax, xs: list[float], levels: list[dict]) -> None:
    delivered = values(levels, "delivered_per_s")
    ax.plot(xs, delivered, "o-", color="tab:blue", label="delivered/s")
    mark_losses(ax, xs, delivered, levels, ("lost", "duplicated"))
    ax.set_ylabel("notifications delivered per second", color="tab:blue")
    ax.set_ylim(bottom=0)
    x_axis(ax, xs, "sockets online")
    ax.grid(True, which="major", alpha=0.3)
    lat = ax.twinx()
    lat.plot(xs, values(levels, "e2e_p99_ms"), "s--", color="tab:red", label="end-to-end p99")
    lat.plot(xs, values(levels, "e2e_p50_ms"), "^:", color="tab:orange", label="end-to-end p50")
    lat.set_ylabel("end-to-end latency, ms (request start -> frame)", color="tab:red")
    lat.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + lat.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    ax.set_title("Directed sends: delivered/s and end-to-end p99 against sockets online")


def draw_inbox_size(ax, xs: list[float], points: list[dict]) -> None:
    series = []
    for key, label, color in (("rest", "send: REST round trip", "tab:blue"), ("e2e", "send: end-to-end (request -> frame)", "tab:red"),
                              ("list", "list: first page", "tab:green"), ("unread", "unread count", "tab:purple")):
        p50, p99 = values(points, f"{key}_p50_ms"), values(points, f"{key}_p99_ms")
        series += [p50, p99]
        ax.plot(xs, p50, "o-", color=color, label=f"{label} p50")
        ax.plot(xs, p99, "s--", color=color, alpha=0.7, label=f"{label} p99")
    mark_losses(ax, xs, series[1], points, ("lost", "duplicated", "errors"))
    note = latency_scale(ax, series)
    x_axis(ax, xs, "stored notifications in the user's inbox (rows)")
    ax.set_ylabel(f"latency, ms{note}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    first = points[0]
    ax.set_title(f"One user's inbox: latencies against its size ({first.get('requests')} requests each, "
                 f"{first.get('concurrency')} in flight)", fontsize=11)


def draw_bulk(ax, xs: list[float], points: list[dict]) -> None:
    series = []
    for key, label, color in (("request", "request (201 answered)", "tab:blue"),
                              ("all_delivered", "every recipient's socket has it", "tab:red")):
        p50, top = values(points, f"{key}_p50_ms"), values(points, f"{key}_max_ms")
        series += [p50, top]
        ax.plot(xs, p50, "o-", color=color, label=f"{label} p50")
        ax.plot(xs, top, "s--", color=color, alpha=0.7, label=f"{label} max")
    mark_losses(ax, xs, series[2], points, ("lost", "duplicated"))
    log_y(ax)
    x_axis(ax, xs, "recipients of one bulk send (each with a socket open)")
    ax.set_ylabel("time from the request's start, ms (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Bulk sends: time against recipients ({points[0].get('requests')} sends each, one at a time)")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale, curves = load(args.scale), load(args.curves)
    jobs = [
        ("growth-sockets.png", scale, args.scale, "levels", "sockets", draw_sockets),
        ("growth-inbox-size.png", curves, args.curves, "inbox_size", "rows", draw_inbox_size),
        ("growth-bulk.png", curves, args.curves, "bulk", "recipients", draw_bulk),
    ]
    written = 0
    for name, doc, path, key, x, draw in jobs:
        if doc is None:
            print(f"skipped {name}: {path} does not exist")
        elif not doc.get(key):
            print(f"skipped {name}: {path} has no {key!r}")
        else:
            print(f"wrote {plot(doc, key, x, draw, out, name)}")
            written += 1
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
