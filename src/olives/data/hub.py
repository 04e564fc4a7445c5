"""`data.source: huggingface`: rows streamed from the hub (`datasets.load_dataset`, streaming),
or from a local folder in the hub's layout; one quick probe first, so an unreachable hub fails
in a second with one line instead of a minute of retries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from olives.data.rows import OFFLINE_HINT, Row, SourceError
from olives.data.schema import Columns, check_schema

HUB_LOGGERS = ("datasets", "huggingface_hub")
PROBE_TIMEOUT_S = 10.0  # one request; a hub that answers at all answers well within this


def huggingface_rows(cfg: Any, cols: Columns) -> Iterator[Row]:
    """Stream rows of each split from the hub (or a local folder in the hub's layout).

    Streaming keeps memory bounded: the 15 GB config never sits in memory or in the
    `datasets` cache. Images stay encoded (`decode=False`): preprocess decodes them once.
    """
    import datasets

    one_handler_for_hub_logs()
    check_hub_reachable(cfg.repo_id, cfg.revision)
    for split in cfg.splits:
        try:
            stream = datasets.load_dataset(
                cfg.repo_id, cfg.config, split=split, revision=cfg.revision, streaming=True
            )
        except ConnectionError as exc:
            raise SourceError(
                f"Couldn't reach '{cfg.repo_id}' on the Hugging Face hub ({exc}). " + OFFLINE_HINT
            ) from exc
        except (FileNotFoundError, ValueError) as exc:
            raise SourceError(
                f"data.huggingface: cannot load {cfg.repo_id!r} config "
                f"{cfg.config!r} split {split!r}: {exc}"
            ) from exc
        where = f"{cfg.repo_id} [{cfg.config}/{split}]"
        check_schema(stream.features.arrow_schema, cols.features(), where, cols.ids)
        stream = stream.cast_column(cols.image, datasets.Image(decode=False))
        for i, row in enumerate(stream):
            yield split, row, f"{where} row {i}"


def one_handler_for_hub_logs() -> None:
    """`datasets` and `huggingface_hub` give their root loggers a stderr handler of their own
    and still propagate to the root logger: under the command line's handler each of their
    warnings was printed twice. Theirs go once the root logger has a handler."""
    if not logging.getLogger().handlers:
        return
    for name in HUB_LOGGERS:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            if type(handler) is logging.StreamHandler:
                library.removeHandler(handler)


def check_hub_reachable(repo_id: str, revision: str | None) -> None:
    """One request to the hub's API, without retries, before `load_dataset`: unreachable
    (offline, `HF_HUB_OFFLINE=1`, a closed `HF_ENDPOINT`), the library retried each file with
    back-off for 25-45 s and a dozen warnings before the same failure. Any answer from the hub
    (even an error: gated, unknown revision) lets `load_dataset` go on and report as before;
    a folder in the hub's layout is not probed."""
    if Path(repo_id).is_dir():
        return
    from huggingface_hub import HfApi, constants

    try:
        HfApi().dataset_info(repo_id, revision=revision, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # the HTTP client's errors have no common public base
        if not _unreachable(exc):
            return
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SourceError(
            f"Couldn't reach '{repo_id}' on the Hugging Face hub at {constants.ENDPOINT} "
            f"({reason}). " + OFFLINE_HINT
        ) from None


def _unreachable(exc: Exception) -> bool:
    """A connection that failed or timed out (offline mode included), not a hub's answer."""
    if isinstance(exc, (ConnectionError, TimeoutError)):  # OfflineModeIsEnabled among them
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectError", "TimeoutException", "Timeout"})
