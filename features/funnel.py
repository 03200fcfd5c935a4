"""The funnel config: stages, event types, churn definition, horizons, windows and snapshot cadence.

Everything funnelcast derives from a business's journey lives here, as data a data scientist edits
in YAML. No feature name or rule elsewhere assumes the default five-stage funnel: they are all
generated from a :class:`FunnelConfig`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import zoneinfo
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from funnelcast.features.errors import ConfigError

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=48)]
OTHER = "other"
"""Event type / channel that unknown values are mapped to under the ``map_to_other`` policy."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(_Strict):
    """A journey stage and the event types that evidence it."""
    name: Name
    event_types: list[Name] = Field(min_length=1)


LABEL_DAYS_HELP = (
    "Train on the outcome of this many days after each cutoff and carry the probability to horizon_days "
    "(training/horizons.py): for a horizon longer than the history can label. Default: horizon_days itself.")


class _LabelWindow:
    """A probability target's horizon and the (possibly shorter) window its model is trained on (a mixin:
    fields stay in each section's own order, which the data hash reads; no annotations here, or pydantic
    would put them first)."""

    @property
    def label_window_days(self) -> int:
        """The days after a cutoff whose outcome the model learns: ``label_days``, else ``horizon_days``."""
        return self.horizon_days if self.label_days is None else self.label_days

    def _check_label_window(self):
        if self.label_days is not None and self.label_days > self.horizon_days:
            raise ValueError(f"label_days ({self.label_days}) is longer than horizon_days ({self.horizon_days}): "
                             "the model's window must fit inside the horizon it is carried to")
        return self


class ConversionConfig(_LabelWindow, _Strict):
    """Next-stage conversion: its horizon (days after the cutoff) and who counts as active (days before it)."""
    horizon_days: int = Field(30, gt=0, le=3650)
    label_days: int | None = Field(None, gt=0, description=LABEL_DAYS_HELP)
    active_within_days: int = Field(
        180, gt=0, description="Customers with no qualifying event in this many days before the cutoff are lapsed."
    )
    _label_window = model_validator(mode="after")(_LabelWindow._check_label_window)


class ChurnConfig(_LabelWindow, _Strict):
    """The churn definition (inactivity or an explicit churn event), its horizon in days and the stage it applies from.
    Under ``inactivity`` a customer with no qualifying event in ``horizon_days`` has churned already."""
    definition: Literal["inactivity", "explicit"] = "inactivity"
    horizon_days: int = Field(60, gt=0, le=3650)
    label_days: int | None = Field(None, gt=0, description=LABEL_DAYS_HELP)
    applies_from_stage: Name
    qualifying_event_types: list[Name] | None = None
    churn_event_types: list[Name] = Field(default_factory=list)
    _label_window = model_validator(mode="after")(_LabelWindow._check_label_window)


FeatureFamily = Literal["type_recency", "rates", "decay", "gaps", "trends", "pairs", "diversity", "calendar"]
FEATURE_FAMILIES: tuple[str, ...] = get_args(FeatureFamily)
"""The optional feature families (features/behaviour.py), each switched on by naming it in ``features.families``."""
DEFAULT_FEATURE_FAMILIES: tuple[str, ...] = ("trends", "pairs")
"""The families on by default: the ones the quality suite's ablation (README, Model quality) showed helping
somewhere and hurting nowhere. ``pairs`` adds nothing until ``paired_event_types`` names a pair; the others
stay available for data where they pay (``calendar`` needs a year or more of cutoffs)."""


class PairedEvents(_Strict):
    """Two event types that open and close something (a support ticket opened, then resolved)."""
    name: Name
    opens: Name
    closes: Name

    @model_validator(mode="after")
    def _distinct(self) -> PairedEvents:
        if self.opens == self.closes:
            raise ValueError(f"paired events {self.name!r} open and close with the same event type {self.opens!r}")
        return self


