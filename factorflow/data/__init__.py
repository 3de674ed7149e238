"""factorflow.data."""
