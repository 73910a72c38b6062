"""loadtune's own DataLoader; the underscored modules are its plumbing."""

from .dataloader import DataLoader

__all__ = ["DataLoader"]
