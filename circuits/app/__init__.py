"""The application: nested run configs, loading models and dictionaries, the pipeline, the CLI."""
