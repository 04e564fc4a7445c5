"""The MLflow model as code (MLflow's "models from code"): logged by path and run when the
model loads, so the logged model holds no pickled object. See `olives.serving`."""

import mlflow.models

from olives.serving import OlivesModel

mlflow.models.set_model(OlivesModel())
