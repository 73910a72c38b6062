"""loadtune's own DataLoader; the underscored modules are its plumbing."""

from ._fetch import SampleFailure
from .dataloader import DataLoader

__all__ = ["DataLoader", "SampleFailure"]
