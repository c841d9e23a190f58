"""Sweeps: a cross product of runs (cells), priced before they start and run by an executor
(one process, or Ray actors over engine replicas). docs/SCALE.md."""
