"""factorflow.experiments."""
