"""`olives compare`: one table of an experiment's MLflow runs, params against metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from olives.errors import InputError

DEFAULT_PARAMS = ("model.backbone", "model.fusion", "loss.name", "loss.gamma", "seed")
DEFAULT_METRICS = ("best_val_macro_auroc", "test_macro_auroc", "test_macro_f1", "test_vip_phase1")


class CompareError(InputError, ValueError):
    """The experiment or a requested column does not exist."""


def compare_runs(
    tracking_uri: str,
    experiment: str,
    params: Sequence[str] = DEFAULT_PARAMS,
    metrics: Sequence[str] = DEFAULT_METRICS,
    sort_by: str | None = None,
    ascending: bool = False,
) -> pd.DataFrame:
    """Finished runs of `experiment`, one row each, sorted by `sort_by` (best first)."""
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
        return pd.DataFrame(columns=["run_id", "run_name", *params, *metrics])
    table = pd.DataFrame(
        {"run_id": runs["run_id"].str[:8], "run_name": runs.get("tags.mlflow.runName")}
    )
    for kind, names in (("params", params), ("metrics", metrics)):
        for name in names:
            column = f"{kind}.{name}"
            table[name] = runs.get(column)
    sort_by = sort_by or (metrics[0] if metrics else None)
    if sort_by is not None:
        if sort_by not in table:
            raise CompareError(f"--sort-by {sort_by!r} is not one of the chosen columns")
        table = table.sort_values(sort_by, ascending=ascending, na_position="last")
    return table.reset_index(drop=True)


def write_tables(table: pd.DataFrame, out_dir: Path, stem: str = "compare") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    table.to_csv(csv, index=False)
    md.write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    return [csv, md]
