"""The static leaderboard site: `tsbench leaderboard build [results/] -o site/`."""

from tsbench.leaderboard.build import build_site

__all__ = ["build_site"]
