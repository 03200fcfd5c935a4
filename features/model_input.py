"""The model's input contract: a fitted object that turns behaviour rows and customer attributes into
the matrix a model sees, saved with every model and used everywhere it scores.

A :class:`ModelInput` is fitted once, when a training set is built, from the funnel config (the
behaviour columns of :func:`~funnelcast.features.behaviour.feature_spec`) and the validated customers
table. It records, as scikit-learn's fitted estimators do with ``feature_names_in_``:

* every attribute's **kind** — ``category`` (with its vocabulary, sorted), ``number`` or ``date`` —
  taken from the validated dtypes, never guessed from a column's name again;
* the **time zone** naive dates in a request are read in (the config's ``source_timezone``);
* the **column order** of the matrix: the behaviour columns, then one column per attribute
  (``days_since_<name>`` for a date, NaN until the date has passed; the category's code in its
  vocabulary, NaN where unseen or missing; the number itself);
* the funnel config's data hash, which the behaviour columns depend on.

It is the one thing that makes model inputs: training sets and ``build_features`` frames
(:meth:`ModelInput.frame`), batch scoring and every HTTP route (:meth:`ModelInput.matrix` over
:class:`Attributes` from :meth:`ModelInput.encode_customers` or :meth:`ModelInput.encode_customer`),
and the MLflow model reading a frame (:meth:`ModelInput.matrix_from_frame`). All of them give the same
numbers for the same customer (tests check it bit for bit). It round-trips through JSON
(:meth:`to_dict`, :meth:`from_dict`): nothing in it executes on load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from funnelcast.features.errors import EventDataError
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.timestamps import DAY_NS, instant_ns, zone

KINDS = ("category", "number", "date")
RESERVED = ("customer_id", "cutoff", "stage")
"""Frame columns that are never model inputs (with every target's label and eligibility columns)."""
_NO_DATE = np.iinfo(np.int64).min


class SchemaError(EventDataError):
    """Input that does not have what the model was fitted on (columns, kinds); the message names them."""


@dataclass(frozen=True)
class Attribute:
    """One static customer attribute as a model input: its name, kind and (categories) vocabulary."""

    name: str
    kind: str
    categories: tuple[str, ...] = ()

    @property
    def feature(self) -> str:
        """The model's column for this attribute."""
        return f"days_since_{self.name}" if self.kind == "date" else self.name


@dataclass(frozen=True)
class Attributes:
    """Customers' attributes encoded for one :class:`ModelInput`, in its attribute order.

    ``values`` holds category codes and numbers (float64, NaN where missing or unseen); ``dates`` the
    date attributes as int64 ns (``days_since_<name>`` depends on the cutoff, so it is computed per
    matrix). ``raw`` keeps original values of some columns for filters (the outreach list's segment).
    """

    values: np.ndarray  # (C, A) float64: one column per non-date attribute
    dates: np.ndarray  # (C, D) int64 ns, _NO_DATE where unknown
    raw: dict[str, np.ndarray] = field(default_factory=dict)

    def take(self, rows: np.ndarray | slice) -> Attributes:
        """The attributes of some customers (positions in the encoded order)."""
        return Attributes(self.values[rows], self.dates[rows], {k: v[rows] for k, v in self.raw.items()})


class ModelInput:
    """The fitted input contract of a model (see the module docstring).

    Parameters
    ----------
    behaviour : sequence of str
        The behaviour columns, in the order the feature engine fills them.
    attributes : sequence of Attribute
        Customer attributes, in matrix order after the behaviour columns.
    timezone : str or None
        IANA zone naive dates in a request are read in (None: such dates are refused).
    config_hash : str
        The funnel config's data hash the behaviour columns were built under.
    reserved : sequence of str
        Further names an attribute may not take (every target's label and eligibility columns).
    """

    def __init__(self, behaviour: Sequence[str], attributes: Sequence[Attribute] = (), timezone: str | None = None,
                 config_hash: str = "", reserved: Sequence[str] = ()) -> None:
        self.behaviour = tuple(behaviour)
        self.attributes = tuple(attributes)
        self.timezone = timezone
        self.config_hash = config_hash
        self.reserved = tuple(reserved)
        for a in self.attributes:
            if a.kind not in KINDS:
                raise SchemaError(f"attribute {a.name!r} has kind {a.kind!r}; kinds are {list(KINDS)}")
        taken = {c: "a behaviour feature" for c in self.behaviour}
        taken.update({c: "a column funnelcast adds to feature frames" for c in (*RESERVED, *self.reserved)})
        for a in self.attributes:
            if a.feature in taken:
                what = f"attribute {a.name!r}" + (f" (a date, so its feature is {a.feature!r})" if a.kind == "date" else "")
                raise SchemaError(f"customers: {what} clashes with {taken[a.feature]} of the same name; rename the column")
            taken[a.feature] = f"the feature of attribute {a.name!r}"
        self.columns = self.behaviour + tuple(a.feature for a in self.attributes)
        self._values = [a for a in self.attributes if a.kind != "date"]
        self._dates = [a for a in self.attributes if a.kind == "date"]
        n_b = len(self.behaviour)
        pos = {a.name: n_b + j for j, a in enumerate(self.attributes)}
        self._value_pos = np.array([pos[a.name] for a in self._values], dtype=np.intp)
        self._date_pos = np.array([pos[a.name] for a in self._dates], dtype=np.intp)
        self._codes = {a.name: {c: i for i, c in enumerate(a.categories)} for a in self._values if a.kind == "category"}
        self._tz = zone(timezone)

    # ---- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, config: FunnelConfig, customers: pd.DataFrame | None) -> ModelInput:
        """The input contract for ``config``'s behaviour features and the attributes of a validated
        customers table (:func:`~funnelcast.features.events.validate_customers`): datetime columns are
        dates, categorical columns categories (vocabulary: their categories, sorted), the rest numbers."""
        from funnelcast.features.behaviour import feature_spec
        from funnelcast.features.targets import ELIGIBLE_COLUMNS, LABEL_COLUMNS

        attributes = []
        for col in ([] if customers is None else customers.columns):
            if col == "customer_id":
                continue
            dtype = customers[col].dtype
            if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
                attributes.append(Attribute(str(col), "date"))
            elif isinstance(dtype, pd.CategoricalDtype):
                attributes.append(Attribute(str(col), "category", tuple(sorted(str(v) for v in dtype.categories))))
            elif pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
                attributes.append(Attribute(str(col), "number"))
            else:
                attributes.append(Attribute(str(col), "category", tuple(sorted(str(v) for v in pd.unique(customers[col].dropna())))))
        return cls(feature_spec(config).columns, attributes, config.source_timezone, config.data_hash(),
                   reserved=(*ELIGIBLE_COLUMNS, *LABEL_COLUMNS))

    # ---- what it holds ---------------------------------------------------------------------------
    @property
    def categories(self) -> dict[str, list[str]]:
        """Feature column → vocabulary, for the category attributes."""
        return {a.feature: list(a.categories) for a in self.attributes if a.kind == "category"}

    def kind_of(self, column: str) -> str:
        """``behaviour``, or the kind of the attribute whose feature ``column`` is."""
        for a in self.attributes:
            if a.feature == column:
                return a.kind
        return "behaviour"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: everything needed to rebuild this object."""
        return {"behaviour": list(self.behaviour),
                "attributes": [{"name": a.name, "kind": a.kind, **({"categories": list(a.categories)} if a.kind == "category" else {})}
                               for a in self.attributes],
                "timezone": self.timezone, "config_hash": self.config_hash, "reserved": list(self.reserved)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInput:
        """Rebuild an input contract from :meth:`to_dict` output (plain JSON)."""
        return cls(data["behaviour"], [Attribute(a["name"], a["kind"], tuple(a.get("categories", ()))) for a in data["attributes"]],
                   data.get("timezone"), data.get("config_hash", ""), data.get("reserved", ()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelInput) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.columns, self.config_hash))

    def __repr__(self) -> str:
        kinds = ", ".join(f"{a.name}: {a.kind}" for a in self.attributes) or "none"
        return f"ModelInput({len(self.behaviour)} behaviour columns; attributes {kinds}; timezone {self.timezone})"

    # ---- attributes in -----------------------------------------------------------------------------
    def encode_customers(self, customers: pd.DataFrame | None, ids: np.ndarray, keep: Iterable[str] = ()) -> Attributes:
        """A validated customers table's attributes for ``ids`` (customers absent from it get missing
        values), in this input's order; ``keep`` names columns whose raw values to keep (filters)."""
        n = len(ids)
        values = np.full((n, len(self._values)), np.nan)
        dates = np.full((n, len(self._dates)), _NO_DATE, dtype=np.int64)
        if customers is None:
            return Attributes(values, dates)
        table = customers.set_index("customer_id").reindex(pd.Index(ids, dtype=object))
        missing = [a.name for a in self.attributes if a.name not in table.columns]
        if missing:
            raise SchemaError(f"the customers table lacks attribute column(s) {missing} the model was trained on; "
                              f"it has {[c for c in table.columns]}")
        for k, a in enumerate(self._values):
            values[:, k] = self._column_values(a, table[a.name])
        for k, a in enumerate(self._dates):
            col = table[a.name]
            if not (isinstance(col.dtype, pd.DatetimeTZDtype) or col.isna().all()):
                raise SchemaError(f"customers: attribute {a.name!r} was a date when the model was trained, "
                                  f"but the table holds {col.dtype} values")
            ns = col.astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").view(np.int64)
            dates[:, k] = np.where(col.notna().to_numpy(), ns, _NO_DATE)
        raw = {c: table[c].to_numpy(dtype=object) for c in keep if c in table.columns}
        return Attributes(values, dates, raw)

    def _column_values(self, a: Attribute, col: pd.Series) -> np.ndarray:
        if a.kind == "category":
            codes = pd.Index(list(a.categories)).get_indexer(col.astype("string").astype(object))  # -1: unseen/missing
            return np.where(codes < 0, np.nan, codes)
        try:
            return pd.to_numeric(col, errors="raise").astype("float64").to_numpy(na_value=np.nan)
        except (ValueError, TypeError):
            bad = col[pd.to_numeric(col, errors="coerce").isna() & col.notna()]
            raise SchemaError(f"attribute {a.name!r} was a number when the model was trained; "
                              f"{bad.index[0]!r} holds {bad.iloc[0]!r}") from None

    def encode_customer(self, attributes: Mapping[str, Any]) -> tuple[Attributes, list[str]]:
        """One customer's attributes from a request (``{"segment": "smb", "signup_date": "2025-01-02"}``),
        encoded as :meth:`encode_customers` would; returns them and the keys the model does not use."""
        values = np.full((1, len(self._values)), np.nan)
        for k, a in enumerate(self._values):
            value = attributes.get(a.name)
            if value is None:
                continue
            if a.kind == "category":
                values[0, k] = self._codes[a.name].get(str(value), np.nan)  # unseen category: missing, as in training
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise SchemaError(f"customer.{a.name} must be a number, got {value!r}") from None
            if not math.isfinite(number) or isinstance(value, bool):
                raise SchemaError(f"customer.{a.name} must be a finite number, got {value!r}")
            values[0, k] = number
        dates = np.full((1, len(self._dates)), _NO_DATE, dtype=np.int64)
        for k, a in enumerate(self._dates):
            value = attributes.get(a.name)
            if value is not None:
                dates[0, k] = instant_ns(value, self._tz, f"customer.{a.name}")
        names = {a.name for a in self.attributes}
        return Attributes(values, dates), sorted(k for k in attributes if k not in names)

    # ---- the matrix out --------------------------------------------------------------------------------
    def matrix(self, behaviour: np.ndarray, attrs: Attributes, t: int) -> np.ndarray:
        """The model's (rows × columns) float64 matrix at cutoff ``t`` (int ns): behaviour rows (columns
        :attr:`behaviour`) and their customers' encoded attributes."""
        n_b = len(self.behaviour)
        if behaviour.shape[1] != n_b:
            raise SchemaError(f"behaviour rows have {behaviour.shape[1]} columns, the model input {n_b}: "
                              "build features with the funnel config the model was trained with")
        X = np.empty((len(behaviour), len(self.columns)), dtype=np.float64)
        X[:, :n_b] = behaviour
        X[:, self._value_pos] = attrs.values
        if len(self._date_pos):
            known = (attrs.dates != _NO_DATE) & (attrs.dates < t)
            X[:, self._date_pos] = np.where(known, (t - attrs.dates) / DAY_NS, np.nan)
        return X

    def frame(self, ids: np.ndarray, t: int, behaviour: np.ndarray, attrs: Attributes) -> pd.DataFrame:
        """Feature rows as a frame: ``customer_id``, ``cutoff``, then :attr:`columns` (category attributes
        as pandas categoricals in the fitted vocabulary). :meth:`matrix_from_frame` of it is :meth:`matrix`."""
        X = self.matrix(behaviour, attrs, t)
        frame = pd.DataFrame(X, columns=list(self.columns))
        for a in self._values:
            if a.kind == "category":
                codes = frame[a.feature].to_numpy()
                frame[a.feature] = pd.Categorical.from_codes(np.where(np.isnan(codes), -1, codes).astype(np.int64),
                                                             categories=list(a.categories))
        frame.insert(0, "cutoff", pd.Timestamp(t, tz="UTC"))
        frame.insert(0, "customer_id", pd.array(ids, dtype="string"))
        return frame

    def matrix_from_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's matrix from a frame holding :attr:`columns` (any order, extra columns ignored):
        category columns as categoricals or text (codes in the fitted vocabulary; unseen or missing
        values are NaN, which LightGBM treats as missing), every other column numeric."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            extra = [c for c in frame.columns if c not in self.columns and c not in RESERVED and c not in self.reserved]
            raise SchemaError(
                f"the frame lacks {len(missing)} feature column(s) the model was fitted on: {missing[:10]}"
                + (f"; it has {len(extra)} the model does not know: {extra[:10]}" if extra else "")
                + ". Build features with funnelcast (build_features, or Project.features) and the funnel config "
                "the model was trained with"
            )
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        by_feature = {a.feature: a for a in self.attributes}
        for j, c in enumerate(self.columns):
            s = frame[c]
            a = by_feature.get(c)
            if a is not None and a.kind == "category":
                out[:, j] = self._column_values(a, s)
                continue
            try:
                out[:, j] = pd.to_numeric(s, errors="raise").astype("float64").to_numpy(na_value=np.nan)
            except (ValueError, TypeError):
                bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
                raise SchemaError(f"feature column {c!r} must be numeric; row {bad.index[0]!r} holds {bad.iloc[0]!r}") from None
        return out
