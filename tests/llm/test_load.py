"""Loading base models: HF directories, store URIs (cached), the default model's error path."""

from __future__ import annotations

from pathlib import Path

import llm_tiny
import pytest
import torch

from recexp.llm.errors import ModelLoadError
from recexp.llm.load import load_base, parse_dtype, plain_copy
from recexp.llm.paths import default_model_dir


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny tokenizer (loading is about files, not vocabularies; keeps these tests fast)."""
    return llm_tiny.tiny_tokenizer()


def test_load_hf_directory_in_requested_dtype(tmp_path: Path, tokenizer) -> None:
    llm_tiny.save_tiny_base(tmp_path / "base", tokenizer)
    model, tok = load_base(tmp_path / "base")
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert len(tok) == len(tokenizer) and tok.chat_template
    model16, _ = load_base(str(tmp_path / "base"), "bf16")
    assert next(model16.parameters()).dtype == torch.bfloat16
    ref = llm_tiny.tiny_llama(len(tokenizer))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-5)  # sdpa vs eager


def test_plain_copy_keeps_weights_and_drops_quantization_config(tokenizer) -> None:
    model = llm_tiny.tiny_llama(len(tokenizer))
    model.config.quantization_config = {"quant_method": "gguf"}
    copy = plain_copy(model)
    assert not hasattr(copy.config, "quantization_config")
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    assert torch.equal(copy(ids).logits, model(ids).logits)
    assert copy.get_output_embeddings().weight is copy.get_input_embeddings().weight  # still tied


@pytest.mark.s3
def test_load_from_object_store_is_cached(tmp_path: Path, tokenizer, s3_endpoint: str, monkeypatch) -> None:
    from recexp.store import open_fs

    monkeypatch.setenv("RECEXP_CACHE", str(tmp_path / "cache"))
    local = llm_tiny.save_tiny_base(tmp_path / "base", tokenizer)
    fs, _ = open_fs("s3://recexp/models/tiny", s3_endpoint)
    fs.put(str(local) + "/", "recexp/models/tiny/", recursive=True)
    model, tok = load_base("s3://recexp/models/tiny", endpoint_url=s3_endpoint)
    assert len(tok) == len(tokenizer)
    cached = list((tmp_path / "cache" / "models" / "remote").glob("*/tiny/config.json"))
    assert len(cached) == 1
    fs.rm("recexp/models/tiny", recursive=True)  # the second load needs only the cache
    load_base("s3://recexp/models/tiny", endpoint_url=s3_endpoint)


def test_missing_models_give_clear_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RECEXP_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="python -m recexp.llm.fetch_default"):
        default_model_dir()
    with pytest.raises(ModelLoadError, match="fetch_default"):
        load_base("default")
    with pytest.raises(ModelLoadError, match="not found"):
        load_base(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_base(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        parse_dtype("int3")


def test_fetch_default_is_idempotent_and_refuses_unpinned_files(tmp_path: Path, capsys) -> None:
    from recexp.llm import fetch_default
    from recexp.llm.paths import MARKER_FILE

    done = tmp_path / "done"
    done.mkdir()
    (done / MARKER_FILE).write_text('{"check": {"messages": [{"content": "q"}], "greedy_reply": "a"}}')
    assert fetch_default.fetch_default(done) == done  # nothing downloaded or converted
    assert fetch_default.main(["--dest", str(done)]) == 0 and "'q' -> 'a'" in capsys.readouterr().out
    fake = tmp_path / fetch_default.GGUF_NAME
    fake.write_bytes(b"GGUF not really")
    assert fetch_default.main(["--dest", str(tmp_path / "new"), "--gguf", str(fake)]) == 2
    assert "differs from the pinned" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_rewritten_remote_model_is_fetched_again(tmp_path: Path, tokenizer, s3_endpoint: str, monkeypatch) -> None:
    """The cache is keyed by the remote files' versions, not the URI alone (an align re-run with
    force=true rewrites its export under the same URL)."""
    from recexp.store import open_fs

    monkeypatch.setenv("RECEXP_CACHE", str(tmp_path / "cache"))
    fs, _ = open_fs("s3://recexp/models/rewritten", s3_endpoint)
    for seed in (0, 1):
        local = llm_tiny.save_tiny_base(tmp_path / f"base{seed}", tokenizer, seed=seed)
        fs.put(str(local) + "/", "recexp/models/rewritten/", recursive=True)
        model, _ = load_base("s3://recexp/models/rewritten", endpoint_url=s3_endpoint)
        want = llm_tiny.tiny_llama(len(tokenizer), seed=seed).state_dict()
        assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items() if k in want)
    assert len(list((tmp_path / "cache" / "models" / "remote").glob("*/rewritten/config.json"))) == 2
