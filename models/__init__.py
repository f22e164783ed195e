"""The model catalog shipped with edge-run; installed as the package ``edge_run.catalog``."""
