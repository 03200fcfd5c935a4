"""LightGBM's single-row fast path, for requests that score one customer.

``Booster.predict`` costs ~40 µs per call for one row, almost all of it set-up: it rebuilds a
predictor, re-parses parameters and deep-copies them on every call, and a ``/score_events`` request
makes four calls (two models' scores, and the leaf indices of the model that gives reasons). LightGBM's
C API has a path made for this, ``LGBM_BoosterPredictForMatSingleRowFast``: the configuration is built
once (``...FastInit``) and each call only walks the trees. Same trees, same summation order: the
result is the one ``Booster.predict`` gives (``tests/test_scoring.py`` checks it bit for bit).

The C API is reached through ``lightgbm.basic._LIB`` and ``_safe_call``, private names of the Python
package: tested with lightgbm 4.7.0, the version ``requirements.lock`` pins. Where a LightGBM release
lacks them (or the fast configuration cannot be built), :class:`RowPredictor` falls back to
``Booster.predict`` with the same arguments — the same numbers, ~20 µs slower per call — and says so
in :attr:`RowPredictor.fast` (tested too).

A fast configuration holds its own buffers and is not safe to share between threads; each
:class:`RowPredictor` call takes a lock (uncontended in the service's event loop: ~0.1 µs).
"""

from __future__ import annotations

import ctypes
import threading

import lightgbm as lgb
import lightgbm.basic
import numpy as np

_RAW_SCORE = 1  # C_API_PREDICT_RAW_SCORE
_LEAF_INDEX = 2  # C_API_PREDICT_LEAF_INDEX
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


def _c_api() -> tuple[object, object] | None:
    """(``_LIB``, ``_safe_call``) of the installed LightGBM, or None where it has no such names."""
    lib = getattr(lightgbm.basic, "_LIB", None)
    safe_call = getattr(lightgbm.basic, "_safe_call", None)
    if lib is None or safe_call is None or not hasattr(lib, "LGBM_BoosterPredictForMatSingleRowFastInit"):
        return None
    return lib, safe_call


class RowPredictor:
    """Raw score and leaf indices of one row, for the first ``num_iteration`` trees of ``booster``."""

    def __init__(self, booster: lgb.Booster, num_iteration: int) -> None:
        self._booster = booster  # the fast configurations point into it: keep it alive as long as they are
        self._num_iteration = num_iteration
        self.n_features = booster.num_feature()
        self.n_trees = booster.num_trees() if num_iteration <= 0 else min(num_iteration, booster.num_trees())
        self._handles: dict[int, ctypes.c_void_p] = {}
        self._lock = threading.Lock()
        self._out_len = ctypes.c_int64()
        self._out_len_ref = ctypes.byref(self._out_len)
        self._api = _c_api()
        if self._api is not None:
            lib, safe_call = self._api
            try:
                for kind in (_RAW_SCORE, _LEAF_INDEX):
                    handle = ctypes.c_void_p()
                    safe_call(lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                        booster._handle, ctypes.c_int(kind), ctypes.c_int(0), ctypes.c_int(num_iteration),
                        ctypes.c_int(_FLOAT64), ctypes.c_int32(self.n_features), ctypes.c_char_p(b"num_threads=1"),
                        ctypes.byref(handle)))
                    self._handles[kind] = handle
            except (lgb.basic.LightGBMError, AttributeError, TypeError, ctypes.ArgumentError):
                self._free()
                self._api = None

    @property
    def fast(self) -> bool:
        """Whether calls take LightGBM's single-row C path (else ``Booster.predict``, same numbers)."""
        return self._api is not None

    def _predict(self, kind: int, row: np.ndarray, size: int) -> np.ndarray:
        row = np.ascontiguousarray(row, dtype=np.float64)
        if row.shape != (self.n_features,):
            raise ValueError(f"a row of {self.n_features} features, got shape {row.shape}")
        if self._api is None:
            out = self._booster.predict(row[None], raw_score=kind == _RAW_SCORE, pred_leaf=kind == _LEAF_INDEX,
                                        num_iteration=self._num_iteration, num_threads=1)
            return np.asarray(out, dtype=np.float64).reshape(-1)
        lib, safe_call = self._api
        out = np.empty(size, dtype=np.float64)
        with self._lock:
            safe_call(lib.LGBM_BoosterPredictForMatSingleRowFast(
                self._handles[kind], ctypes.c_void_p(row.ctypes.data), self._out_len_ref, ctypes.c_void_p(out.ctypes.data)))
            if self._out_len.value != size:
                raise RuntimeError(f"LightGBM returned {self._out_len.value} values, expected {size}")
        return out

    def raw_score(self, row: np.ndarray) -> float:
        """The log-odds of one row (``Booster.predict(row[None], raw_score=True)[0]``)."""
        return float(self._predict(_RAW_SCORE, row, 1)[0])

    def leaves(self, row: np.ndarray) -> np.ndarray:
        """The leaf index of one row in every tree (``Booster.predict(row[None], pred_leaf=True)[0]``)."""
        return self._predict(_LEAF_INDEX, row, self.n_trees).astype(np.int64)

    def __reduce__(self) -> tuple:
        """Pickled as its booster (the C handles are rebuilt on load): a Scorer can travel to workers."""
        return (RowPredictor, (self._booster, self._num_iteration))

    def _free(self) -> None:
        api = getattr(self, "_api", None)
        for handle in getattr(self, "_handles", {}).values():
            if handle and api is not None:
                api[0].LGBM_FastConfigFree(handle)
        self._handles = {}

    def __del__(self) -> None:
        self._free()
