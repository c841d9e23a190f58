"""tsbench: benchmark harness for LLM test-time scaling at matched compute."""

__version__ = "0.1.0"
