"""mlops-assets: every artifact of a tabular classifier's lifecycle as a Dagster asset.

This package root imports nothing heavy (no Dagster) so the BentoML service stays slim.
"""

import os
import sys

__version__ = "0.1.0"

# OpenMP threads (LightGBM's) that wait passively: a thread done with its share of a parallel
# region sleeps at the barrier instead of spinning on a core another process needs. OpenMP
# reads this when LightGBM loads it, so it is set here, before anything imports LightGBM.
# Measured (3M rows, 30 rounds, /tmp/omp.py in #27's note): two threads 7.6 s alone against
# 14.3 s for one; beside a CPU-bound process 13.8 s (spinning: 21.4 s); two such fits at once
# 15.3 s each (one thread each: 14.0 s; spinning: 46.5 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_WAITS_PASSIVELY = (os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"
                    and "lightgbm" not in sys.modules)


def bulk_threads() -> int:
    """Threads for LightGBM work done in a step (the search's fits, the streamed final fit,
    predicting a test set): every core, or ``OMP_NUM_THREADS`` if set, where OpenMP threads
    wait passively (above); one where they would spin. Per-request serving keeps one."""
    if not _WAITS_PASSIVELY:
        return 1
    try:
        pinned = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0] or 0)
    except ValueError:
        pinned = 0
    return max(1, pinned or os.cpu_count() or 1)
