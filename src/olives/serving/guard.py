"""Guards in front of MLflow's scoring server that our model installs when it loads: MLflow
answers some bad bodies with a plain-text 500 before the model sees them."""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

DEEP_JSON = "the JSON body is nested too deeply; send a flat table in 'dataframe_split'"


def refuse_deep_json() -> None:
    """Have MLflow's scoring server answer JSON nested past the recursion limit with a JSON 400
    (`DEEP_JSON`), not a plain-text 500, by wrapping its body parser in this process. The
    parser is private to MLflow: if a release renames it, nothing is wrapped and the log says
    so (a proxy's depth cap then does the job)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    try:
        from mlflow.pyfunc import scoring_server
    except ImportError:  # no scoring server in this install: nothing to guard
        return
    parse = getattr(scoring_server, "_decode_json_input", None)
    if parse is None or getattr(parse, "refuses_deep_json", False):
        if parse is None:
            log.warning("cannot guard MLflow's JSON parser: JSON nested too deeply gets a 500")
        return

    @functools.wraps(parse)
    def guarded(json_input: Any) -> Any:
        try:
            return parse(json_input)
        except RecursionError:
            raise MlflowException(DEEP_JSON, error_code=BAD_REQUEST) from None

    guarded.refuses_deep_json = True  # type: ignore[attr-defined]
    scoring_server._decode_json_input = guarded
