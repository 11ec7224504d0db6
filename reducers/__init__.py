"""Reducer plugins: classes with options, ``fit(train_fold)`` and ``transform(X)``, in one registry.

    from stbench.reducers import create_reducer
    r = create_reducer("pca", n_components=128).fit(train)   # train: TrainFold (training part only)
    Z = r.transform(X_test)

Built-ins register when the registry first loads; other packages add theirs through the entry-point
group ``stbench.reducers``.
"""

from __future__ import annotations

from stbench.reducers._base import Reducer, TrainFold, create_reducer, list_reducers, parse_options, reducers, register_reducer

__all__ = ["Reducer", "TrainFold", "create_reducer", "list_reducers", "parse_options", "reducers", "register_reducer"]