class FeatureWindows(_Strict):
    """Feature windows in whole days before the cutoff, the trend window, and the optional feature families."""
    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90], min_length=1)
    trend_days: int = Field(30, gt=0)
    families: list[FeatureFamily] = Field(
        default_factory=lambda: list(DEFAULT_FEATURE_FAMILIES),
        description="Optional feature families to compute; leave one out to ablate it (the order does not matter).",
    )
    decay_half_lives_days: list[int] = Field(default_factory=lambda: [14, 60], min_length=1)
    paired_event_types: list[PairedEvents] = Field(default_factory=list)

    @field_validator("windows_days", "decay_half_lives_days")
    @classmethod
    def _ascending(cls, v: list[int], info: ValidationInfo) -> list[int]:
        if any(w <= 0 for w in v) or sorted(set(v)) != v:
            raise ValueError(f"{info.field_name} must be positive whole days in ascending order without repeats, got {v}")
        return v

    @field_validator("families")
    @classmethod
    def _families_once(cls, v: list[str]) -> list[str]:
        _no_repeats(v, "feature families")
        return v

    @field_validator("paired_event_types")
    @classmethod
    def _pair_names_once(cls, v: list[PairedEvents]) -> list[PairedEvents]:
        _no_repeats([p.name for p in v], "paired_event_types names")
        return v


class ValueConfig(_Strict):
    """The value target: each buyer's expected spend (purchase amounts) in the next ``horizon_days``.

    The model learns the spend of the next ``label_days`` (a window short enough to have out-of-time
    folds on a year or two of history) and carries it to ``horizon_days`` with each stage's spend decay,
    measured as the spend of the following ``label_days`` over the first's (training/value.py)."""
    horizon_days: int = Field(365, gt=0, description="customer_value is the expected spend in this many days after the cutoff.")
    label_days: int = Field(90, gt=0, description=(
        "The window the value model is trained on; mapped to horizon_days by the measured spend decay."))
    btyd_baselines: list[Literal["bg_nbd", "mbg_nbd", "pareto_nbd"]] = Field(
        default_factory=lambda: ["bg_nbd", "mbg_nbd", "pareto_nbd"], description=(
            "BTYD models fitted beside the value model in each training run (with Gamma-Gamma for spend). "
            "Pareto/NBD's fit can take a minute on a few thousand buyers; leave it out where runs must be quick."))

    @model_validator(mode="after")
    def _label_within_horizon(self) -> ValueConfig:
        if self.label_days > self.horizon_days:
            raise ValueError(f"value.label_days ({self.label_days}) is longer than value.horizon_days ({self.horizon_days})")
        return self


class SnapshotConfig(_Strict):
    """Training cutoffs: every ``every_days`` from ``anchor_date`` (midnight UTC), after ``min_history_days`` of data."""
    every_days: int = Field(30, gt=0)
    anchor_date: dt.date = dt.date(2000, 1, 1)
    min_history_days: int = Field(90, ge=0)


class ReadinessConfig(_Strict):
    """The minimums a target needs before it is trained (labelled rows, positives, events per customer)."""
    min_positives: int = Field(50, ge=1)
    min_eligible: int = Field(500, ge=1)
    min_events_per_customer: int = Field(3, ge=1)
    max_share_sparse_customers: float = Field(0.5, ge=0, le=1)
    min_share_matched: float = Field(
        0.5, ge=0, le=1,
        description="Warn when fewer of the customers table's ids have events, or of the events' ids are in the table.",
    )


