"""mlops-assets: every artifact of a tabular classifier's lifecycle as a Dagster asset.

This package root imports nothing heavy (no Dagster) so the BentoML service stays slim.
"""

__version__ = "0.1.0"
