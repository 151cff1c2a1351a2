#!/usr/bin/env python3
"""Paired A/B of two builds of the ingest benchmark, ingest alone.

Usage: python3 bench/ingest_ab.py A_BINARY B_BINARY [PAIRS]

Build each side with `cargo bench -p tributary-pipeline --bench ingest --no-run` and copy the
executable it prints. Runs the two alternately (order swapped every pair), `BENCH_SIDES=ingest
BENCH_ROUNDS=3`, and prints each pair's B/A ratios of ingest's median time and CPU, then their
medians. Pairing is what makes a few percent visible: this machine has no hardware counters and a
run's CPU time wanders by a third between runs, but two runs a few seconds apart drift together.
"""
import os
import re
import statistics
import subprocess
import sys


def run(binary):
    env = dict(os.environ, BENCH_SIDES="ingest", BENCH_ROUNDS="3")
    out = subprocess.run([binary, "--bench"], env=env, capture_output=True, text=True, check=True).stdout
    m = re.search(r"tributary ingest.*?([\d.]+) s\s+\d+ rows/s\s+cpu\s+([\d.]+) s", out)
    if not m:
        sys.exit(f"no ingest line in the output of {binary}:\n{out}")
    return float(m.group(1)), float(m.group(2))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    a, b = sys.argv[1], sys.argv[2]
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    wall, cpu = [], []
    for i in range(pairs):
        if i % 2 == 0:
            ra, rb = run(a), run(b)
        else:
            rb, ra = run(b), run(a)
        wall.append(rb[0] / ra[0])
        cpu.append(rb[1] / ra[1])
        print(f"pair {i + 1}: A {ra[0]:.2f} s cpu {ra[1]:.2f} s | B {rb[0]:.2f} s cpu {rb[1]:.2f} s | B/A time {wall[-1]:.3f} cpu {cpu[-1]:.3f}", flush=True)
    better = sum(c < 1 for c in cpu)
    print(f"median B/A over {pairs} pairs: time {statistics.median(wall):.3f}, cpu {statistics.median(cpu):.3f} (B used less CPU in {better} of {pairs})")


if __name__ == "__main__":
    main()
