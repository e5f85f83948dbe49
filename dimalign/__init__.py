"""dimalign: see and steer machine unlearning in feature space."""

__version__ = "0.1.0"
