"""A tiny vision transformer and 20 digit tasks: the CLIP setting at CPU scale, offline.

scikit-learn's `load_digits` (1797 images, 8x8) is split once, seeded, into disjoint train /
calibration / test images. A base ViT is pretrained on the train images (digit classes),
then each expert gets its own task (digits under a transform, or a relabelling such as
parity) and its own head, fixed before fine-tuning as CLIP's zero-shot text heads are: a
class-prototype head, the base's mean feature of 5 train images per class (centred,
normalised), not fitted to the base's features. The base scores well below the experts with
these heads (as CLIP zero-shot does); each expert's encoder is fine-tuned under its frozen
head. Merging then combines encoders; every task keeps its head.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 4  # 8x8 images -> 4 patches of 4x4 (+ a class token): cheap enough for 2 CPU cores


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    """Image encoder: [B, 8, 8] -> [B, dim] (the class token after the last norm)."""

    def __init__(self, dim: int = 96, depth: int = 3, heads: int = 4, mlp: int = 192):
        super().__init__()
        patches = (8 // PATCH) ** 2
        self.embed = nn.Linear(PATCH * PATCH, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, patches + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        x = images.reshape(b, 8 // PATCH, PATCH, 8 // PATCH, PATCH).permute(0, 1, 3, 2, 4)
        x = self.embed(x.reshape(b, -1, PATCH * PATCH))
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 0])


# --- tasks: an image transform and a label map ---------------------------------------
def _noise(x: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)  # the same noise for the same image index
    return (x + 0.35 * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def _crop(x: torch.Tensor) -> torch.Tensor:
    inner = x[:, 1:7, 1:7].unsqueeze(1)
    return F.interpolate(inner, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x.unsqueeze(1), 3, stride=1, padding=1, count_include_pad=False)[:, 0]


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "rot90": lambda x: torch.rot90(x, 1, (1, 2)),
    "rot180": lambda x: torch.rot90(x, 2, (1, 2)),
    "rot270": lambda x: torch.rot90(x, 3, (1, 2)),
    "hflip": lambda x: torch.flip(x, (2,)),
    "vflip": lambda x: torch.flip(x, (1,)),
    "transpose": lambda x: x.transpose(1, 2),
    "invert": lambda x: 1.0 - x,
    "noise": _noise,
    "crop": _crop,
    "blur": _blur,
}
LOOPS = [1, 0, 0, 0, 1, 0, 1, 0, 2, 1]  # closed loops in the usual glyph of each digit
LABELS: dict[str, tuple[int, Callable[[torch.Tensor], torch.Tensor]]] = {
    "digit": (10, lambda y: y),
    "parity": (2, lambda y: y % 2),
    "ge5": (2, lambda y: (y >= 5).long()),
    "prime": (2, lambda y: ((y == 2) | (y == 3) | (y == 5) | (y == 7)).long()),
    "mod3": (3, lambda y: y % 3),
    "loops": (3, lambda y: torch.tensor(LOOPS)[y]),
}


@dataclass(frozen=True)
class Task:
    name: str
    transform: str
    labels: str

    @property
    def classes(self) -> int:
        return LABELS[self.labels][0]

    def apply(self, images: torch.Tensor, digits: torch.Tensor):
        return TRANSFORMS[self.transform](images), LABELS[self.labels][1](digits)


TASKS = [Task(t, t, "digit") for t in TRANSFORMS if t != "none"] + [
    Task("digit", "none", "digit"),
    Task("parity", "none", "parity"),
    Task("ge5", "none", "ge5"),
    Task("prime", "none", "prime"),
    Task("mod3", "none", "mod3"),
    Task("loops", "none", "loops"),
    Task("rot180_parity", "rot180", "parity"),
    Task("invert_mod3", "invert", "mod3"),
    Task("hflip_ge5", "hflip", "ge5"),
    Task("noise_prime", "noise", "prime"),
]
TASK = {t.name: t for t in TASKS}


def digits_splits(seed: int = 0, train: int = 1000, calib: int = 300):
    """{split: (images [N, 8, 8] in [0, 1], digits [N])}, disjoint and seeded."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32) / 16.0
    digits = torch.tensor(raw.target, dtype=torch.long)
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(seed))
    parts = {
        "train": order[:train],
        "calib": order[train : train + calib],
        "test": order[train + calib :],
    }
    return {name: (images[idx], digits[idx]) for name, idx in parts.items()}


