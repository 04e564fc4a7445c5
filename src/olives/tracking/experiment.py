"""The experiment as the MLflow UI shows it: a model-training experiment whose runs table shows
the test metrics.

MLflow 3.17's UI opens an experiment as a GenAI app (overview, traces, token usage) unless told
otherwise, and its runs table shows no metric column until a user picks one. What the project
controls, written once into the experiment's tags (`tag_experiment`, idempotent):

- `mlflow.experimentKind = custom_model_development`: the kind MLflow 3.2-3.16's UI reads to open
  the runs table (3.17 decides by the sidebar's "GenAI / Model training" switch instead, which a
  link sets with `?workflowType=machine_learning`: `olives.tracking.ui.runs_url`);
- a saved view `mlflow.sharedViewState.<VIEW>` (what the UI's "Save view" writes): the runs table
  with the test metrics as columns, opened by `?viewStateShareKey=<VIEW>` and listed among the
  experiment's saved views.
"""

from __future__ import annotations

import json
import time
from typing import Any

KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
VIEW = "olives-test-metrics"  # the saved view's key (in the URL) and tag suffix
VIEW_TAG = f"mlflow.sharedViewState.{VIEW}"
VIEW_NAME = "Test metrics"
METRIC_COLUMNS = ("test_macro_auroc", "test_macro_f1", "best_val_macro_auroc", "test_vip_phase1")
WORKFLOW = "machine_learning"  # MLflow 3.17's `workflowType` of a model-training experiment


def view_state() -> dict[str, Any]:
    """The runs table's columns as the UI stores them (`metrics.\\`name\\``); everything else
    keeps the UI's defaults."""
    columns = [f"metrics.`{name}`" for name in METRIC_COLUMNS]
    return {"selectedColumns": [*columns, "attributes.`Models`"]}


def view_tag_value(now_ms: int | None = None) -> str:
    """The saved view's envelope: name, times and the state as JSON text (not compressed)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    state = json.dumps(view_state())
    return json.dumps({"name": VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms, "state": state})


def tag_experiment(client: Any, experiment: Any) -> None:
    """Give `experiment` the kind and the saved view it lacks; a tag already there (a user may
    have changed the view) is left alone."""
    tags = experiment.tags or {}
    if KIND_TAG not in tags:
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
    if VIEW_TAG not in tags:
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG, view_tag_value())


def prepare(client: Any, name: str) -> str:
    """The id of experiment `name`, created when missing, with its UI tags."""
    found = client.get_experiment_by_name(name)
    if found is None:
        client.create_experiment(name)
        found = client.get_experiment_by_name(name)
    tag_experiment(client, found)
    return str(found.experiment_id)
