"""The MLflow model as code (MLflow's "models from code"): logged by path and run when the
model loads, so the logged model holds no pickled object. See `olives.serving.pyfunc`."""

import mlflow.models

from olives.serving import OlivesModel  # the public name, as models logged earlier import it

mlflow.models.set_model(OlivesModel())
