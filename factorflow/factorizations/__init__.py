"""factorflow.factorizations."""
