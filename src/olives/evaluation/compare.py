"""`olives compare`: one table of an experiment's MLflow runs, params against metrics.

By default the table shows the params whose values differ between the runs compared (what
tells them apart) and a few headline metrics. A requested metric or sort column that no run
has is an error that suggests the nearest existing name.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from olives.errors import InputError

DEFAULT_METRICS = ("best_val_macro_auroc", "test_macro_auroc", "test_macro_f1", "test_vip_phase1")


class CompareError(InputError, ValueError):
    """The experiment or a requested column does not exist."""


def compare_runs(
    tracking_uri: str,
    experiment: str,
    params: Sequence[str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    sort_by: str | None = None,
    ascending: bool = False,
) -> pd.DataFrame:
    """Finished runs of `experiment`, one row each, sorted by `sort_by` (best first).
    `params=None` picks the params whose values differ between the runs."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise CompareError(
            f"no MLflow experiment {experiment!r} at {tracking_uri}; experiments there: {names}"
        )
    runs = mlflow.search_runs(
        [found.experiment_id], filter_string="status = 'FINISHED'", output_format="pandas"
    )
    if not isinstance(runs, pd.DataFrame) or runs.empty:
        return pd.DataFrame(columns=["run_id", "run_name", *(params or ()), *metrics])
    params = differing_params(runs) if params is None else list(params)
    table = pd.DataFrame(
        {"run_id": runs["run_id"].str[:8], "run_name": runs.get("tags.mlflow.runName")}
    )
    for kind, names in (("params", params), ("metrics", metrics)):
        available = [c.removeprefix(f"{kind}.") for c in runs.columns if c.startswith(f"{kind}.")]
        for name in names:
            if name not in available:
                raise CompareError(_unknown(kind[:-1], name, available))
            table[name] = runs[f"{kind}.{name}"]
    sort_by = sort_by or (metrics[0] if metrics else None)
    if sort_by is not None:
        if sort_by not in table:
            raise CompareError(_unknown("--sort-by column", sort_by, list(table.columns)))
        table = table.sort_values(sort_by, ascending=ascending, na_position="last")
    return table.reset_index(drop=True)


def differing_params(runs: pd.DataFrame) -> list[str]:
    """Params with more than one value across the runs (missing counts as a value)."""
    columns = [c for c in runs.columns if c.startswith("params.")]
    return sorted(c.removeprefix("params.") for c in columns if runs[c].astype(str).nunique() > 1)


def _unknown(what: str, name: str, available: list[str]) -> str:
    near = difflib.get_close_matches(name, available, n=3)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    return f"no {what} {name!r} in these runs{hint}"


def write_tables(table: pd.DataFrame, out_dir: Path, stem: str = "compare") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    table.to_csv(csv, index=False)
    md.write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    return [csv, md]
