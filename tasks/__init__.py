"""Built-in task plugins. Installed as `tsbench.tasks`; see README, "Adding a task"."""
