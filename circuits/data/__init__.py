"""Tasks and their data: built-in tasks, schemas, task files, splits, attribution inputs."""
