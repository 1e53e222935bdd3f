"""Names shared by the report tests and their conftest (a plain module: two test folders have a "conftest")."""

SEEDS_FAILED = "t05-sampler.sampling=tasb-seed=2"
ALPHA_FAILED = "t07-alpha=0.0-clusters.k=20-seed=1"
