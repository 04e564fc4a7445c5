"""One module per DVC stage, named as the stage: `run(params) -> summary`.

Each module declares `PARAMS`, the dotted keys its results depend on (the stage's `params`
in dvc.yaml, checked by a test), writes its own outputs and mirrors them to MLflow.
"""
