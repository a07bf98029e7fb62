"""The MiniRocket baseline that every signal report compares against (Dempster, Schmidt and Webb, "MiniRocket: a
very fast (almost) deterministic transform for time series classification", KDD 2021).

aeon's ``MiniRocket`` transform (10,000 features) and scikit-learn's ``RidgeClassifierCV`` (alphas 1e-3..1e3), as
in the paper, fitted on the store's train split and scored on the evaluated split: the same series the network saw.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from taxotrain.data.store import Store


def minirocket_baseline(store: Store, split: str = "test", seed: int = 0) -> dict[str, Any]:
    """Fit MiniRocket + ridge on ``store``'s train split, score top-1 on ``split``; returns top1, records, seconds."""
    from aeon.transformations.collection.convolution_based import MiniRocket
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.time()
    data = store.signals()
    train, test = store.splits["train"], store.splits[split]
    x_train = np.asarray(data[train], dtype=np.float64)
    y_train = store.labels[train, -1]
    x_test = np.asarray(data[test], dtype=np.float64)
    y_test = store.labels[test, -1]
    transform = MiniRocket(random_state=seed)
    features = transform.fit_transform(x_train)
    clf = make_pipeline(StandardScaler(with_mean=True), RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)))
    clf.fit(features, y_train)
    predicted = clf.predict(transform.transform(x_test))
    return {"top1": float((predicted == y_test).mean()), "records": int(len(test)), "train_records": int(len(train)),
            "seconds": round(time.time() - t0, 2), "method": "aeon MiniRocket (10,000 features) + RidgeClassifierCV"}
