"""Guards in front of MLflow's scoring server that our model installs when it loads: MLflow
answers some bad bodies with a plain-text 500 before the model sees them."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DEEP_JSON = "the JSON body is nested too deeply; send a flat table in 'dataframe_split'"
BAD_TABLE = "the {kind} body is not a readable table; send JSON ('dataframe_split')"
GUARDED = "olives_guarded"  # marks a parser wrapped already (a model loaded twice)


def install_guards() -> None:
    """Wrap MLflow's scoring-server body parsers in this process so that a bad body gets a JSON
    400 with one line: JSON nested past the recursion limit (a plain-text 500 otherwise), and
    CSV or parquet that does not parse (a 400 whose `stack_trace` names the server's paths
    otherwise). The parsers are private to MLflow: one a release renames is left alone and the
    log says so (the proxy's caps then do the job, docs/serving.md)."""
    try:
        from mlflow.pyfunc import scoring_server
    except ImportError:  # no scoring server in this install: nothing to guard
        return
    for name, wrap in (
        ("_decode_json_input", refuse_deep_json),
        ("parse_csv_input", refuse_bad_table("CSV")),
        ("parse_parquet_input", refuse_bad_table("parquet")),
    ):
        parse = getattr(scoring_server, name, None)
        if parse is None:
            log.warning("cannot guard MLflow's %s: a bad body may get a 500 or a trace", name)
        elif not getattr(parse, GUARDED, False):
            guarded = functools.wraps(parse)(wrap(parse))
            setattr(guarded, GUARDED, True)
            setattr(scoring_server, name, guarded)


def refuse_deep_json(parse: Callable[..., Any]) -> Callable[..., Any]:
    """`parse`, with a RecursionError (JSON nested too deeply) as a JSON 400."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except RecursionError:
            raise bad_request(DEEP_JSON) from None

    return guarded


def refuse_bad_table(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper for the `kind` parser: its error, stack trace and all, as one line."""

    def wrap(parse: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return parse(*args, **kwargs)
            except Exception:  # MLflow's own 400, stack trace included, or anything else
                raise bad_request(BAD_TABLE.format(kind=kind)) from None

        return guarded

    return wrap


def bad_request(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    return MlflowException(message, error_code=BAD_REQUEST)