def train(
    encoder: nn.Module, head: nn.Module, images, labels, steps: int, lr: float, seed: int,
    batch: int = 64, train_encoder: bool = True, train_head: bool = True,
) -> None:  # fmt: skip
    """Adam with a cosine schedule on shuffled mini-batches (seeded)."""
    params = (list(encoder.parameters()) if train_encoder else []) + (
        list(head.parameters()) if train_head else []
    )
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    encoder.train(train_encoder)
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(len(labels), (batch,), generator=gen)
        with torch.set_grad_enabled(train_encoder):
            features = encoder(images[idx])
        loss = F.cross_entropy(head(features), labels[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    encoder.eval()


@torch.no_grad()
def accuracy(encoder: nn.Module, head: nn.Module, images, labels) -> float:
    encoder.eval()
    return float((head(encoder(images)).argmax(-1) == labels).float().mean())


def pretrain(splits, seed: int = 0, steps: int = 800, **shape) -> TinyViT:
    """The base: digit classes on the train images (its head is dropped)."""
    torch.manual_seed(seed)
    encoder = TinyViT(**shape)
    head = nn.Linear(encoder.dim, 10)
    images, digits = splits["train"]
    train(encoder, head, images, digits, steps, 3e-3, seed)
    return encoder


SHOTS = 5  # images per class behind a prototype head
SCALE = 10.0  # logit scale of a prototype head (CLIP's temperature, at this feature scale)


@torch.no_grad()
def prototype_head(encoder: nn.Module, classes: int, images, labels, seed: int, shots=SHOTS):
    """A frozen linear head from class prototypes, as a zero-shot head: row c is the base's
    mean feature of `shots` seeded images of class c, centred on the mean feature of all the
    images and normalised, scaled so that a typical centred feature gives logits of ~SCALE."""
    gen = torch.Generator().manual_seed(seed)
    features = encoder.eval()(images)
    centre = features.mean(dim=0)
    rows = []
    for c in range(classes):
        members = (labels == c).nonzero()[:, 0]
        members = members[torch.randperm(len(members), generator=gen)[:shots]]
        row = features[members].mean(dim=0) - centre
        rows.append(row / row.norm())
    weight = torch.stack(rows) * (SCALE / (features - centre).norm(dim=1).median())
    head = nn.Linear(features.shape[1], classes)
    head.weight.copy_(weight)
    head.bias.copy_(-(weight @ centre))
    return head.requires_grad_(False)


def probe(encoder: nn.Module, classes: int, images, labels, seed: int, steps: int = 300):
    """A linear head fitted on the encoder's frozen features (full batch, Adam): zoo version
    1's heads, kept for benchmarks/vision/heads.py. Fitted to convergence on the base's
    features, it lets the base score close to the experts."""
    torch.manual_seed(seed)
    with torch.no_grad():
        features = encoder.eval()(images)
    head = nn.Linear(features.shape[1], classes)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(head(features), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return head.requires_grad_(False)


HEADS = {"prototype": prototype_head, "probe": probe}


def finetune(
    base: TinyViT, task: Task, splits, steps: int = 200, lr: float = 1e-3, seed: int = 0,
    head: str = "prototype",
):  # fmt: skip
    """(expert encoder state dict, frozen head): the base's head for the task (a prototype
    head by default), then the encoder fine-tuned under it on the task's train images."""
    import copy

    encoder = copy.deepcopy(base)
    images, labels = task.apply(*splits["train"])
    frozen = HEADS[head](encoder, task.classes, images, labels, seed)
    train(encoder, frozen, images, labels, steps, lr, seed + 1, batch=32, train_head=False)
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}, frozen
