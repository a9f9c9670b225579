"""harness: measure what weight decay really does with your optimizer (Loshchilov & Hutter)."""

__version__ = "0.1.0"
