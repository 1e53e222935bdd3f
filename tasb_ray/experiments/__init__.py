"""Ray Tune sweeps of TAS-Balanced runs (seeds, alpha, cluster counts) tracked in MLflow.

``config`` (the sweep YAML), ``grid`` (trials and configuration groups), ``trial`` (the Tune function
trainable), ``tracking`` (MLflow from the driver), ``robustness`` (statistics across seeds, paired tests),
``shipping`` (shared stage files to worker nodes), ``sweep`` (the driver), ``main`` (the entry points).
"""
