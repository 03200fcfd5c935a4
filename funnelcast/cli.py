"""The ``funnelcast`` command: a thin shell over features (and, later, training and serving).

Every subcommand takes ``--config FILE`` and, on bad input, exits non-zero with one paragraph that
says what was wrong and where — never a traceback.
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

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Funnel config YAML (default: the five-stage journey).")]
EventsOpt = Annotated[str, typer.Option("--events", help="Events: CSV, Parquet file or directory, or SQL URL with '#table'.")]
CustomersOpt = Annotated[Optional[str], typer.Option("--customers", help="Customers table (same source kinds as --events).")]
AsOfOpt = Annotated[
    Optional[str], typer.Option("--as-of", help="When the data was extracted (UTC); events at or after it are errors. Default: now.")
]


class UserError(Exception):
    """A problem with the user's input, reported as one paragraph."""


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn data and config problems into a one-paragraph message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from funnelcast.features.events import EventDataError
        from funnelcast.features.funnel import ConfigError
        from funnelcast.training.errors import TrackingError

        try:
            return fn(*args, **kwargs)
        except (EventDataError, ConfigError, UserError, ValueError, OSError, TrackingError) as exc:
            kind = "config" if isinstance(exc, ConfigError) else "tracking store" if isinstance(exc, TrackingError) else "input"
            err.print(f"[bold red]funnelcast {fn.__name__.replace('_cmd', '').replace('_', '-')}: bad {kind}.[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _config(path: Path | None):
    from funnelcast.features.funnel import load_config

    return load_config(path)


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


def _as_of(value: str | None):
    import pandas as pd

    from funnelcast.features.events import to_utc

    if value is None:
        return pd.Timestamp.now(tz="UTC")
    try:
        return to_utc(value)
    except (ValueError, TypeError):
        raise UserError(f"--as-of {value!r} is not a date or timestamp; use e.g. 2025-06-30 or 2025-06-30T12:00:00Z") from None


def _load(events: str, customers: str | None, cfg, as_of: str | None):
    from funnelcast.features.events import read_customers, read_events

    ev, summary = read_events(events, cfg, as_of=_as_of(as_of))
    cust = None
    if customers is not None:
        cust, _ = read_customers(customers, cfg)
    return ev, cust, summary


def _write(frame, path: str) -> str:
    """Write a table to .parquet or .csv (by extension)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() == ".csv":
        frame.to_csv(target, index=False)
    elif target.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(target, index=False)
    else:
        raise UserError(f"--out {path!r}: unknown file type {target.suffix!r}; use .parquet or .csv")
    return str(target)


def _print_summary(summary) -> None:
    for line in summary.lines():
        out.print(line, highlight=False)


@app.command("simulate")
@_friendly
def simulate_cmd(
    customers: Annotated[int, typer.Option("--customers", min=1, help="Number of customers.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same data.")] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("sim"),
    start: Annotated[str, typer.Option("--start", help="First day (UTC).")] = "2024-01-01",
    end: Annotated[str, typer.Option("--end", help="End day, exclusive (UTC).")] = "2026-01-01",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    truth: Annotated[bool, typer.Option("--truth/--no-truth", help="Compute exact true probabilities at each cutoff.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Simulate customer journeys: writes events, customers and truth (true probabilities)."""
    from funnelcast.features.simulate import simulate

    if fmt not in ("parquet", "csv"):
        raise UserError(f"--format {fmt!r}: use parquet or csv")
    cfg = _config(config)
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
    as_of: AsOfOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Validate events and report whether the data can support each target."""
    from funnelcast.features.readiness import assess

    cfg = _config(config)
    ev, cust, summary = _load(events, customers, cfg, as_of)
    report = assess(ev, cfg, customers=cust, summary=summary)
    if as_json:
        print(json.dumps({"validation": summary.as_dict(), "readiness": report.as_dict()}, indent=2, default=str))
        return
    _print_summary(summary)
    out.print(
        f"{report.customers:,} customers, {report.events:,} events, {report.history_days:.0f} days of history "
        f"({report.first_event} to {report.last_event}); {report.sparse_share:.1%} of customers have fewer than "
        f"{cfg.readiness.min_events_per_customer} events",
        highlight=False,
    )
    if report.never_seen:
        out.print(f"event types in the config never seen: {', '.join(report.never_seen)}", highlight=False)
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
        f"history of min_history_days + horizon ({m['history_days_conversion']} days for conversion, "
        f"{m['history_days_churn']} for churn)",
        highlight=False,
    )


@app.command("features")
@_friendly
def features_cmd(
    events: EventsOpt,
    cutoff: Annotated[str, typer.Option("--cutoff", help="Features use events strictly before this time (UTC).")],
    out_path: Annotated[str, typer.Option("--out", help="Output .parquet or .csv: one row per customer.")],
    customers: CustomersOpt = None,
    as_of: AsOfOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Build one behaviour vector per customer at a cutoff."""
    from funnelcast.features.behaviour import build_features
    from funnelcast.features.events import to_utc

    cfg = _config(config)
    try:
        cut = to_utc(cutoff)
    except (ValueError, TypeError):
        raise UserError(f"--cutoff {cutoff!r} is not a date or timestamp; use e.g. 2025-06-30") from None
    ev, cust, summary = _load(events, customers, cfg, as_of)
    _print_summary(summary)
    t0 = time.perf_counter()
    frame = build_features(ev, cust, cut, cfg)
    path = _write(frame, out_path)
    out.print(f"{len(frame):,} customers x {frame.shape[1] - 2} features at {cut} in {time.perf_counter() - t0:.2f} s -> {path}", highlight=False)


@app.command("training-set")
@_friendly
def training_set_cmd(
    events: EventsOpt,
    out_path: Annotated[str, typer.Option("--out", help="Output .parquet or .csv.")],
    customers: CustomersOpt = None,
    data_end: Annotated[Optional[str], typer.Option("--data-end", help="End of observation (default: just after the last event).")] = None,
    as_of: AsOfOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Build (customer, cutoff) rows with features and labels over the snapshot schedule."""
    cfg = _config(config)
    ev, cust, summary = _load(events, customers, cfg, as_of)
    _print_summary(summary)
    table = _training_set(ev, cust, cfg, data_end)
    path = _write(table, out_path)
    _print_training_summary(table, cfg)
    out.print(f"training set -> {path}", highlight=False)


def _training_set(ev, cust, cfg, data_end):
    from funnelcast.features.snapshots import build_training_set

    with _progress() as bar:
        task = bar.add_task("building training set (cutoffs)", total=None)
        return build_training_set(
            ev, cust, cfg, data_end=data_end, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )


def _print_training_summary(table, cfg) -> None:
    import pandas as pd

    stats = table.groupby("stage", observed=False).agg(
        rows=("customer_id", "size"),
        customers=("customer_id", "nunique"),
        convert_rows=("convert_label", "count"),
        convert_rate=("convert_label", lambda s: s.astype("Float64").mean()),
        churn_rows=("churn_label", "count"),
        churn_rate=("churn_label", lambda s: s.astype("Float64").mean()),
    )
    t = Table(title=f"training set: {len(table):,} rows, {table['customer_id'].nunique():,} customers, {table['cutoff'].nunique()} cutoffs")
    t.add_column("stage at cutoff")
    for col in ("rows", "customers", "convert rows", "convert rate", "churn rows", "churn rate"):
        t.add_column(col, justify="right")
    for stage, r in stats.iterrows():
        def rate(x):
            return "-" if pd.isna(x) else f"{x:.1%}"
        t.add_row(str(stage), f"{r.rows:,}", f"{r.customers:,}", f"{r.convert_rows:,}", rate(r.convert_rate), f"{r.churn_rows:,}", rate(r.churn_rate))
    out.print(t)


TrackingOpt = Annotated[
    Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a local SQLite store in --mlflow-dir).")
]
MlflowDirOpt = Annotated[
    Optional[Path], typer.Option("--mlflow-dir", help="Folder of the embedded MLflow store (SQLite + artifacts); default mlruns/ unless MLFLOW_TRACKING_URI is set.")
]


def _find_truth(events: str, truth: str | None):
    """The simulator's truth table: --truth, else truth.parquet (or .csv) beside a local events file or folder."""
    from funnelcast.features.events import read_table

    if truth is not None:
        if "://" not in truth and not Path(truth).exists():
            raise UserError(f"--truth {truth!r} does not exist")
        return read_table(truth)[0]
    if "://" in events:
        return None
    candidates = [Path(events).parent / f"truth.{ext}" for ext in ("parquet", "csv")]
    path = next((c for c in candidates if c.exists()), None)
    return None if path is None else read_table(path)[0]


def _train(table, cfg, *, truth, events, customers, tracking_uri, mlflow_dir, report_dir, force, tune):
    from funnelcast.training.train import train

    with _progress() as bar:
        task = bar.add_task("training", total=None)
        return train(
            table, cfg, truth=truth, events=events, customers=customers, tracking_uri=tracking_uri, home=mlflow_dir,
            report_dir=report_dir, force=force, tune_trials=tune,
            progress=lambda message: bar.update(task, description=message),
        )


def _print_training_result(result) -> None:
    def f(x, digits=3):
        return "-" if x is None else f"{x:.{digits}f}"

    has_oracle = any("oracle_roc_auc" in e for e in result.entries.values())
    t = Table(title="test metrics on the latest backtest fold (LightGBM, calibrated)")
    cols = ["target", "rows", "pos. rate", "ROC-AUC"] + (["oracle", "gap"] if has_oracle else []) + [
        "logistic", "recency/freq.", "PR-AUC", "ECE", "top-10% lift", "version"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("target", "version") else "right")
    for key, e in result.entries.items():
        if "skipped" in e:
            t.add_row(key, *["-"] * (len(cols) - 2), "skipped")
            continue
        rate = e["test_positives"] / e["test_rows"] if e["test_rows"] else float("nan")
        row = [key, f"{e['test_rows']:,}", f"{rate:.1%}", f(e["test_roc_auc"])]
        if has_oracle:
            row += [f(e.get("oracle_roc_auc")), f(e.get("gap_to_oracle_roc_auc"))]
        row += [f(e.get("logistic_test_roc_auc")), f(e.get("recency_frequency_test_roc_auc")), f(e["test_pr_auc"]),
                f(e["test_ece"]), f(e["test_top_decile_lift"], 2), f"v{e['model_version']} {e['alias']}"]
        t.add_row(*row)
    out.print(t)
    for target, tr in result.targets.items():
        b = tr.backtest.summary()["lightgbm"]
        out.print(
            f"{target}: {tr.model_name} version {tr.version} -> {tr.decision.alias} ({tr.decision.reason}); "
            f"backtest over {len(tr.backtest.folds)} folds: ROC-AUC {b['roc_auc_mean']:.3f} ± {b['roc_auc_std']:.3f}, "
            f"ECE {b['ece_mean']:.3f} ± {b['ece_std']:.3f}; report -> {tr.report}",
            highlight=False,
        )
    for w in result.warnings:
        out.print(f"[yellow]warning:[/] {w}", highlight=False)
    out.print(f"MLflow: {result.tracking_uri} (run {result.parent_run_id})", highlight=False)


@app.command("train")
@_friendly
def train_cmd(
    events: EventsOpt,
    customers: CustomersOpt = None,
    truth: Annotated[Optional[str], typer.Option("--truth", help="Simulator truth table (default: truth.parquet beside the events).")] = None,
    data_end: Annotated[Optional[str], typer.Option("--data-end", help="End of observation (default: just after the last event).")] = None,
    as_of: AsOfOpt = None,
    tune: Annotated[int, typer.Option("--tune", min=0, help="Optuna trials on the latest fold's validation cutoffs (0: no tuning).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Make the new models champions whatever the comparison says.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object keyed by target.")] = False,
    report_dir: Annotated[Path, typer.Option("--report-dir", help="Where the HTML reports and plots go.")] = Path("funnelcast-report"),
    tracking_uri: TrackingOpt = None,
    mlflow_dir: MlflowDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Backtest, calibrate and register conversion and churn models; print their metrics."""
    cfg = _config(config)
    ev, cust, summary = _load(events, customers, cfg, as_of)
    truth_frame = _find_truth(events, truth)
    if not as_json:
        _print_summary(summary)
    table = _training_set(ev, cust, cfg, data_end)
    result = _train(table, cfg, truth=truth_frame, events=ev, customers=cust, tracking_uri=tracking_uri,
                    mlflow_dir=mlflow_dir, report_dir=report_dir, force=force, tune=tune)
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
    from funnelcast.features.events import read_customers, read_events
    from funnelcast.features.readiness import assess
    from funnelcast.features.simulate import simulate

    cfg = _config(config)
    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"simulating {customers:,} customers", total=None)
        sim = simulate(customers, cfg, seed=seed, progress=lambda d, n: bar.update(task, completed=d, total=n))
    paths = sim.write(out_dir / "sim")
    out.print(f"[bold]1. simulated[/] {customers:,} customers, {len(sim.events):,} events -> {out_dir / 'sim'}", highlight=False)
    # Read back through the real contract, as a user's data would be.
    ev, summary = read_events(paths["events"], cfg, as_of=sim.end)
    cust, _ = read_customers(paths["customers"], cfg)
    out.print("[bold]2. validated[/]", highlight=False)
    _print_summary(summary)
    report = assess(ev, cfg, customers=cust, summary=summary, data_end=sim.end)
    out.print("[bold]3. readiness[/]", highlight=False)
    for t in report.targets:
        out.print(f"  {t.target}: {t.verdict} ({t.rows:,} labelled rows, {t.positives:,} positives)", highlight=False)
    table = _training_set(ev, cust, cfg, sim.end)
    path = _write(table, str(out_dir / "training_set.parquet"))
    out.print("[bold]4. training set[/]", highlight=False)
    _print_training_summary(table, cfg)
    out.print(f"training set -> {path}; truth (true probabilities) -> {paths['truth']}", highlight=False)
    out.print("[bold]5. trained, calibrated and registered[/] (oracle = the simulator's true probability given each "
              "customer's event history: the best a model of the log can score)", highlight=False)
    result = _train(table, cfg, truth=sim.truth, events=ev, customers=cust, tracking_uri=tracking_uri,
                    mlflow_dir=out_dir / "mlruns" if mlflow_dir is None else mlflow_dir,
                    report_dir=out_dir / "report", force=False, tune=0)
    _print_training_result(result)
    if result.tracking_uri.startswith("sqlite:///"):
        out.print(f"browse runs and the registry: mlflow ui --backend-store-uri {result.tracking_uri}", highlight=False)
    _demo_scores(out_dir, ev, cust, paths, sim.end, result.tracking_uri)
    out.print(f"done in {time.perf_counter() - t0:.0f} s", highlight=False)


def _demo_scores(out_dir: Path, ev, cust, paths: dict, as_of, uri: str) -> None:
    """The demo's last steps: batch scores and the outreach list from the champions, and how to serve them."""
    from funnelcast.serving.scoring import CustomerBase, Scorer, source_arrays
    from funnelcast.serving.sinks import write_table

    scorer = Scorer.from_registry(tracking_uri=uri)
    arrays = source_arrays(ev, cust, scorer.config)
    t = scorer.as_of_ns(as_of.isoformat())
    base = CustomerBase(scorer, arrays, cust, t, reasons=True, threads=_threads())
    scores = base.table
    report = write_table(scores, out_dir / "scores.parquet", what="scores")
    out.print(f"[bold]6. scored[/] every customer as of {as_of}: {report.line()}", highlight=False)
    ranked, _ = base.outreach(500)
    report = write_table(ranked, out_dir / "outreach.csv", what="outreach")
    out.print(f"[bold]7. outreach list[/]: {report.line()}", highlight=False)
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

def _scorer(config: Path | None, tracking_uri: str | None, mlflow_dir: Path | None):
    from funnelcast.serving.scoring import Scorer

    return Scorer.from_registry(_config(config) if config else None, tracking_uri=tracking_uri, home=mlflow_dir)


def _scoring_input(events: str, customers: str | None, scorer, as_of: str | None):
    """(event arrays, customers, as-of ns): events at or after ``as_of`` stay in the source but out of view, counted."""
    from funnelcast.features.events import read_customers, read_events
    from funnelcast.serving.scoring import ScoringError, source_arrays

    cfg = scorer.config
    try:
        t = scorer.as_of_ns(as_of)
    except ScoringError as exc:
        raise UserError(f"--as-of: {exc}") from None
    ev, summary = read_events(events, cfg)
    _print_summary(summary)
    later = int((ev["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64") >= t).sum())
    if later:
        out.print(f"  not visible at the as-of time (at or after it): {later:,} events", highlight=False)
    cust = read_customers(customers, cfg)[0] if customers is not None else None
    return source_arrays(ev, cust, cfg), cust, t


def _customer_base(events: str, customers: str | None, as_of: str | None, config: Path | None,
                   tracking_uri: str | None, mlflow_dir: Path | None, *, reasons: bool):
    """Every customer of the source scored by the champions at ``as_of`` (reasons for every row, or on demand)."""
    from funnelcast.serving.scoring import CustomerBase

    scorer = _scorer(config, tracking_uri, mlflow_dir)
    arrays, cust, t = _scoring_input(events, customers, scorer, as_of)
    with _progress() as bar:
        task = bar.add_task(f"scoring {arrays.n_customers:,} customers", total=arrays.n_customers)
        return CustomerBase(scorer, arrays, cust, t, reasons=reasons, threads=_threads(),
                            progress=lambda done, total: bar.update(task, completed=done))


def _threads() -> int:
    from funnelcast.training.model import training_threads

    return training_threads() or 0


def _sink(frame, destination: str, what: str, state_dir: Path | None) -> None:
    from funnelcast.serving.sinks import write_table

    headers = {}
    key = os.environ.get("FUNNELCAST_WEBHOOK_TOKEN", "").strip()
    if key and destination.startswith(("http://", "https://")):
        headers["Authorization"] = f"Bearer {key}"
    with _progress() as bar:
        task = bar.add_task(f"writing {what}", total=len(frame))
        report = write_table(frame, destination, what=what, state_dir=state_dir, headers=headers,
                             progress=lambda done, total: bar.update(task, completed=done))
    out.print(report.line(), highlight=False)


OutOpt = Annotated[str, typer.Option("--out", help="Parquet/CSV path, SQL URL with '#table', or an http(s) webhook URL.")]
StateOpt = Annotated[Optional[Path], typer.Option("--state-dir", help="Webhook delivery state, for resuming (default .funnelcast/webhook-state).")]
ScoreAsOfOpt = Annotated[Optional[str], typer.Option("--as-of", help="Score as of this time (UTC unless it has an offset); events at or after it are not seen. Default: now.")]


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
    tracking_uri: TrackingOpt = None,
    mlflow_dir: MlflowDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start the scoring service (BentoML): /score, /score_events, /outreach, /model_info."""
    from funnelcast.training.tracking import resolve_uri

    if not os.environ.get("FUNNELCAST_API_KEY", "").strip() and not insecure:
        raise UserError("FUNNELCAST_API_KEY is not set: every request must carry 'Authorization: Bearer <key>'. "
                        "Set it, or pass --insecure to serve without a key on a machine only you can reach")
    uri = resolve_uri(tracking_uri, mlflow_dir)[0]
    scorer = _scorer(config, uri, None)  # refuses to start, naming the store and model, without champions
    del scorer
    env = dict(os.environ, FUNNELCAST_EVENTS=events, MLFLOW_TRACKING_URI=uri, FUNNELCAST_INSECURE="1" if insecure else "0")
    for name, value in (("FUNNELCAST_CUSTOMERS", customers), ("FUNNELCAST_AS_OF", as_of),
                        ("FUNNELCAST_CONFIG", str(config.resolve()) if config else None)):
        if value is not None:
            env[name] = value
    env.setdefault("FUNNELCAST_THREADS", "1")
    out.print(f"serving on http://{host}:{port} (models from {uri}); API docs at http://{host}:{port}/docs.json", highlight=False)
    sys.stdout.flush()
    args = [sys.executable, "-m", "bentoml", "serve", "funnelcast.serving.service:Funnelcast", "--host", host, "--port", str(port)]
    os.execve(sys.executable, args, env)


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="funnelcast")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