class TrainingConfig(_Strict):
    """How models are trained and promoted (read by ``training/``; features never look here)."""

    targets: list[str] = Field(
        default_factory=lambda: ["convert", "churn", "value"], min_length=1,
        description="Which models to train (names from funnelcast.features.targets.TARGETS).",
    )
    folds: int = Field(3, ge=1, le=24, description=(
        "Rolling-origin backtest folds (fewer where the history allows fewer; an in-time estimate where none fits). "
        "The registered model is the selected learner refitted on every labelled cutoff."))
    validation_cutoffs: int = Field(2, ge=1, description="Cutoffs per fold for early stopping and calibration.")
    learners: list[Literal["lightgbm", "logistic", "blend"]] = Field(
        default_factory=lambda: ["lightgbm", "logistic", "blend"], min_length=1,
        description="The learners the backtest may select from (by mean test champion_metric over the folds); "
                    "all three are always fitted and reported.")
    calibration: Literal["isotonic", "sigmoid"] = "isotonic"
    seasonal_shift: bool = Field(True, description=(
        "Correct each stage's calibrated level for the time of year from the same weeks a year earlier "
        "(training/model.py, SeasonalShift); has no effect with under a year of labelled history."))
    class_weight: Literal["balanced"] | None = None
    seed: int = 0
    early_stopping_rounds: int = Field(50, ge=1)
    lightgbm: dict[str, float | int | str | bool] = Field(
        default_factory=lambda: {"learning_rate": 0.03, "num_leaves": 15},
        description="LightGBM parameters (scikit-learn names) over funnelcast's defaults.",
    )
    model_name_prefix: Name = "funnelcast"

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: list[str]) -> list[str]:
        from funnelcast.features.targets import TARGETS  # the registry builds on this module

        unknown = [t for t in v if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; targets are {list(TARGETS)}")
        _no_repeats(v, "targets")
        return v

    @field_validator("lightgbm")
    @classmethod
    def _not_reserved(cls, v: dict) -> dict:
        reserved = sorted(set(v) & {"objective", "random_state", "seed", "deterministic", "force_col_wise", "n_jobs",
                                    "num_threads", "verbose", "scale_pos_weight", "is_unbalance"})
        if reserved:
            raise ValueError(
                f"training.lightgbm sets {reserved}, which funnelcast sets itself: use training.seed and "
                "training.class_weight, and $FUNNELCAST_THREADS for threads"
            )
        return v
    champion_metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    champion_tolerance: float = Field(
        0.005, ge=0, description="A new model is promoted unless it is worse than the champion by more than this."
    )


class RiskTier(_Strict):
    """A named churn-probability floor (the highest floor a customer reaches names their tier)."""
    name: Name
    min_churn_probability: float = Field(ge=0, le=1)


class ServingConfig(_Strict):
    """How scores are served and listed (read by ``serving/``; features and training never look here)."""

    risk_tiers: list[RiskTier] = Field(
        default_factory=lambda: [RiskTier(name="high", min_churn_probability=0.5),
                                 RiskTier(name="medium", min_churn_probability=0.2),
                                 RiskTier(name="low", min_churn_probability=0.0)],
        min_length=1,
        description="Churn-probability floors, highest first; a customer gets the first tier whose floor they reach.",
    )
    value_window_days: int = Field(365, gt=0, description="Customer value = spend in this many days before as_of.")
    reasons: int = Field(3, ge=1, le=10, description="Reasons per scored customer.")
    min_reason_credit: float = Field(
        0.1, ge=0,
        description="A reason is stated only where its feature raises the score's log-odds by at least this much "
        "(0.1: about 10% higher odds). Smaller pushes are noise to an agent, and attribution methods rank them "
        "differently (path attribution and TreeSHAP agree on the top reason for ~90% of material ones, ~40% of all).",
    )
    max_customers_per_request: int = Field(1000, ge=1)
    max_events_per_request: int = Field(10_000, ge=1)
    max_outreach: int = Field(10_000, ge=1)

    @field_validator("risk_tiers")
    @classmethod
    def _descending(cls, v: list[RiskTier]) -> list[RiskTier]:
        floors = [t.min_churn_probability for t in v]
        if floors != sorted(floors, reverse=True) or len(set(floors)) != len(floors):
            raise ValueError(f"risk_tiers must go from the highest churn-probability floor down, without repeats; got {floors}")
        if floors[-1] != 0:
            raise ValueError("the last risk tier must have min_churn_probability 0, so that every customer gets a tier")
        _no_repeats([t.name for t in v], "risk tier names")
        return v


class OrderLogConfig(_Strict):
    """Read the source as a plain transaction log (``customer_id``, ``timestamp`` or ``date``, ``amount``,
    optional ``quantity``) instead of an event log (:mod:`funnelcast.features.orders`): each customer's
    first order becomes ``first_order_event``, every later one ``repeat_order_event``."""

    same_day: Literal["merge", "keep"] = Field("merge", description=(
        "merge: a customer's orders on one calendar day (in source_timezone, else UTC) become one order at the "
        "day's first timestamp, amounts and quantities summed (counted in the validation summary); keep: each "
        "row stays an order."))
    first_order_event: Name = "first_order"
    repeat_order_event: Name = "repeat_order"


class FunnelConfig(_Strict):
    """A validated funnel. Stage order is the journey's order; each event type evidences at most one stage."""

    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    name: str = "funnel"
    source_timezone: str | None = None
    unknown_event_types: Literal["error", "map_to_other"] = "error"
    unknown_channels: Literal["error", "map_to_other"] = "map_to_other"
    stages: list[Stage] = Field(min_length=2)
    other_event_types: list[Name] = Field(default_factory=list)
    event_groups: dict[Name, list[Name]] = Field(default_factory=dict)
    purchase_event_types: list[Name] = Field(default_factory=list)
    outbound_event_types: list[Name] = Field(default_factory=list)
    channels: dict[Name, Literal["inbound", "outbound"]] = Field(default_factory=dict)
    conversion: ConversionConfig = ConversionConfig()
    churn: ChurnConfig
    value: ValueConfig = ValueConfig()
    features: FeatureWindows = FeatureWindows()
    snapshots: SnapshotConfig = SnapshotConfig()
    readiness: ReadinessConfig = ReadinessConfig()
    training: TrainingConfig = TrainingConfig()
    serving: ServingConfig = ServingConfig()
    order_log: OrderLogConfig | None = Field(None, description=(
        "Set to read sources as a transaction log (one row per order) rather than an event log; "
        "the shipped 'order-log' preset does."))

    @field_validator("source_timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FunnelConfig:
        stage_names = [s.name for s in self.stages]
        _no_repeats(stage_names, "stage names")
        owner: dict[str, str] = {}
        for stage in self.stages:
            for et in stage.event_types:
                if et in owner:
                    raise ValueError(
                        f"event type {et!r} evidences two stages ({owner[et]!r} and {stage.name!r}); "
                        "an event type may evidence at most one stage"
                    )
                owner[et] = stage.name
        for et in self.other_event_types:
            if et in owner:
                raise ValueError(f"event type {et!r} is listed in other_event_types and in stage {owner[et]!r}")
            owner[et] = "other_event_types"
        known = set(owner)
        if OTHER in known:
            raise ValueError(f"{OTHER!r} is reserved for unknown event types; rename that event type")
        if self.unknown_event_types == "map_to_other":
            known.add(OTHER)

        def check_known(types: list[str], where: str) -> None:
            unknown = [t for t in types if t not in known]
            if unknown:
                raise ValueError(f"{where} names event types no stage or other_event_types lists: {unknown}")

        for group, types in self.event_groups.items():
            check_known(types, f"event_groups.{group}")
            if group in stage_names:
                raise ValueError(f"event group {group!r} has the same name as a stage; rename one of them")
        check_known(self.purchase_event_types, "purchase_event_types")
        check_known(self.outbound_event_types, "outbound_event_types")
        if self.order_log is not None:
            orders = [self.order_log.first_order_event, self.order_log.repeat_order_event]
            check_known(orders, "order_log")
            if orders[0] == orders[1]:
                raise ValueError("order_log: first_order_event and repeat_order_event must differ")
        check_known(self.churn.churn_event_types, "churn.churn_event_types")
        for pair in self.features.paired_event_types:
            check_known([pair.opens, pair.closes], f"features.paired_event_types.{pair.name}")
        if self.churn.qualifying_event_types is not None:
            check_known(self.churn.qualifying_event_types, "churn.qualifying_event_types")
            if not self.churn.qualifying_event_types:
                raise ValueError("churn.qualifying_event_types is empty; use null for 'every non-outbound event type'")
        if self.churn.applies_from_stage not in stage_names:
            raise ValueError(f"churn.applies_from_stage {self.churn.applies_from_stage!r} is not a stage; stages are {stage_names}")
        if self.churn.definition == "explicit" and not self.churn.churn_event_types:
            raise ValueError("churn.definition is 'explicit' but churn.churn_event_types is empty")
        if OTHER in self.channels:
            raise ValueError(f"{OTHER!r} is reserved for unknown channels; rename that channel")
        return self

    # ---- derived vocabularies, in a fixed order that feature columns follow -------------------
    @cached_property
    def event_types(self) -> tuple[str, ...]:
        """Every known event type: stage types in journey order, then other types (then ``other``)."""
        types = [et for s in self.stages for et in s.event_types] + list(self.other_event_types)
        if self.unknown_event_types == "map_to_other":
            types.append(OTHER)
        return tuple(types)

    @cached_property
    def stage_names(self) -> tuple[str, ...]:
        """Stage names in journey order."""
        return tuple(s.name for s in self.stages)

    @cached_property
    def channel_names(self) -> tuple[str, ...]:
        """Known channels (then ``other`` under ``map_to_other``)."""
        names = list(self.channels)
        if self.unknown_channels == "map_to_other":
            names.append(OTHER)
        return tuple(names)

    @cached_property
    def stage_of_event_type(self) -> dict[str, int]:
        """Event type -> index of the stage it evidences (types evidencing no stage are absent)."""
        return {et: i for i, s in enumerate(self.stages) for et in s.event_types}

    @cached_property
    def qualifying_event_types(self) -> tuple[str, ...]:
        """Event types that count as the customer's own activity: by default all but outbound touches and churn events."""
        if self.churn.qualifying_event_types is not None:
            return tuple(self.churn.qualifying_event_types)
        excluded = set(self.outbound_event_types) | set(self.churn.churn_event_types)
        return tuple(et for et in self.event_types if et not in excluded)

    @cached_property
    def churn_stage_index(self) -> int:
        """Index of ``churn.applies_from_stage`` among the stages."""
        return self.stage_names.index(self.churn.applies_from_stage)

    def data_hash(self) -> str:
        """SHA-256 of everything that shapes feature rows and labels (not training, readiness or serving
        settings): a model scores correctly only with features built under the same hash."""
        shape = self.model_dump(mode="json", exclude={"training": True, "readiness": True, "serving": True, "name": True,
                                                      "value": {"btyd_baselines"}})
        for section in ("conversion", "churn"):  # unset: the hash of configs from before the option stays
            if shape[section]["label_days"] is None:
                del shape[section]["label_days"]
        # Not sort_keys: the order of event groups and channels is the order of their feature columns.
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()

    def conversion_targets(self) -> list[tuple[str, str]]:
        """(from_stage, to_stage) for every stage that has a next one."""
        names = self.stage_names
        return [(names[i], names[i + 1]) for i in range(len(names) - 1)]


def _no_repeats(values: list[str], what: str) -> None:
    seen: set[str] = set()
    repeated = sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if repeated:
        raise ValueError(f"{what} repeat: {repeated}")


def default_config_path() -> Path:
    """The path of the shipped five-stage funnel config (``default_funnel.yaml``)."""
    return Path(str(resources.files("funnelcast.features").joinpath("default_funnel.yaml")))


PRESETS = {"five-stage": "default_funnel.yaml", "order-log": "order_log.yaml"}
"""Funnel configs shipped with funnelcast, by the name ``--config`` accepts in place of a file."""


def preset_path(name: str) -> Path:
    """The shipped config file of preset ``name`` (:data:`PRESETS`)."""
    return Path(str(resources.files("funnelcast.features").joinpath(PRESETS[name])))


def load_config(path: str | Path | None = None) -> FunnelConfig:
    """Read and validate a funnel config from YAML; ``None`` gives the shipped default funnel, and a
    preset's name (:data:`PRESETS`, e.g. ``"order-log"``) that preset, unless a file of that name exists.

    Raises :class:`ConfigError` with every problem, each naming its field, on an invalid file.
    """
    if path is not None and str(path) in PRESETS and not Path(path).exists():
        path = preset_path(str(path))
    source = Path(path) if path is not None else default_config_path()
    try:
        raw = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(source)!r} does not exist (shipped presets: "
                          f"{', '.join(PRESETS)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(source)!r} could not be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(source)!r} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(source)!r} must hold a mapping of settings, got {type(raw).__name__}")
    return config_from_dict(raw, origin=str(source))


def config_from_dict(raw: dict, origin: str = "config") -> FunnelConfig:
    """Validate a funnel config given as a mapping; :class:`ConfigError` names every invalid field, prefixed by ``origin``."""
    try:
        return FunnelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = re.sub(r"^Value error, ", "", err["msg"])
            problems.append(f"{where}: {msg}")
        raise ConfigError(f"{origin} is not a valid funnel config:\n  - " + "\n  - ".join(problems)) from None
