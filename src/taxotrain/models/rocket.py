"""MiniRocket (Dempster, Schmidt and Webb, "MiniRocket: a very fast (almost) deterministic transform for time series
classification", KDD 2021): the baseline every signal report compares against.

aeon's ``MiniRocket`` transform (10,000 features) and scikit-learn's ``RidgeClassifierCV`` (alphas 1e-3..1e3), as in
the paper, fitted on one split's series and scored on another's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def minirocket_top1(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                    seed: int = 0) -> dict[str, Any]:
    """Fit MiniRocket + ridge on ``x_train`` ``[N, C, L]`` and score top-1 on ``x_test``; returns ``top1``,
    ``records``, ``train_records``, ``seconds`` and ``method``."""
    from aeon.transformations.collection.convolution_based import MiniRocket
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.time()
    transform = MiniRocket(random_state=seed)
    features = transform.fit_transform(np.asarray(x_train, dtype=np.float64))
    clf = make_pipeline(StandardScaler(with_mean=True), RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)))
    clf.fit(features, y_train)
    predicted = clf.predict(transform.transform(np.asarray(x_test, dtype=np.float64)))
    return {"name": "MiniRocket", "top1": float((predicted == y_test).mean()), "records": int(len(y_test)),
            "train_records": int(len(y_train)), "seconds": round(time.time() - t0, 2),
            "method": "aeon MiniRocket (10,000 features) + RidgeClassifierCV"}
