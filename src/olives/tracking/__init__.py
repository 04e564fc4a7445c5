"""Tracking: MLflow runs, the model registry and its champion rule.

Names load on first use (`lazy_loader`), so importing one module of the package does not
import the others (nor their DVC dependencies)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "runs": [
            "Tracker",
            "TrackingUnavailableError",
            "check_reachable",
            "dvc_hash",
            "git_commit",
            "project_root",
            "resolve_tracking_uri",
        ],
    },
)
