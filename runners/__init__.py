"""Built-in runners. Installed as `tsbench.runners`; engines are imported only when a runner is built."""
