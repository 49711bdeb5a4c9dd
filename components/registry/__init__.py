"""MLflow: the one module that talks to the tracking server and the model registry."""
