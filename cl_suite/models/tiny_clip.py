"""The project's tiny CLIP: an open_clip ``CLIP`` with a small config, pretrained by ``cl-suite pretrain tiny-clip``.

Why: no CLIP weights ship in any wheel (../shared/reference/environment.md §7), yet the clip-tiny scenarios need a
model that *knows* something before continual learning starts, so that zero-shot transfer and its loss mean
something. The weights are committed next to this file (``weights/tiny_clip.pt``, stored in float16 to stay small,
with its sha256 in ``weights/tiny_clip.pt.sha256``); the pretraining command regenerates them deterministically.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

WEIGHTS = Path(__file__).parent / "weights" / "tiny_clip.pt"
CONTEXT_LENGTH = 20
VOCAB_SIZE = 256  # >= 2 + the BPE tokens of the caption words (checked by SmallVocabTokenizer)
CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": VOCAB_SIZE, "width": 96, "heads": 3, "layers": 4,
                 "mlp_ratio": 2.0},
}  # fmt: skip
IMAGE_SIZE = CONFIG["vision_cfg"]["image_size"]


def build(seed: int = 0):
    """A randomly initialised tiny CLIP (the pretraining starting point)."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(**CONFIG)


class SmallVocabTokenizer:
    """open_clip's BPE tokenizer with its ids mapped onto a small vocabulary (the BPE tokens of the caption words,
    cl_suite.models.tiny_clip_data.caption_words); any other token becomes ``UNK``. Why: CLIP's 49,408-token
    embedding would be ~90% of the tiny model's parameters and of every optimizer step's cost."""

    PAD, UNK = 0, 1

    def __init__(self, context_length: int = CONTEXT_LENGTH) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        from cl_suite.models.tiny_clip_data import caption_words

        self.bpe = SimpleTokenizer(context_length=context_length)
        ids = {self.bpe.sot_token_id, self.bpe.eot_token_id}
        for word in caption_words():
            ids.update(self.bpe.encode(word))
        self.vocab = sorted(ids)
        if 2 + len(self.vocab) > VOCAB_SIZE:
            raise ValueError(f"caption words need {2 + len(self.vocab)} tokens but VOCAB_SIZE is {VOCAB_SIZE}")
        lookup = torch.full((len(self.bpe.encoder),), self.UNK, dtype=torch.long)
        lookup[torch.tensor(self.vocab)] = torch.arange(2, 2 + len(self.vocab))
        lookup[0] = self.PAD  # BPE id 0 ("!") only appears as open_clip's padding value in its output
        self.lookup = lookup

    def __len__(self) -> int:
        return 2 + len(self.vocab)

    def __call__(self, texts) -> torch.Tensor:
        return self.lookup[self.bpe(texts)]


def tokenizer() -> SmallVocabTokenizer:
    return SmallVocabTokenizer()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save(model: torch.nn.Module, path: Path = WEIGHTS) -> str:
    """Write the state dict in float16 and its sha256 file; returns the digest. The bytes go through a buffer because
    ``torch.save`` to a path names the zip archive after the file: the digest then depends only on the weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    digest = sha256(path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def load(path: Path | str = WEIGHTS, *, verify: bool = True):
    """The pretrained tiny CLIP in float32. Raises FileNotFoundError naming the command that makes the weights."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tiny CLIP weights not found at {path}; create them with `cl-suite pretrain tiny-clip`")
    if verify and path == WEIGHTS:
        expected = path.with_name(path.name + ".sha256").read_text().split()[0]
        if sha256(path) != expected:
            raise ValueError(f"{path} does not match its sha256 file; regenerate with `cl-suite pretrain tiny-clip`")
    model = build()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # OpenAI CLIP's


def to_tensor(images) -> torch.Tensor:
    """Float images (N, H, W, 3) or (N, H, W) in [0, 1] -> CLIP-normalised (N, 3, H, W) float32 tensors."""
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim == 3:
        x = x[..., None].expand(*x.shape, 3)
    x = x.permute(0, 3, 1, 2)
    if x.shape[-1] != IMAGE_SIZE or x.shape[-2] != IMAGE_SIZE:
        x = torch.nn.functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True,
                                            align_corners=False)  # fmt: skip
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((x.clamp(0, 1) - mean) / std).contiguous()
