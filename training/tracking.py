"""Every MLflow call funnelcast makes: tracking store, runs, metrics, artifacts, models and the registry.

Nothing else imports MLflow but ``training/mlflow_model.py``, the code MLflow itself runs to load a
registered model (funnelcast reads its models here, without running it). The default store is embedded and local — a SQLite database and an
artifact folder under one directory (``mlruns/`` unless told otherwise) — so nothing needs
starting; ``MLFLOW_TRACKING_URI`` (or ``--tracking-uri``) points it at a real tracking server.
Registered models are named ``<prefix>-convert`` and ``<prefix>-churn`` and carry the aliases
``champion`` and ``challenger`` (MLflow 3 aliases, not stages).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import mlflow
import pandas as pd

from funnelcast.features.events import redact_url
from funnelcast.features.targets import TARGETS
from funnelcast.training.errors import TrackingError
from funnelcast.training.model import TargetModel

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_HOME = Path("mlruns")
EXPERIMENT = "funnelcast"


class RegistryError(TrackingError):
    """The registry cannot give what was asked (no champion, an unreadable model)."""


def resolve_uri(tracking_uri: str | None = None, home: str | Path | None = None,
                create: bool = True) -> tuple[str, Path | None]:
    """(tracking URI, local artifact folder or None). An explicit URI, else an explicit ``home`` (a
    SQLite store at ``<home>/mlflow.db`` with artifacts in ``<home>/artifacts``), else
    ``MLFLOW_TRACKING_URI``, else the default home ``mlruns/``. The home folder is made only if
    ``create``."""
    uri = tracking_uri or (None if home is not None else os.environ.get("MLFLOW_TRACKING_URI"))
    if uri:
        return uri, None
    folder = Path(home) if home is not None else DEFAULT_HOME
    folder = folder.resolve()
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"the embedded MLflow store cannot be made in {folder}: {exc}") from None
    return f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts"


def _store_problem(uri: str) -> str | None:
    """Why a SQLite store cannot be read without being created, or None (another kind of store, or there)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if not Path(url.database).is_file():
        return f"there is no MLflow store at {url.database} (nothing trained there yet; check the path, or train first)"
    return None


def connect(tracking_uri: str | None = None, home: str | Path | None = None, experiment: str = EXPERIMENT,
            create: bool = True) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns the tracking URI.

    ``create=False`` (scoring, serving: reading a registry) makes nothing: a SQLite store that does not
    exist is a :class:`TrackingError`, not a new empty database. A store that cannot be read (a
    corrupt or truncated database, an unreachable server) is a :class:`TrackingError` naming it.
    """
    import sqlalchemy.exc

    uri, artifacts = resolve_uri(tracking_uri, home, create=create)
    shown = redact_url(uri)
    if not create and (problem := _store_problem(uri)) is not None:
        raise TrackingError(f"the MLflow tracking store {shown} cannot be read: {problem}")
    user_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        # MLflow exports the URI to the environment; keep the user's own setting (or its absence),
        # so that a later connect() in this process is not steered by an earlier one.
        if user_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = user_env
        if create:
            if mlflow.get_experiment_by_name(experiment) is None:
                mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri() if artifacts else None)
            mlflow.set_experiment(experiment)
        else:
            mlflow.MlflowClient().search_registered_models(max_results=1)  # reads the store: is it one?
    except (mlflow.exceptions.MlflowException, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise TrackingError(f"the MLflow tracking store {shown} is not usable: {_first_line(exc)}") from None
    return uri


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def run(name: str, nested: bool = False, tags: dict[str, str] | None = None) -> Iterator[str]:
    """A (possibly nested) MLflow run; yields its id."""
    with mlflow.start_run(run_name=name, nested=nested, tags=tags) as active:
        yield active.info.run_id


_BAD_KEY = re.compile(r"[^\w./\- ]")


def metric_key(*parts: str) -> str:
    """A valid MLflow metric key from parts joined by '/' (``convert:a->b`` becomes ``convert_a_to_b``)."""
    return "/".join(_BAD_KEY.sub("_", p.replace("->", "_to_")) for p in parts)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log finite metrics in batches (NaN, e.g. an AUC on one class, is left out)."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    items = list(clean.items())
    for i in range(0, len(items), 500):
        mlflow.log_metrics(dict(items[i:i + 500]), step=step)


def log_params(params: dict[str, Any]) -> None:
    """Log parameters to the active run (dicts and lists as JSON)."""
    mlflow.log_params({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in params.items()})


def set_tags(tags: dict[str, Any]) -> None:
    """Set tags on the active run."""
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_dict(data: dict, artifact_file: str) -> None:
    """Log a dict as a JSON artifact of the active run."""
    mlflow.log_dict(data, artifact_file)


def log_artifact(path: str | Path, folder: str | None = None) -> None:
    """Log a file as an artifact of the active run, under ``folder``."""
    mlflow.log_artifact(str(path), artifact_path=folder)


def signature_frame(model: TargetModel, rows: pd.DataFrame) -> pd.DataFrame:
    """A few rows of a feature frame as the MLflow model takes them: its columns and the eligibility column."""
    eligible = TARGETS[model.target].eligible_column
    return rows[[*model.feature_names_, eligible]].head(5).reset_index(drop=True)


def _requirements() -> list[str]:
    names = ("lightgbm", "scikit-learn", "numpy", "pandas", "scipy", "pyarrow", "pydantic", "pyyaml")
    out = []
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{n}=={metadata.version(n)}")
    return out


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version: name, version and ``models:/`` URI."""
    name: str
    version: str
    model_uri: str


