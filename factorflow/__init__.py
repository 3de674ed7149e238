"""factorflow: implicit regularization of gradient descent on matrix and tensor factorizations."""

__version__ = "0.1.0"
