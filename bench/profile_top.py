#!/usr/bin/env python
"""
Summarize py-spy ``--format raw`` profiles (collapsed stacks): the functions with the most
inclusive and self samples, as a share of all samples of the server processes.

    python bench/profile_top.py /tmp/inbox-bench-*/profile-directed-*.txt [--top 40] [--match inbox,realtime]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path})"


def load(paths):
    stacks = collections.Counter()
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if not line:
                    continue
                stack, _, count = line.rpartition(" ")
                try:
                    n = int(count)
                except ValueError:
                    continue
                frames = [short(x) for x in stack.split(";") if x]
                # py-spy puts "process ..." / "thread ..." pseudo-frames first.
                frames = [x for x in frames if not x.startswith(("process ", "thread "))]
                stacks[tuple(frames)] += n
    return stacks


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("paths", nargs="+")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--match", default="", help="comma-separated substrings: inclusive table only for matching frames")
    args = p.parse_args(argv)
    stacks = load(args.paths)
    total = sum(stacks.values())
    if not total:
        print("no samples")
        return 1
    inclusive, self_ = collections.Counter(), collections.Counter()
    for frames, n in stacks.items():
        for f in set(frames):
            inclusive[f] += n
        if frames:
            self_[frames[-1]] += n
    print(f"{total} samples (active threads only)\n")
    print("INCLUSIVE (share of samples with the function on the stack)")
    match = [m for m in args.match.split(",") if m]
    shown = 0
    for f, n in inclusive.most_common():
        if match and not any(m in f for m in match):
            continue
        print(f"{100 * n / total:6.1f}%  {f}")
        shown += 1
        if shown >= args.top:
            break
    print("\nSELF (share of samples with the function on top)")
    for f, n in self_.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