ARTIFACT_HASHES = "funnelcast.artifact_sha256"
"""Model-version tag: JSON of every file of the logged model (path inside it -> SHA-256)."""
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


def log_model(model: TargetModel, example: pd.DataFrame, registered_name: str,
              tags: dict[str, Any] | None = None) -> RegisteredVersion:
    """Log ``model`` as an MLflow pyfunc with signature and input example, register it, and record the
    SHA-256 of every file of the logged model with the version (checked by :func:`load_model`).

    No pickle: the artifacts are LightGBM's text model and JSON (:meth:`TargetModel.save`), read by the
    models-from-code entry point ``training/mlflow_model.py``. The signature types category attributes
    as ``Any`` (a categorical or a text column both pass MLflow's schema check), requires the
    target's eligibility column and passes an optional ``cutoff`` column through (the seasonal shift's
    scoring time)."""
    import tempfile

    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    example = signature_frame(model, example)
    for c in model.categories_:
        example[c] = example[c].astype("string").astype(object)
    eligible = TARGETS[model.target].eligible_column
    # ``cutoff`` (optional) is the scoring time the seasonal shift reads (training/model.py); without it
    # in the schema MLflow would drop the column before the model saw it.
    inputs = Schema([ColSpec(AnyType() if c in model.categories_ else "double", c) for c in model.feature_names_]
                    + [ColSpec("boolean", eligible), ColSpec(AnyType(), "cutoff", required=False)])
    signature = ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double")]))
    with tempfile.TemporaryDirectory(prefix="funnelcast-model-") as folder:
        files = model.save(folder)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(MODEL_CODE), artifacts={k: str(v) for k, v in files.items()},
            signature=signature, input_example=example, registered_model_name=registered_name,
            pip_requirements=_requirements(),
        )
    version = str(info.registered_model_version)
    hashes = _file_hashes(_model_folder(registered_name, version))
    set_version_tags(registered_name, version, {**(tags or {}), ARTIFACT_HASHES: json.dumps(hashes, sort_keys=True)})
    return RegisteredVersion(name=registered_name, version=version, model_uri=f"models:/{registered_name}/{version}")


def _model_folder(registered_name: str, version: str) -> Path:
    """A local folder holding the version's files (the store's own folder where it is local)."""
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{registered_name}/{version}"))


def _file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder``, by its path inside it."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def load_model(registered_name: str, alias: str = CHAMPION) -> tuple[str, TargetModel]:
    """(version, model) behind ``alias``, read from its LightGBM text and JSON files after checking
    every file's SHA-256 against the one recorded when the version was logged. Nothing stored is
    executed. :class:`RegistryError` names the store, model and file when there is no such version, an
    artifact is missing or differs, or a file cannot be read."""
    version = alias_version(registered_name, alias)
    where = f"{registered_name} version {version} in the registry at {redact_url(mlflow.get_tracking_uri())}"
    if version is None:
        raise RegistryError(
            f"no model {registered_name!r} with alias {alias!r} in the registry at "
            f"{redact_url(mlflow.get_tracking_uri())}; train one with `funnelcast train`"
        )
    recorded = version_info(registered_name, version).get(ARTIFACT_HASHES)
    if recorded is None:
        raise RegistryError(f"{where} was saved by an older funnelcast (a pickled model, without recorded artifact "
                            "hashes); funnelcast does not load it. Retrain (`funnelcast train --force`)")
    try:
        folder = _model_folder(registered_name, version)
        expected = json.loads(recorded)
        for name, digest in sorted(expected.items()):
            path = folder / name
            if not path.is_file():
                raise RegistryError(f"{where}: the artifact {name!r} is missing from {folder}")
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise RegistryError(f"{where}: the artifact {name!r} differs from the one logged (its SHA-256 changed); "
                                    "refusing to load it. Retrain, or restore the artifact")
        model = TargetModel.load(folder / "artifacts" / TargetModel.BOOSTER_FILE, folder / "artifacts" / TargetModel.MODEL_FILE)
    except RegistryError:
        raise
    except (mlflow.exceptions.MlflowException, OSError, ValueError, KeyError) as exc:
        raise RegistryError(f"{where} cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return version, model


def alias_version(registered_name: str, alias: str) -> str | None:
    """The version behind ``alias``, or None when the model or the alias does not exist; a store that
    cannot be read is a :class:`TrackingError`."""
    import sqlalchemy.exc

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(registered_name, alias).version)
    except (mlflow.exceptions.MlflowException, sqlalchemy.exc.SQLAlchemyError) as exc:
        if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise TrackingError(f"the MLflow tracking store {redact_url(mlflow.get_tracking_uri())} is not usable: "
                            f"{_first_line(exc)}") from None


def set_alias(registered_name: str, alias: str, version: str) -> None:
    """Point ``alias`` (champion, challenger) of a registered model at ``version``."""
    mlflow.MlflowClient().set_registered_model_alias(registered_name, alias, version)


def set_version_tags(registered_name: str, version: str, tags: dict[str, Any]) -> None:
    """Set tags on a registered model version."""
    client = mlflow.MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, version, k, str(v))


def version_info(registered_name: str, version: str) -> dict[str, Any]:
    """A registered version's tags (target, trained_at, test metrics, config hash, run id) and registry fields."""
    mv = mlflow.MlflowClient().get_model_version(registered_name, version)
    return {"name": registered_name, "version": str(mv.version), "aliases": list(mv.aliases),
            "registered_at": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").isoformat(), **dict(mv.tags)}


def tracking_uri() -> str:
    """The tracking URI MLflow is connected to."""
    return mlflow.get_tracking_uri()
