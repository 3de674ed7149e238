"""factorflow.dynamics."""
