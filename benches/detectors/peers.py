#!/usr/bin/env python3
"""Times scikit-learn's IsolationForest and isotree on the data of Aegis's criterion bench
`detectors` (1,000,000 rows x 8 features, standard normal with 1% uniform outliers in
[-8, 8]; t = 100, psi = 256), one thread, and prints rows per second for fit and scoring.

    python3 -m venv /var/tmp/aegis-venv && /var/tmp/aegis-venv/bin/pip install scikit-learn isotree
    /var/tmp/aegis-venv/bin/python benches/detectors/peers.py
"""
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

ROWS, COLS = 1_000_000, 8
rng = np.random.default_rng(1)
X = rng.standard_normal((ROWS, COLS)).astype(np.float32)
out = rng.random(ROWS) < 0.01
X[out] = rng.uniform(-8, 8, (int(out.sum()), COLS))


def best_of(n, f):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def report(name, fit, score):
    fit_s = best_of(3, fit)
    score_s = best_of(3, score)
    print(f"{name}: fit {fit_s:.3f} s, score {ROWS / score_s / 1e6:.3f} M rows/s ({score_s:.2f} s for {ROWS:,} rows), one thread")


from sklearn.ensemble import IsolationForest  # noqa: E402

sk = IsolationForest(n_estimators=100, max_samples=256, random_state=0, n_jobs=1)
report("scikit-learn", lambda: sk.fit(X), lambda: sk.score_samples(X))

from isotree import IsolationForest as IsoTree  # noqa: E402

iso = IsoTree(ntrees=100, sample_size=256, ndim=1, nthreads=1, random_seed=0)
report("isotree", lambda: iso.fit(X), lambda: iso.decision_function(X))
