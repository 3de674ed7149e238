"""factorflow.baselines."""
