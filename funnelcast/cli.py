"""The ``funnelcast`` command: a thin shell over :class:`funnelcast.Project`.

Each subcommand parses its options, calls one or a few :class:`~funnelcast.project.Project` methods
and prints what came back (tables, the validation summary, where files went). The job itself —
reading and validating sources, training sets, training, scoring, the outreach list — lives in the
library, so a notebook gets exactly what the command line does.

Every subcommand takes ``--config FILE``. The errors funnelcast raises on purpose (bad data, config,
source, store or destination: :class:`~funnelcast.features.errors.FunnelcastError`) exit with code 2
and one paragraph saying what was wrong and where; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from funnelcast.features.errors import FunnelcastError
from funnelcast.features.targets import TARGETS

app = typer.Typer(
    name="funnelcast",
    help="Predict next-stage conversion and churn for every customer from a journey event log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (a CI log, `| tee`) gets a wide console: rich's default 80 columns crush the metrics table.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)

TIME_HELP = "naive: the config's source_timezone, else UTC"
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Funnel config YAML (default: the five-stage journey).")]
EventsOpt = Annotated[str, typer.Option("--events", help="Events: CSV, Parquet file or directory, or SQL URL with '#table'.")]
CustomersOpt = Annotated[Optional[str], typer.Option("--customers", help="Customers table (same source kinds as --events).")]
AsOfOpt = Annotated[
    str, typer.Option("--as-of", help=f"When the data was extracted ({TIME_HELP}); events at or after it are errors.")
]


class UserError(FunnelcastError):
    """A problem with the command line's own options, reported as one paragraph."""


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report the errors funnelcast raises on purpose as one paragraph and exit code 2; a bug stays a bug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FunnelcastError as exc:
            command = fn.__name__.replace("_cmd", "").replace("_", "-")
            err.print(f"[bold red]funnelcast {command}: {exc.headline}.[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _extracted(as_of: str):
    """``--as-of`` of a command that reads data as extracted: ``now`` (the default) is the current time."""
    import pandas as pd

    return pd.Timestamp.now(tz="UTC") if as_of.strip().lower() == "now" else as_of


def _project(config: Path | None, tracking_uri: str | None = None, mlflow_dir: Path | None = None):
    from funnelcast.project import Project

    return Project(config, tracking_uri=tracking_uri, mlflow_dir=mlflow_dir)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _write(frame, destination: str, what: str) -> str:
    """Write a table where ``--out`` says (a file, a SQL table or a webhook); returns the sink's sentence."""
    from funnelcast.serving.sinks import write_table

    return write_table(frame, destination, what=what).line()


def _print_summary(summary) -> None:
    for line in summary.lines():
        out.print(line, highlight=False)


@app.command("simulate")
@_friendly
def simulate_cmd(
    customers: Annotated[int, typer.Option("--customers", min=1, help="Number of customers.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same data.")] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("sim"),
    start: Annotated[str, typer.Option("--start", help="First day (midnight UTC).")] = "2024-01-01",
    end: Annotated[str, typer.Option("--end", help="End day, exclusive (UTC).")] = "2026-01-01",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    truth: Annotated[bool, typer.Option("--truth/--no-truth", help="Compute exact true probabilities at each cutoff.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Simulate customer journeys: writes events, customers and truth (true probabilities)."""
    from funnelcast.features.simulate import simulate

    if fmt not in ("parquet", "csv"):
        raise UserError(f"--format {fmt!r}: use parquet or csv")
    cfg = _project(config).config
    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"simulating {customers:,} customers", total=None)
        sim = simulate(customers, cfg, start=start, end=end, seed=seed, truth=truth,
                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    paths = sim.write(out_dir, fmt=fmt)
    out.print(
        f"simulated {customers:,} customers, {len(sim.events):,} events, {len(sim.truth):,} truth rows "
        f"in {time.perf_counter() - t0:.1f} s -> {', '.join(str(p) for p in paths.values())}",
        highlight=False,
    )


@app.command("check")
@_friendly
def check_cmd(
    events: EventsOpt,
    customers: CustomersOpt = None,
    as_of: AsOfOpt = "now",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Validate events and report whether the data can support each target."""
    project = _project(config)
    cfg = project.config
    data = project.load(events, customers, as_of=_extracted(as_of))
    report = project.check(data)
    if as_json:
        print(json.dumps({"validation": data.summary.as_dict(), "readiness": report.as_dict()}, indent=2, default=str))
        return
    _print_summary(data.summary)
    out.print(
        f"{report.customers:,} customers, {report.events:,} events, {report.history_days:.0f} days of history "
        f"({report.first_event} to {report.last_event}); {report.sparse_share:.1%} of customers have fewer than "
        f"{cfg.readiness.min_events_per_customer} events",
        highlight=False,
    )
    if report.never_seen:
        out.print(f"event types in the config never seen: {', '.join(report.never_seen)}", highlight=False)
    if report.matched is not None:
        m = report.matched
        out.print(f"customers table: {m['of_them_with_events']:,} of its {m['customers_table_ids']:,} ids have events; "
                  f"{m['of_them_in_table']:,} of the {m['event_customer_ids']:,} customers in the events are in it",
                  highlight=False)
    for w in report.warnings:
        out.print(f"[yellow]warning:[/] {w}", highlight=False)
    table = Table(title="readiness per target")
    for col in ("target", "labelled rows", "positives", "verdict"):
        table.add_column(col)
    for t in report.targets:
        table.add_row(t.target, f"{t.rows:,}", f"{t.positives:,}", ("[green]" if t.ready else "[red]") + t.verdict)
    out.print(table)
    m = report.minimums
    out.print(
        f"minimums: {m['min_eligible_rows']:,} labelled rows and {m['min_positives']:,} positives and negatives per target; "
        "history of min_history_days + horizon ("
        + ", ".join(f"{m[f'history_days_{name}']} days for {name}" for name in TARGETS) + ")",
        highlight=False,
    )


@app.command("features")
@_friendly
def features_cmd(
    events: EventsOpt,
    cutoff: Annotated[str, typer.Option("--cutoff", help=f"Features use events strictly before this time ({TIME_HELP}).")],
    out_path: Annotated[str, typer.Option("--out", help="Output .parquet or .csv: one row per customer.")],
    customers: CustomersOpt = None,
    as_of: AsOfOpt = "now",
    config: ConfigOpt = None,
) -> None:
    """Build one behaviour vector per customer at a cutoff."""
    from funnelcast.features.snapshots import FRAME_EXTRAS
    from funnelcast.features.timestamps import stated_time

    project = _project(config)
    cut = stated_time(cutoff, project.config.source_timezone, "--cutoff")
    data = project.load(events, customers, as_of=_extracted(as_of))
    _print_summary(data.summary)
    t0 = time.perf_counter()
    frame = project.features(data, cut)
    line = _write(frame, out_path, "features")
    n_features = sum(c not in FRAME_EXTRAS for c in frame.columns)
    out.print(f"{len(frame):,} customers x {n_features} features at {cut} in {time.perf_counter() - t0:.2f} s. {line}",
              highlight=False)


@app.command("training-set")
@_friendly
def training_set_cmd(
    events: EventsOpt,
    out_path: Annotated[str, typer.Option("--out", help="Output .parquet or .csv.")],
    customers: CustomersOpt = None,
    data_end: Annotated[Optional[str], typer.Option("--data-end", help=f"End of observation, exclusive ({TIME_HELP}; default: just after the last event).")] = None,
    as_of: AsOfOpt = "now",
    config: ConfigOpt = None,
) -> None:
    """Build (customer, cutoff) rows with features and labels over the snapshot schedule."""
    project = _project(config)
    data = project.load(events, customers, as_of=_extracted(as_of))
    _print_summary(data.summary)
    training_set = _training_set(project, data, data_end)
    line = _write(training_set.frame, out_path, "training set")
    _print_training_summary(training_set.frame)
    out.print(f"training set: {line}", highlight=False)


def _training_set(project, data, data_end):
    with _progress() as bar:
        task = bar.add_task("building training set (cutoffs)", total=None)
        return project.training_set(data, data_end=data_end,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))


def _print_training_summary(table) -> None:
    import pandas as pd

    def rate(s):  # the share of labelled rows with a positive outcome (value: with spend)
        known = s.astype("Float64").dropna()
        return (known > 0).mean() if len(known) else float("nan")

    aggregations = {"rows": ("customer_id", "size"), "customers": ("customer_id", "nunique")}
    for name, target in TARGETS.items():
        aggregations[f"{name}_rows"] = (target.label, "count")
        aggregations[f"{name}_rate"] = (target.label, rate)
    stats = table.groupby("stage", observed=False).agg(**aggregations)
    t = Table(title=f"training set: {len(table):,} rows, {table['customer_id'].nunique():,} customers, {table['cutoff'].nunique()} cutoffs")
    t.add_column("stage at cutoff")
    for col in ("rows", "customers", *(f"{name} {what}" for name in TARGETS for what in ("rows", "rate"))):
        t.add_column(col, justify="right")
    for stage, r in stats.iterrows():
        cells = [f"{r['rows']:,}", f"{r['customers']:,}"]
        for name in TARGETS:
            cells += [f"{r[f'{name}_rows']:,}", "-" if pd.isna(r[f"{name}_rate"]) else f"{r[f'{name}_rate']:.1%}"]
        t.add_row(str(stage), *cells)
    out.print(t)


TrackingOpt = Annotated[
    Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a local SQLite store in --mlflow-dir).")
]
MlflowDirOpt = Annotated[
    Optional[Path], typer.Option("--mlflow-dir", help="Folder of the embedded MLflow store (SQLite + artifacts); default mlruns/ unless MLFLOW_TRACKING_URI is set.")
]


def _train(project, data, *, training_set=None, report_dir, force=False, tune=0):
    with _progress() as bar:
        task = bar.add_task("training", total=None)
        return project.train(data, training_set=training_set, report_dir=report_dir, force=force, tune=tune,
                             progress=lambda message: bar.update(task, description=message))


def _print_training_result(result) -> None:
    def f(x, digits=3):
        return "-" if x is None else f"{x:.{digits}f}"

    has_oracle = any("oracle_roc_auc" in e for e in result.entries.values())
    t = Table(title="test metrics on the latest backtest fold (the selected learner, calibrated)")
    cols = ["target", "rows", "pos. rate", "ROC-AUC"] + (["oracle", "gap"] if has_oracle else []) + [
        "logistic", "recency/freq.", "PR-AUC", "ECE", "top-10% lift", "version"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("target", "version") else "right")
    for key, e in result.entries.items():
        if "skipped" in e:
            t.add_row(key, *["-"] * (len(cols) - 2), "skipped")
            continue
        if "test_gini" in e:  # the value target: its own table below
            continue
        rate = e["test_positives"] / e["test_rows"] if e["test_rows"] else float("nan")
        row = [key, f"{e['test_rows']:,}", f"{rate:.1%}", f(e["test_roc_auc"])]
        if has_oracle:
            row += [f(e.get("oracle_roc_auc")), f(e.get("gap_to_oracle_roc_auc"))]
        row += [f(e.get("logistic_test_roc_auc")), f(e.get("recency_frequency_test_roc_auc")), f(e["test_pr_auc"]),
                f(e["test_ece"]), f(e["test_top_decile_lift"], 2), f"v{e['model_version']} {e['alias']}"]
        t.add_row(*row)
    out.print(t)
    value = result.entries.get("value", {})
    if "test_gini" in value:
        v = Table(title=f"value: spend in the {value['label_days']} days after the latest test cutoff, predicted vs realised")
        for c in ("model", "MAE", "RMSE", "total error", "Spearman", "Gini", "top-20% share"):
            v.add_column(c, justify="left" if c == "model" else "right")
        value_result = result.targets["value"]
        rows = dict(value_result.backtest.latest.metrics)
        rows.update({k: m for k, m in (value_result.btyd or {}).get("metrics", {}).items() if k != "funnelcast"})
        for name, m in rows.items():
            v.add_row(name, f(m["mae"], 1), f(m["rmse"], 1), f"{m['total_error']:+.1%}", f(m["spearman"]), f(m["gini"]),
                      f"{m['top_20pct_share']:.1%}")
        out.print(v)
    for target, tr in result.targets.items():
        if target == "value":
            r = tr.backtest.refit
            out.print(f"value: {tr.model_name} version {tr.version} -> {tr.decision.alias} ({tr.decision.reason}); "
                      f"Tweedie LightGBM on {r['label_days']}-day spend, carried to {r['horizon_days']} days by the "
                      f"measured spend decay {', '.join(f'{k}: {float(x):.2f}' for k, x in r['decay'].items())} "
                      f"(stage code: ρ; -1 pooled); {tr.backtest.kind} backtest over {len(tr.backtest.folds)} folds; "
                      f"report -> {tr.report}", highlight=False)
            continue
        b = tr.backtest.summary()["funnelcast"]
        out.print(
            f"{target}: {tr.model_name} version {tr.version} -> {tr.decision.alias} ({tr.decision.reason}); "
            f"{tr.backtest.learner} selected, refitted on {tr.backtest.refit['cutoffs']} labelled cutoffs; "
            f"{tr.backtest.kind} backtest over {len(tr.backtest.folds)} folds: ROC-AUC {b['roc_auc_mean']:.3f} ± "
            f"{b['roc_auc_std']:.3f}, ECE {b['ece_mean']:.3f} ± {b['ece_std']:.3f}; report -> {tr.report}",
            highlight=False,
        )
        if tr.backtest.model.horizon_map_ is not None:
            out.print(tr.backtest.model.horizon_map_.describe(target), highlight=False)
    for w in result.warnings:
        out.print(f"[yellow]warning:[/] {w}", highlight=False)
    out.print(f"MLflow: {result.tracking_uri} (run {result.parent_run_id})", highlight=False)


@app.command("train")
@_friendly
def train_cmd(
    events: EventsOpt,
    customers: CustomersOpt = None,
    truth: Annotated[Optional[str], typer.Option("--truth", help="Simulator truth table (default: truth.parquet beside the events).")] = None,
    data_end: Annotated[Optional[str], typer.Option("--data-end", help=f"End of observation, exclusive ({TIME_HELP}; default: just after the last event).")] = None,
    as_of: AsOfOpt = "now",
    tune: Annotated[int, typer.Option("--tune", min=0, help="Optuna trials on the latest fold's validation cutoffs (0: no tuning).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Make the new models champions whatever the comparison says.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object keyed by target.")] = False,
    report_dir: Annotated[Path, typer.Option("--report-dir", help="Where the HTML reports and plots go.")] = Path("funnelcast-report"),
    tracking_uri: TrackingOpt = None,
    mlflow_dir: MlflowDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Backtest, calibrate and register conversion and churn models; print their metrics."""
    project = _project(config, tracking_uri, mlflow_dir)
    data = project.load(events, customers, as_of=_extracted(as_of), truth=truth or "auto")
    if not as_json:
        _print_summary(data.summary)
    training_set = _training_set(project, data, data_end)
    result = _train(project, data, training_set=training_set, report_dir=report_dir, force=force, tune=tune)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    _print_training_result(result)


@app.command("demo")
@_friendly
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write everything.")] = Path("demo-output"),
    customers: Annotated[int, typer.Option("--customers", min=100)] = 20_000,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    tracking_uri: TrackingOpt = None,
    mlflow_dir: Annotated[Optional[Path], typer.Option("--mlflow-dir", help="Embedded MLflow store (default: OUT/mlruns).")] = None,
    config: ConfigOpt = None,
) -> None:
    """The main job on simulated data: simulate, validate, check readiness, build the training set,
    train and register conversion and churn models, and compare them with the oracle and baselines."""
    from funnelcast.features.simulate import simulate

    project = _project(config, tracking_uri, out_dir / "mlruns" if mlflow_dir is None and tracking_uri is None else mlflow_dir)
    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"simulating {customers:,} customers", total=None)
        sim = simulate(customers, project.config, seed=seed, progress=lambda d, n: bar.update(task, completed=d, total=n))
    paths = sim.write(out_dir / "sim")
    out.print(f"[bold]1. simulated[/] {customers:,} customers, {len(sim.events):,} events -> {out_dir / 'sim'}", highlight=False)
    # Read back through the real contract, as a user's data would be.
    data = project.load(paths["events"], paths["customers"], as_of=sim.end, truth=sim.truth)
    out.print("[bold]2. validated[/]", highlight=False)
    _print_summary(data.summary)
    report = project.check(data, data_end=sim.end)
    out.print("[bold]3. readiness[/]", highlight=False)
    for t in report.targets:
        out.print(f"  {t.target}: {t.verdict} ({t.rows:,} labelled rows, {t.positives:,} positives)", highlight=False)
    training_set = _training_set(project, data, sim.end)
    line = _write(training_set.frame, str(out_dir / "training_set.parquet"), "training set")
    out.print("[bold]4. training set[/]", highlight=False)
    _print_training_summary(training_set.frame)
    out.print(f"training set: {line} Truth (true probabilities) -> {paths['truth']}", highlight=False)
    out.print("[bold]5. trained, calibrated and registered[/] (oracle = the simulator's true probability given each "
              "customer's event history: the best a model of the log can score)", highlight=False)
    result = _train(project, data, training_set=training_set, report_dir=out_dir / "report")
    _print_training_result(result)
    if result.tracking_uri.startswith("sqlite:///"):
        out.print(f"browse runs and the registry: mlflow ui --backend-store-uri {result.tracking_uri}", highlight=False)
    _demo_scores(project, data, out_dir, paths, sim.end, result.tracking_uri)
    out.print(f"done in {time.perf_counter() - t0:.0f} s", highlight=False)


def _demo_scores(project, data, out_dir: Path, paths: dict, as_of, uri: str) -> None:
    """The demo's last steps: batch scores and the outreach list from the champions, and how to serve them."""
    base = project.customer_base(data, as_of=as_of, reasons=True)
    scores = base.table
    out.print(f"[bold]6. scored[/] every customer as of {as_of}: {_write(scores, str(out_dir / 'scores.parquet'), 'scores')}",
              highlight=False)
    ranked, _ = base.outreach(500)
    out.print(f"[bold]7. outreach list[/]: {_write(ranked, str(out_dir / 'outreach.csv'), 'outreach')}", highlight=False)
    _print_outreach(ranked)
    events = paths["events"].resolve()
    customers = paths["customers"].resolve()
    example = ranked["customer_id"].iloc[0] if len(ranked) else scores["customer_id"].iloc[0]
    out.print("[bold]8. serve the scores[/] to CRM systems:", highlight=False)
    out.print(f"  export FUNNELCAST_API_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')\n"
              f"  .venv/bin/funnelcast serve --events {events} --customers {customers} --as-of {as_of.isoformat()} "
              f"--tracking-uri {uri} --port 3000", highlight=False, soft_wrap=True)
    out.print(f"  curl -s -X POST http://127.0.0.1:3000/score -H \"Authorization: Bearer $FUNNELCAST_API_KEY\" "
              f"-H 'Content-Type: application/json' -d '{{\"customer_ids\": [\"{example}\"]}}'", highlight=False, soft_wrap=True)


# ---- scoring -------------------------------------------------------------------------------------

def _customer_base(events: str, customers: str | None, as_of: str | None, config: Path | None,
                   tracking_uri: str | None, mlflow_dir: Path | None, *, reasons: bool):
    """Every customer of the source scored by the champions at ``as_of`` (reasons for every row, or on demand)."""
    project = _project(config, tracking_uri, mlflow_dir)
    scorer = project.scorer()  # first: no champion, no reading of the source
    data = project.load(events, customers, config=scorer.config)
    _print_summary(data.summary)
    with _progress() as bar:
        task = bar.add_task("scoring customers", total=None)
        base = project.customer_base(data, as_of=as_of, reasons=reasons, scorer=scorer,
                                     progress=lambda done, total: bar.update(task, completed=done, total=total))
    if base.events_after_as_of:
        out.print(f"  not visible at the as-of time (at or after it): {base.events_after_as_of:,} events", highlight=False)
    return base


def _resumed_as_of(as_of: str | None, destination: str, what: str, state_dir: Path | None) -> str | None:
    """``--as-of``, else the instant of an unfinished webhook delivery to ``destination`` (a resume must
    score the same rows to send none twice), else None (now)."""
    from funnelcast.serving.sinks import pending_delivery

    if as_of is not None:
        return as_of
    pending = pending_delivery(destination, what, state_dir)
    if pending is not None:
        out.print(f"resuming the unfinished delivery of {what} scored as of {pending} (pass --as-of to choose)",
                  highlight=False)
    return pending


def _sink(frame, destination: str, what: str, state_dir: Path | None) -> None:
    from funnelcast.serving.sinks import write_table

    with _progress() as bar:
        task = bar.add_task(f"writing {what}", total=len(frame))
        report = write_table(frame, destination, what=what, state_dir=state_dir,
                             progress=lambda done, total: bar.update(task, completed=done))
    out.print(report.line(), highlight=False)


OutOpt = Annotated[str, typer.Option("--out", help="Parquet/CSV path, SQL URL with '#table', or an http(s) webhook URL.")]
StateOpt = Annotated[Optional[Path], typer.Option("--state-dir", help="Webhook delivery state, for resuming (default .funnelcast/webhook-state).")]
ScoreAsOfOpt = Annotated[Optional[str], typer.Option("--as-of", help=f"Score as of this time ({TIME_HELP}); events at or after it are not seen. Default: now.")]


def _print_outreach(ranked, n: int = 10) -> None:
    t = Table(title=f"outreach: top {min(n, len(ranked))} of {len(ranked):,} by value at risk (churn probability × 12-month spend)")
    for c in ("rank", "customer", "stage", "segment", "churn p", "tier", "value", "at risk", "why"):
        t.add_column(c, justify="right" if c in ("rank", "churn p", "value", "at risk") else "left")
    for row in ranked.head(n).itertuples():
        why = "; ".join(r for r in (row.reason_1, row.reason_2, row.reason_3) if isinstance(r, str))
        t.add_row(str(row.rank), str(row.customer_id), str(row.stage), str(getattr(row, "segment", "") or ""),
                  f"{row.churn_probability:.2f}", str(row.risk_tier), f"{row.customer_value:,.0f}", f"{row.value_at_risk:,.0f}", why)
    out.print(t)


@app.command("score")
@_friendly
def score_cmd(
    events: EventsOpt,
    out_path: OutOpt,
    customers: CustomersOpt = None,
    as_of: ScoreAsOfOpt = None,
    state_dir: StateOpt = None,
    tracking_uri: TrackingOpt = None,
    mlflow_dir: MlflowDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Score every customer with the champion models and write a table a CRM can import."""
    as_of = _resumed_as_of(as_of, out_path, "scores", state_dir)
    table = _customer_base(events, customers, as_of, config, tracking_uri, mlflow_dir, reasons=True).table
    counts = table["status"].value_counts().to_dict()
    tiers = table["risk_tier"].value_counts().to_dict()
    out.print(f"scored {len(table):,} customers as of {table['as_of'].iloc[0] if len(table) else '-'}: "
              + ", ".join(f"{v:,} {k}" for k, v in counts.items())
              + "; risk tiers: " + ", ".join(f"{v:,} {k}" for k, v in tiers.items()), highlight=False)
    _sink(table, out_path, "scores", state_dir)


@app.command("outreach")
@_friendly
def outreach_cmd(
    events: EventsOpt,
    out_path: OutOpt,
    top: Annotated[int, typer.Option("--top", min=1, help="How many customers to list.")] = 500,
    stage: Annotated[Optional[str], typer.Option("--stage", help="Only customers at this stage.")] = None,
    segment: Annotated[Optional[str], typer.Option("--segment", help="Only customers of this segment (customers table).")] = None,
    customers: CustomersOpt = None,
    as_of: ScoreAsOfOpt = None,
    state_dir: StateOpt = None,
    tracking_uri: TrackingOpt = None,
    mlflow_dir: MlflowDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The customers to contact first, by expected value at risk, with reasons; written like scores."""
    as_of = _resumed_as_of(as_of, out_path, "outreach", state_dir)
    base = _customer_base(events, customers, as_of, config, tracking_uri, mlflow_dir, reasons=False)
    ranked, _ = base.outreach(top, stage, segment)
    _print_outreach(ranked)
    _sink(ranked, out_path, "outreach", state_dir)


@app.command("serve")
@_friendly
def serve_cmd(
    events: EventsOpt,
    customers: CustomersOpt = None,
    as_of: ScoreAsOfOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 3000,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve without an API key (local use only).")] = False,
    insecure_remote: Annotated[bool, typer.Option("--allow-insecure-remote", help="Allow --insecure on a --host other machines can reach.")] = False,
    tracking_uri: TrackingOpt = None,
    mlflow_dir: MlflowDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start the scoring service (BentoML): /score, /score_events, /outreach, /model_info."""
    from funnelcast.features.events import redact_url
    from funnelcast.serving.scoring import iso_utc
    from funnelcast.training.tracking import resolve_uri

    if not os.environ.get("FUNNELCAST_API_KEY", "").strip() and not insecure:
        raise UserError("FUNNELCAST_API_KEY is not set: every request must carry 'Authorization: Bearer <key>'. "
                        "Set it, or pass --insecure to serve without a key on a machine only you can reach")
    if insecure and not _loopback(host) and not insecure_remote:
        raise UserError(f"--insecure on --host {host}, which other machines can reach: anyone there could read every "
                        "customer's scores. Set FUNNELCAST_API_KEY, serve on 127.0.0.1, or pass --allow-insecure-remote "
                        "as well to say that this is meant")
    uri = resolve_uri(tracking_uri, mlflow_dir, create=False)[0]
    project = _project(config, uri)
    scorer = project.scorer()  # refuses to start, naming the store and model, without champions
    # The sources are read and validated here, before the server starts: a bad one is a paragraph and exit 2,
    # not a worker that BentoML restarts forever. Every worker (and a restarted one) serves exactly this
    # population: the same as-of instant and the same rows, checked by their SHA-256.
    data = project.load(events, customers, config=scorer.config)
    _print_summary(data.summary)
    pinned = iso_utc(scorer.as_of_ns(as_of))
    env = dict(os.environ, FUNNELCAST_EVENTS=events, MLFLOW_TRACKING_URI=uri, FUNNELCAST_INSECURE="1" if insecure else "0",
               FUNNELCAST_AS_OF=pinned, FUNNELCAST_SOURCE_SHA256=data.fingerprint(), FUNNELCAST_CWD=os.getcwd())
    for name, value in (("FUNNELCAST_CUSTOMERS", customers), ("FUNNELCAST_CONFIG", str(config.resolve()) if config else None)):
        if value is not None:
            env[name] = value
    env.setdefault("FUNNELCAST_THREADS", "1")
    del data
    out.print(f"serving on http://{host}:{port} (models from {redact_url(uri)}, population as of {pinned}); "
              f"API docs at http://{host}:{port}/docs.json", highlight=False)
    sys.stdout.flush()
    # BentoML puts its --working-dir, and `python -m` the current directory, first on sys.path before it
    # imports the service: both are a fresh empty private folder, never the caller's directory, so nothing
    # there (a 'funnelcast' or 'serving' folder) can stand in for the installed service. Relative sources
    # stay relative to the caller's directory (FUNNELCAST_CWD).
    import tempfile

    root = tempfile.mkdtemp(prefix="funnelcast-serve-")
    os.chdir(root)
    args = [sys.executable, "-m", "bentoml", "serve", "funnelcast.serving.service:Funnelcast", "--working-dir", root,
            "--host", host, "--port", str(port)]
    os.execve(sys.executable, args, env)


def _loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    """Run the ``funnelcast`` command with ``argv`` (default: the process's arguments)."""
    # MLflow draws a progress bar for every artifact it downloads (a champion model to compare with):
    # noise between funnelcast's own lines. A user who wants them sets the variable to true.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app(args=argv, prog_name="funnelcast")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
