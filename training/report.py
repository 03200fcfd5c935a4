"""Plots and the one-file HTML model report of one target, written for a retention lead.

Every plot function writes a PNG and returns its path; :func:`write_report` embeds them as base64
data URIs next to the metric tables, so the report is a single file with no external assets that
can be mailed or attached to an MLflow run as it is. Figures are drawn on the Agg canvas directly:
nothing is configured at import time and no display is needed.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from funnelcast.features.targets import TARGETS
from funnelcast.training.backtest import MODELS, TargetBacktest
from funnelcast.training.metrics import decile_table, targeting_table
from funnelcast.training.model import TargetModel
from funnelcast.training.value import VALUE_COLUMNS

MODEL_ORDER = (*MODELS, "oracle", "hidden_state")
"""Display order of the scored models; any other ``p_<name>`` column follows them."""

METRIC_COLUMNS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "top_decile_lift",
                  "precision_at_10pct", "recall_at_10pct")
BACKTEST_COLUMNS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "top_decile_lift")
MISSING = "–"
DPI = 110
COLOURS = {"funnelcast": "#1f77b4", "lightgbm": "#17becf", "logistic": "#ff7f0e", "blend": "#9467bd", "recency_frequency": "#2ca02c", "oracle": "#7f7f7f", "hidden_state": "#bbbbbb"}


# ---------------------------------------------------------------------------------------------
# Plots


def _figure(width: float, height: float):
    """A figure on the Agg canvas (no pyplot state, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" text chunk: the PNG then carries no URL and is byte-stable across runs.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _model_columns(scores: pd.DataFrame) -> list[tuple[str, str]]:
    """(model name, score column) for every ``p_<model>`` column of ``scores``, in display order."""
    present = {c[2:]: c for c in scores.columns if isinstance(c, str) and c.startswith("p_")}
    known = [m for m in MODEL_ORDER if m in present]
    return [(m, present[m]) for m in known + sorted(set(present) - set(known))]


def _labelled(scores: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of the rows where ``column`` has a score (the oracle may have gaps)."""
    p = scores[column].to_numpy(dtype=float, na_value=np.nan)
    y = scores["label"].to_numpy(dtype=float, na_value=np.nan)
    keep = ~(np.isnan(p) | np.isnan(y))
    return y[keep], p[keep]


def plot_feature_importance(model: TargetModel, path: Path, top: int = 20) -> Path:
    """Horizontal bars of the ``top`` features by LightGBM total gain (summed loss reduction of
    every split on the feature, up to the best iteration)."""
    gain = np.asarray(model.booster_.feature_importance("gain", iteration=model.best_iteration_), dtype=float)
    names = np.asarray(model.feature_names_, dtype=object)
    order = np.argsort(-gain, kind="stable")[:top][::-1]  # largest at the top of the chart
    fig = _figure(8, max(2.5, 0.32 * len(order) + 1.2))
    ax = fig.add_subplot()
    ax.barh(np.arange(len(order)), gain[order], color=COLOURS["funnelcast"])
    ax.set_yticks(np.arange(len(order)), labels=[str(n) for n in names[order]], fontsize=8)
    ax.set_xlabel("total gain (loss reduction summed over splits)")
    ax.set_title(f"{model.target}: top {len(order)} features by gain")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def shap_values(model: TargetModel, frame: pd.DataFrame, max_rows: int = 1000,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """TreeSHAP contributions (log-odds) of a seeded random sample of at most ``max_rows`` rows.

    Returns ``(contributions [n, f], feature matrix [n, f], feature names)``; the bias column is
    dropped, so a row's contributions plus the bias sum to its raw score.
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(len(frame))
    if len(frame) > max_rows:
        rows = np.sort(rng.choice(len(frame), size=max_rows, replace=False))
    X = model.matrix(frame.iloc[rows])
    contrib = np.asarray(model.booster_.predict(X, pred_contrib=True, num_iteration=model.best_iteration_))
    return contrib[:, :-1], X, list(model.feature_names_)


def _percentile_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value within the sample in (0, 1]; NaN stays NaN."""
    return pd.Series(values).rank(pct=True).to_numpy(dtype=float)


def _swarm_offsets(x: np.ndarray, rng: np.random.Generator, width: float = 0.4, bins: int = 40) -> np.ndarray:
    """Vertical jitter proportional to how crowded each dot's neighbourhood is, so dense regions
    spread wider (the beeswarm look) without any dot leaving its feature's row."""
    if len(x) == 0 or np.ptp(x) == 0:
        return rng.uniform(-width, width, len(x)) * 0.5
    counts, edges = np.histogram(x, bins=bins)
    where = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    return rng.uniform(-1, 1, len(x)) * width * counts[where] / counts.max()


def plot_shap_summary(model: TargetModel, frame: pd.DataFrame, path: Path, top: int = 15,
                      max_rows: int = 1000) -> Path:
    """SHAP summary of the ``top`` features by mean |SHAP|: one dot per sampled customer at its
    contribution in log-odds, coloured by the feature's percentile rank in the sample (NaN grey)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    contrib, X, names = shap_values(model, frame, max_rows=max_rows)
    importance = np.abs(contrib).mean(axis=0)
    chosen = np.argsort(-importance, kind="stable")[:top]
    cmap = colormaps["coolwarm"]
    rng = np.random.default_rng(0)
    fig = _figure(8, max(2.5, 0.42 * len(chosen) + 1.4))
    ax = fig.add_subplot()
    for row, j in enumerate(chosen):
        y_pos = len(chosen) - 1 - row  # most important at the top
        x = contrib[:, j]
        colour_rank = _percentile_rank(X[:, j])
        y = y_pos + _swarm_offsets(x, rng)
        missing = np.isnan(colour_rank)
        ax.scatter(x[missing], y[missing], s=6, c="#b0b0b0", linewidths=0, alpha=0.7)
        ax.scatter(x[~missing], y[~missing], s=6, c=colour_rank[~missing], cmap=cmap, vmin=0, vmax=1,
                   linewidths=0, alpha=0.8)
    ax.axvline(0, color="#555555", linewidth=0.8)
    ax.set_yticks(np.arange(len(chosen)), labels=[names[j] for j in chosen[::-1]], fontsize=8)
    ax.set_ylim(-0.7, len(chosen) - 0.3)
    ax.set_xlabel("SHAP value (contribution to the log-odds)")
    ax.set_title(f"{model.target}: feature contributions on {len(contrib):,} sampled customers")
    ax.grid(axis="x", alpha=0.3)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=ax, ticks=[0, 1], aspect=40)
    bar.set_ticklabels(["low", "high"])
    bar.set_label("feature value (low -> high)")
    return _save(fig, path)


def plot_calibration(scores: pd.DataFrame, path: Path, bins: int = 10) -> Path:
    """Reliability diagram (observed positive rate vs mean predicted probability in ``bins``
    equal-count bins) of every ``p_<model>`` column, with a histogram of the selected learner's scores below."""
    from sklearn.calibration import calibration_curve

    fig = _figure(7, 7)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=1, label="perfectly calibrated")
    for name, column in _model_columns(scores):
        y, p = _labelled(scores, column)
        if len(y) == 0 or y.min() == y.max():
            continue
        observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        top.plot(predicted, observed, marker="o", markersize=4, label=name, color=COLOURS.get(name),
                 linestyle="--" if name in ("oracle", "hidden_state") else "-")
    top.set_ylabel("observed positive rate")
    top.set_title(f"calibration ({bins} equal-count bins per model)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    if "p_funnelcast" in scores:
        _, p = _labelled(scores, "p_funnelcast")
        bottom.hist(p, bins=50, range=(0, 1), color=COLOURS["funnelcast"])
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("customers (funnelcast)")
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def _gains_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share contacted and share of positives reached, contacting by descending score (ties by row order)."""
    order = np.lexsort((np.arange(len(p)), -p))
    reached = np.concatenate([[0.0], np.cumsum(y[order])]) / max(y.sum(), 1.0)
    contacted = np.arange(len(p) + 1) / max(len(p), 1)
    return contacted, reached


def plot_gains(scores: pd.DataFrame, path: Path) -> Path:
    """Cumulative gains and lift against the share of customers contacted, per ``p_<model>`` column."""
    fig = _figure(11, 4.5)
    gains, lift = fig.subplots(1, 2)
    gains.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=1, label="random")
    lift.axhline(1, linestyle=":", color="black", linewidth=1, label="random")
    for name, column in _model_columns(scores):
        y, p = _labelled(scores, column)
        if len(y) == 0 or y.sum() == 0:
            continue
        contacted, reached = _gains_curve(y, p)
        style = {"label": name, "color": COLOURS.get(name), "linestyle": "--" if name in ("oracle", "hidden_state") else "-"}
        gains.plot(contacted, reached, **style)
        # Lift over the first handful of customers is noise: start at 1 % contacted.
        start = max(1, int(math.ceil(len(y) / 100)))
        lift.plot(contacted[start:], reached[start:] / contacted[start:], **style)
    gains.set_xlabel("share of customers contacted (highest scores first)")
    gains.set_ylabel("share of positives reached")
    gains.set_title("cumulative gains")
    gains.set_xlim(0, 1)
    gains.set_ylim(0, 1.01)
    lift.set_xlabel("share of customers contacted (highest scores first)")
    lift.set_ylabel("lift over random contact")
    lift.set_title("lift")
    lift.set_xlim(0, 1)
    for ax in (gains, lift):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# HTML report


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _metric(value: Any) -> str:
    """A probability or metric: 4 decimals."""
    return MISSING if _is_missing(value) else f"{float(value):.4f}"


def _signed(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{float(value):+.4f}"


def _count(value: Any) -> str:
    """A count: thousands separators."""
    return MISSING if _is_missing(value) else f"{int(round(float(value))):,}"


def _expected_count(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{float(value):,.1f}"


def _percent(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{float(value):g}%"


def _value(value: Any) -> str:
    """A data-summary value of any type, as escaped HTML."""
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str, ensure_ascii=False, indent=1)
        return f"<code>{html.escape(text)}</code>"
    if _is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{int(value):,}" if float(value).is_integer() else f"{float(value):,.4f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], classes: str = "") -> str:
    """An HTML table; ``header`` is plain text (escaped here), cells are already-escaped HTML."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{classes}"' if classes else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _frame_table(frame: pd.DataFrame, columns: dict[str, tuple[str, Callable[[Any], str]]]) -> str:
    """Table of ``frame``: ``columns`` maps a frame column to (heading, formatter)."""
    rows = [[fmt(record[c]) for c, (_, fmt) in columns.items()] for record in frame.to_dict("records")]
    return _table([heading for heading, _ in columns.values()], rows)


def _decision_html(decision: dict) -> str:
    version, alias = decision.get("version"), decision.get("alias")
    reason = decision.get("reason") or ""
    if version is None:
        text = "not registered"
    else:
        text = f"registered as version {version}, " + (f"alias {alias}" if alias else "no alias")
    text = f"{text}: {reason}" if reason else text
    return f'<p class="decision">{html.escape(text)}</p>'


def _metrics_section(backtest: TargetBacktest) -> str:
    metrics = backtest.latest.metrics
    rows = [[html.escape(name)] + [_metric(m.get(c)) for c in METRIC_COLUMNS] for name, m in metrics.items()]
    blank = [""] * (len(METRIC_COLUMNS) - 1)
    auc = {name: m.get("roc_auc", float("nan")) for name, m in metrics.items()}
    if "funnelcast" in auc:
        for other in ("lightgbm", "logistic", "blend", "recency_frequency"):
            if other in auc and other != backtest.learner:
                rows.append([html.escape(f"funnelcast − {other}"), _signed(auc["funnelcast"] - auc[other]), *blank])
        if "oracle" in auc:
            rows.append([html.escape("gap to oracle"), _signed(auc["oracle"] - auc["funnelcast"]), *blank])
    note = ("<p class=\"note\">funnelcast is the learner the backtest selected "
            f"({html.escape(backtest.learner)}). Margin rows are ROC-AUC differences. The oracle is the simulator's true "
            "probability given the customer's event history (the best any model of the log can do): the gap to it "
            "is what a better model could still gain. hidden_state is the true probability given the customer's "
            "hidden state, which no model of the log can see: a ceiling, not a target.</p>")
    return ("<h2>Test metrics (latest fold)</h2>"
            f"<p>{html.escape(backtest.latest.fold.describe())}</p>"
            + _table(["model", *METRIC_COLUMNS], rows) + note)


def _model_section(backtest: TargetBacktest) -> str:
    """How quality was estimated, which learner was selected and how the registered model was refitted."""
    refit = backtest.refit
    metric = backtest.selection_metric
    rows = [[html.escape(name), _metric(value), "selected" if name == backtest.learner else ""]
            for name, value in backtest.selection.items()]
    estimate = ("out-of-time: every fold tests on a later cutoff than it trained on" if backtest.kind == "out-of-time"
                else "IN-TIME: no out-of-time fold fits this history, so each fold tests on customers it did not train "
                     "on at the same cutoffs (optimistic where behaviour drifts)")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in backtest.notes)
    return (f"<h2>Model</h2><p>Quality estimate: {html.escape(estimate)}.</p>"
            + (f'<ul class="warnings">{notes}</ul>' if notes else "")
            + _table(["learner", f"mean test {metric} over {len(backtest.folds)} folds", ""], rows)
            + f"<p>The registered model is {html.escape(backtest.learner)} refitted on all {refit['rows']:,} labelled rows "
              f"({refit['cutoffs']} cutoffs up to {html.escape(refit['last_training_cutoff'][:10])}) with "
              f"{refit['rounds']} boosting rounds (the folds' median), calibrated on {refit['calibration_rows']:,} "
              f"out-of-fold scores at {len(refit['calibration_cutoffs'])} recent cutoffs, with its own correction for "
              f"{len(refit['calibration_segments'])} stage(s).</p>"
            + f"<p>{html.escape(_seasonal_text(refit))}</p>"
            + (f"<p>{html.escape(_horizon_text(backtest))}</p>" if backtest.model.horizon_map_ is not None else ""))


def _horizon_text(backtest) -> str:
    """How a target trained under ``label_days`` answers its horizon, and how well the map fitted."""
    horizon_map = backtest.model.horizon_map_
    text = (horizon_map.describe(backtest.target) + ". The metrics above are for the first "
            f"{horizon_map.label_days} days (what the labels say).")
    fit = horizon_map.fit
    if fit:
        text += (f" On those rows the map's mean probability is {fit['p_mean']:.3f} against a realised rate of "
                 f"{fit['rate']:.3f}; log loss {fit['log_loss']:.4f} (κ = 1: {fit['log_loss_kappa_1']:.4f}).")
    return text


def _seasonal_text(refit: dict) -> str:
    """What the model's year-ago seasonal shift (training/model.py, SeasonalShift) has to work with."""
    cells = refit.get("seasonal_cells")
    if cells is None:
        return "Seasonal shift: off (training.seasonal_shift)."
    if cells == 0:
        return "Seasonal shift: no (stage, cutoff) cell has enough rows of both classes; scores are not moved by season."
    return (f"Seasonal shift: {cells} (stage, cutoff) cells measured; a score at time t moves by how far its stage's "
            "season a year before t sat from the calibration season, where the history reaches that far back "
            "(not otherwise), shrunk toward zero by its standard error.")


def _backtest_section(backtest: TargetBacktest) -> str:
    summary = backtest.summary()
    rows = []
    for name, values in summary.items():
        cells = []
        for c in BACKTEST_COLUMNS:
            mean, sd = values.get(f"{c}_mean"), values.get(f"{c}_std")
            cells.append(MISSING if _is_missing(mean) else f"{_metric(mean)} ± {_metric(sd)}")
        rows.append([html.escape(name), *cells])
    folds = "".join(f"<li>{html.escape(f.fold.describe())}</li>" for f in backtest.folds)
    return (f"<h2>Backtest (mean ± sd over {len(backtest.folds)} folds)</h2>"
            + _table(["model", *BACKTEST_COLUMNS], rows) + f"<ul class=\"folds\">{folds}</ul>")


def _transitions_section(transitions: dict[str, dict]) -> str:
    rows = []
    for transition, models in transitions.items():
        for name, m in models.items():
            rows.append([html.escape(transition), html.escape(name), _count(m.get("rows")),
                         _count(m.get("positives")), _metric(m.get("roc_auc")), _metric(m.get("ece"))])
    return "<h2>Per transition</h2>" + _table(["transition", "model", "rows", "positives", "roc_auc", "ece"], rows)


def _targeting_sentence(table: pd.DataFrame, target: str) -> str:
    """One plain sentence reading the 10 % row (or the first row) of the targeting table."""
    if table.empty:
        return ""
    pick = table[table["top_percent"] == 10]
    row = (pick if len(pick) else table).iloc[0]
    outcome = TARGETS[target].outcome_words if target in TARGETS else "were positive"
    share = "" if _is_missing(row["recall"]) else f" ({row['recall']:.0%} of all who {outcome})"
    lift = "" if _is_missing(row["lift"]) else f", {row['lift']:.1f} times as many as the same number picked at random"
    return (f"Contacting the {_percent(row['top_percent'])} of customers with the highest scores "
            f"({_count(row['contacted'])} customers) would have reached {_count(row['positives_reached'])} "
            f"customers who {outcome}{share}{lift}; the model expected {_expected_count(row['expected_positives'])}.")


def _targeting_section(backtest: TargetBacktest) -> str:
    scores = backtest.latest.scores
    y, p = _labelled(scores, "p_funnelcast")
    table = targeting_table(y, p)
    columns = {
        "top_percent": ("contact top %", _percent),
        "contacted": ("customers contacted", _count),
        "expected_positives": ("expected positives reached", _expected_count),
        "positives_reached": ("positives reached", _count),
        "precision": ("precision", _metric),
        "recall": ("recall", _metric),
        "lift": ("lift", _metric),
    }
    return ("<h2>Targeting trade-off</h2>"
            f"<p>{html.escape(_targeting_sentence(table, backtest.target))}</p>"
            + _frame_table(table, columns))


def _deciles_section(backtest: TargetBacktest) -> str:
    y, p = _labelled(backtest.latest.scores, "p_funnelcast")
    columns = {
        "decile": ("decile", _count),
        "customers": ("customers", _count),
        "min_score": ("min score", _metric),
        "max_score": ("max score", _metric),
        "mean_predicted": ("mean predicted", _metric),
        "observed_rate": ("observed rate", _metric),
        "positives": ("positives", _count),
    }
    return ("<h2>Score deciles</h2><p class=\"note\">Decile 1 holds the highest scores; a calibrated model's "
            "mean predicted probability matches the observed rate in every decile.</p>"
            + _frame_table(decile_table(y, p), columns))


def _images_section(images: dict[str, Path]) -> str:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
    parts = []
    for caption, image in images.items():
        image = Path(image)
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        kind = mime.get(image.suffix.lower(), "image/png")
        parts.append(f'<figure><img src="data:{kind};base64,{data}" alt="{html.escape(caption)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "<h2>Plots</h2>" + "".join(parts) if parts else ""


def _data_section(data_summary: dict) -> str:
    rows = [[html.escape(str(k)), _value(v)] for k, v in data_summary.items()]
    return "<h2>Data</h2>" + _table(["item", "value"], rows, classes="data")


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
table.data td { text-align: left; vertical-align: top; }
code { white-space: pre-wrap; font-size: 0.9em; }
.decision { background: #eef6ee; border-left: 4px solid #3a3; padding: 0.5em 0.8em; }
.warnings { background: #fff6e5; border-left: 4px solid #e90; padding: 0.5em 0.8em 0.5em 2em; }
.note, .subtitle { color: #555; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _write_document(title: str, parts: list[str], path: Path) -> Path:
    """One self-contained HTML file of ``parts`` (inline CSS) at ``path``; returns the path."""
    document = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
                "<body>" + "\n".join(parts) + "</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


def write_report(backtest: TargetBacktest, path: Path, *, title: str, images: dict[str, Path], data_summary: dict,
                 decision: dict | None = None, transitions: dict[str, dict] | None = None) -> Path:
    """Write the self-contained HTML report of one target (inline CSS, images as data URIs) and return its path.

    ``decision`` holds the registry outcome (``alias``, ``version``, ``reason``); ``transitions`` maps a
    transition name (``convert:a->b``) to model name -> metrics on that stage's test rows.
    """
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="subtitle">{html.escape(backtest.target)}: {backtest.rows:,} labelled rows, '
             f"{backtest.positives:,} positives</p>"]
    if decision is not None:
        parts.append(_decision_html(decision))
    if backtest.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in backtest.warnings)
        parts.append(f'<ul class="warnings">{items}</ul>')
    parts.append(_model_section(backtest))
    parts.append(_metrics_section(backtest))
    parts.append(_backtest_section(backtest))
    if transitions:
        parts.append(_transitions_section(transitions))
    parts.append(_targeting_section(backtest))
    parts.append(_deciles_section(backtest))
    parts.append(_images_section(images))
    parts.append(_data_section(data_summary))
    return _write_document(title, parts, path)


# ---------------------------------------------------------------------------------------------
# The value target (training/value.py)



def plot_lorenz(scores: pd.DataFrame, path: Path) -> Path:
    """Share of the realised spend (y) captured by the top x of customers ranked by each model's
    prediction, beside the perfect ranking: the value model's gains chart."""
    fig = _figure(5.5, 4.2)
    ax = fig.add_subplot()
    y = scores["label"].to_numpy(dtype=float)
    share = np.arange(1, len(y) + 1) / max(len(y), 1)

    def curve(pred: np.ndarray) -> np.ndarray:
        order = np.lexsort((np.arange(len(pred)), -pred))
        return np.cumsum(y[order]) / y.sum() if y.sum() > 0 else np.zeros(len(y))

    for name, column in _model_columns(scores):
        ax.plot(share, curve(scores[column].to_numpy(dtype=float)), label=name, color=COLOURS.get(name))
    ax.plot(share, curve(y), label="perfect ranking", color="#999", linestyle=":")
    ax.plot([0, 1], [0, 1], color="#ccc", linestyle="--", label="random")
    ax.set_xlabel("share of customers, highest predicted value first")
    ax.set_ylabel("share of the spend they went on to make")
    ax.set_title("Value ranking (latest test cutoff)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _value_table(per_model: dict[str, dict[str, float]]) -> str:
    rows = [[html.escape(name)] + [_metric(m.get(c)) for c in VALUE_COLUMNS] for name, m in per_model.items()]
    return _table(["model", *VALUE_COLUMNS], rows)


def write_value_report(backtest, path: Path, *, title: str, images: dict[str, Path], data_summary: dict,
                       decision: dict | None = None, btyd: dict | None = None) -> Path:
    """The HTML report of the value target (:class:`~funnelcast.training.value.ValueBacktest`): how its
    horizon is reached, the latest fold's and every fold's metrics beside the baselines and, where
    fitted, the BTYD models (``btyd``: :func:`funnelcast.training.value_btyd.btyd_comparison`)."""
    refit = backtest.refit
    decay = ", ".join(f"{'pooled' if k == '-1' else _stage_name(backtest, int(k))} {float(v):.3f}"
                      for k, v in refit["decay"].items())
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="subtitle">value: {backtest.rows:,} labelled rows (buyers at a cutoff), {backtest.positives:,} '
             f"of them spent in the next {refit['label_days']} days</p>"]
    if decision is not None:
        parts.append(_decision_html(decision))
    if backtest.warnings:
        parts.append('<ul class="warnings">' + "".join(f"<li>{html.escape(w)}</li>" for w in backtest.warnings) + "</ul>")
    parts.append(
        "<h2>Model</h2>"
        f"<p>LightGBM with a Tweedie objective on each buyer's spend in the {refit['label_days']} days after a cutoff "
        f"({refit['rounds']} trees, refitted on {refit['rows']:,} rows of {refit['cutoffs']} cutoffs; quality estimate "
        f"{html.escape(backtest.kind)}). customer_value is the expected spend in the next {refit['horizon_days']} days: "
        f"the {refit['label_days']}-day prediction times 1 + ρ + … + ρ^(n−1), n = {refit['horizon_days']}/"
        f"{refit['label_days']}, where ρ is the spend of the following {refit['label_days']} days over the first's, "
        f"measured on {refit['decay_fit']['rows']:,} rows of the latest cutoffs where both are known: "
        f"{html.escape(decay)}.</p>")
    parts.append("<h2>Test metrics (latest fold)</h2>"
                 f"<p>{html.escape(backtest.latest.fold.describe())}. Spend in the {refit['label_days']} days after the "
                 "test cutoff. total_error is the signed error of the total; gini is normalised (1: perfect ranking); "
                 "top_k_share is the share of the realised spend the top k % by prediction made.</p>"
                 + _value_table(backtest.latest.metrics))
    fold_rows = []
    for f in backtest.folds:
        for name, m in f.metrics.items():
            fold_rows.append([html.escape(f"{f.fold.test:%Y-%m-%d}"), html.escape(name),
                              *[_metric(m.get(c)) for c in VALUE_COLUMNS]])
    parts.append(f"<h2>Backtest ({len(backtest.folds)} folds)</h2>" + _table(["test cutoff", "model", *VALUE_COLUMNS], fold_rows))
    if btyd:
        parts.append(_btyd_section(btyd))
    parts.append(_images_section(images))
    parts.append(_data_section(data_summary))
    return _write_document(title, parts, path)


def _stage_name(backtest, code: int) -> str:
    stages = backtest.model.metadata_.get("funnel_config", {}).get("stages", [])
    return stages[code]["name"] if 0 <= code < len(stages) else f"stage {code}"


def _btyd_section(btyd: dict) -> str:
    head = (f"<h2>BTYD baselines</h2><p>{html.escape(btyd['description'])}</p>")
    rows = [[html.escape(name)] + [_metric(m.get(c)) for c in VALUE_COLUMNS] for name, m in btyd["metrics"].items()]
    problems = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in btyd.get("errors", {}).items())
    return head + _table(["model", *VALUE_COLUMNS], rows) + (f'<ul class="warnings">{problems}</ul>' if problems else "")
