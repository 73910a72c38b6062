"""The bundled example: a folder of JPEG images, decoded and augmented, and a training step.

``make demo`` profiles it. The images are generated on first use (into ``.cache/`` beside
this file, or ``$LOADTUNE_EXAMPLE_DIR``), so nothing is downloaded.

Targets in this file:
    examples/jpeg_pipeline.py:loader   a torch DataLoader as a user would write it
    examples/jpeg_pipeline.py:dataset  the Dataset alone
    examples/jpeg_pipeline.py:train_step   a small CPU training step (``--step``)
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

IMAGES = 256  # distinct files on disk
EPOCH = 4096  # samples per epoch (files are reused, as a small dataset's epochs would be)
SIZE = 160
CROP = 128


def image_dir() -> Path:
    """The folder of example JPEGs, made on first use."""
    folder = Path(os.environ.get("LOADTUNE_EXAMPLE_DIR", Path(__file__).parent / ".cache"))
    folder = folder / "jpegs"
    if len(list(folder.glob("*.jpg"))) < IMAGES:
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        gen = torch.Generator().manual_seed(0)
        for i in range(IMAGES):
            base = torch.rand(3, 1, 1, generator=gen)
            noise = torch.rand(3, SIZE, SIZE, generator=gen) * 0.5
            pixels = ((base + noise).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0)
            Image.fromarray(pixels.numpy()).save(folder / f"{i:04d}.jpg", quality=90)
    return folder


class JpegFolder(Dataset):
    """Decode a JPEG, random-crop and flip it, return a float tensor and a label."""

    def __init__(self, folder: Path) -> None:
        self.files = sorted(str(p) for p in folder.glob("*.jpg"))

    def __len__(self) -> int:
        return EPOCH

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[i % len(self.files)]) as im:
            img = im.convert("RGB")
        x, y = random.randint(0, SIZE - CROP), random.randint(0, SIZE - CROP)
        img = img.crop((x, y, x + CROP, y + CROP))
        if random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        tensor = pixels.view(CROP, CROP, 3).permute(2, 0, 1).float().div_(255)
        return tensor, i % 10


dataset = JpegFolder(image_dir())
loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=1)

_weights = torch.randn(3 * CROP * CROP // 64, 10)


def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """A small stand-in for a model step: pool, matmul, loss."""
    images, labels = batch
    features = torch.nn.functional.avg_pool2d(images, 8).flatten(1)
    logits = features @ _weights
    return float(torch.nn.functional.cross_entropy(logits, labels))
