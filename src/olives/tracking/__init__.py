"""Tracking: MLflow runs, the model registry and its champion rule.

Names load on first use (`lazy_loader`), so importing one module of the package does not
import the others (nor their DVC dependencies)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "experiment": [
            "KIND",
            "KIND_TAG",
            "VIEW",
            "VIEW_TAG",
            "prepare",
            "tag_experiment",
            "view_state",
            "view_tag_value",
        ],
        "provenance": [
            "dvc_hash",
            "git_commit",
            "process_alive",
            "process_tag",
            "run_git",
            "work_tree",
        ],
        "registry": [
            "ModelIdentity",
            "SHA_TAG",
            "describe",
            "holder",
            "identify",
            "promote_file",
            "registered_version",
            "store_exists",
            "version_of",
        ],
        "runs": [
            "PROCESS_TAG",
            "Tracker",
            "TrackingUnavailableError",
            "check_reachable",
            "create_store",
            "project_root",
            "resolve_tracking_uri",
            "stays_words",
            "unique_name",
            "use_store",
        ],
        "ui": ["run_ui", "runs_url", "ui_command"],
    },
)
