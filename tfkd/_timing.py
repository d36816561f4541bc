"""Latency: wall-clock milliseconds of repeated calls, after warm-up calls left out."""

import time


def milliseconds(call, runs, warmup_runs):
    """Calls `call()` `warmup_runs + runs` times; returns the last `runs` durations in ms."""
    timings = []
    for run in range(warmup_runs + runs):
        start = time.perf_counter()
        call()
        if run >= warmup_runs:
            timings.append((time.perf_counter() - start) * 1000.0)
    return timings
