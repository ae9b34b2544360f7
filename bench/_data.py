"""Data for the convergence benchmark, all from packages already installed (no network).

Text: the English prose of Python's ``pydoc_data.topics`` (about 465 k characters), split by topic into training
and held-out parts (every 5th topic is held out), so the held-out loss measures prose the model never trained on.
Images: scikit-learn's 8 x 8 digits, upscaled. Every random choice comes from a generator seeded by the caller,
so every method of a family sees the same batches, masks and held-out set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

HELD_OUT_EVERY = 5


def topic_texts() -> tuple[str, str]:
    """(training text, held-out text) from pydoc's topics."""
    from pydoc_data.topics import topics

    texts = list(topics.values())
    train = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    held = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return "\n".join(train), "\n".join(held)


def token_blocks(tokenizer, text: str, length: int, prefix: list[int], suffix: list[int]) -> torch.Tensor:
    """Consecutive blocks of ``length`` tokens (``prefix`` and ``suffix`` included), as a ``[n, length]`` tensor."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    body = length - len(prefix) - len(suffix)
    n = len(ids) // body
    blocks = [prefix + ids[i * body:(i + 1) * body] + suffix for i in range(n)]
    return torch.tensor(blocks, dtype=torch.long)


@dataclass
class MaskedBatch:
    input_ids: torch.Tensor
    positions: torch.Tensor  # [k, 2] (row, column) of the masked positions
    labels: torch.Tensor  # [k] original tokens there


def mask_tokens(blocks: torch.Tensor, generator: torch.Generator, mask_id: int, vocab: int, special: set[int],
                rate: float = 0.15) -> MaskedBatch:
    """BERT's masking: ``rate`` of the ordinary tokens are predicted; 80% become [MASK], 10% a random token."""
    ids = blocks.clone()
    ordinary = torch.ones_like(ids, dtype=torch.bool)
    for token in special:
        ordinary &= ids != token
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & ordinary
    roll = torch.rand(ids.shape, generator=generator)
    random_tokens = torch.randint(vocab, ids.shape, generator=generator)
    labels = ids[chosen]
    ids[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[swap] = random_tokens[swap]
    return MaskedBatch(ids, chosen.nonzero(), labels)


def batches(n_items: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless random index batches (reshuffled each epoch)."""
    while True:
        order = torch.randperm(n_items, generator=generator)
        for i in range(0, n_items - batch + 1, batch):
            yield order[i:i + batch]


# DINOv2's (ImageNet's) input normalization. Pixels in [0, 1] instead are ~4x weaker than the inputs the source's
# patch kernel was trained on, and its position embeddings then drown them: before the first block only 3.6% of the
# embedded tokens' energy differed between images (34% normalized), and every transferred init trained slower
# than random init. Every method sees the same normalized pixels, so the comparison stays fair.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def digits(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits upscaled to ``size`` x ``size`` RGB, normalized like the source's training images
    (ImageNet mean and std): (train x, train y, held x, held y); a fixed 20% of the images (by the seed's shuffle)
    is held out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    x = ((x - torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGE_STD).view(1, 3, 1, 1)).contiguous()
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    held = order[: len(y) // 5]
    train = order[len(y) // 5:]
    return x[train], y[train], x[held], y[held]


# scikit-image's bundled photographs that zoo's image calibration does not use (zoo.calibration._photos takes
# astronaut, coffee, chelsea, rocket, camera, coins, moon, page, text and clock), one class each: textures,
# microscopy, astronomy, a fundus photograph and an indoor scene.
PHOTO_CLASSES = ("brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "retina", "cell",
                 "stereo_motorcycle")
TILES = 4  # every photograph is cut into TILES x TILES tiles; about one in five, spread over it, is held out


def held_out_tile(row: int, col: int) -> bool:
    return (row + 2 * col) % 5 == 0


def crop_boxes(height: int, width: int, n: int, held: bool, gen: torch.Generator) -> list[tuple[int, int, int]]:
    """``n`` random square crops (top, left, side), each inside one tile of the held-out or the training split,
    half a tile to a whole one wide."""
    th, tw = height // TILES, width // TILES
    tiles = [(r, c) for r in range(TILES) for c in range(TILES) if held_out_tile(r, c) == held]
    boxes = []
    for _ in range(n):
        r, c = tiles[int(torch.randint(len(tiles), (), generator=gen))]
        side = int(min(th, tw) * (0.5 + 0.5 * torch.rand((), generator=gen).item()))
        top = r * th + int(torch.randint(0, th - side + 1, (), generator=gen))
        left = c * tw + int(torch.randint(0, tw - side + 1, (), generator=gen))
        boxes.append((top, left, side))
    return boxes


def photo_crops(size: int, seed: int, n_train: int = 2400, n_held: int = 360
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which photograph a crop comes from: crops inside one tile (:func:`crop_boxes`) resized to ``size``,
    normalized like ImageNet, the classes in turn. The held-out crops come from tiles no training crop touches,
    so the held-out loss measures regions never trained on."""
    import skimage.data as data

    from zoo.calibration import rgb

    gen = torch.Generator().manual_seed(seed)
    photos = []
    for name in PHOTO_CLASSES:
        img = getattr(data, name)()
        photos.append(rgb(img[0] if isinstance(img, tuple) else img))  # stereo_motorcycle: (left, right, disparity)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)

    def crops(n: int, held: bool) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        per_class = [crop_boxes(*img.shape[1:], -(-n // len(photos)), held, gen) for img in photos]
        for i in range(n):
            label = i % len(photos)
            top, left, side = per_class[label][i // len(photos)]
            crop = photos[label][:, top:top + side, left:left + side].unsqueeze(0)
            crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                                   align_corners=False)[0]
            xs.append((crop - mean) / std)
            ys.append(label)
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)

    x, y = crops(n_train, held=False)
    hx, hy = crops(n_held, held=True)
    return x, y, hx, hy
