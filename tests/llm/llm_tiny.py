"""Tiny, offline building blocks for the LLM tests: tokenizer, Llama, recommender, task rows."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from recexp.llm.aligned import AlignedLM
from recexp.llm.connectors import Connectors
from recexp.llm.slots import SlotTokens, add_slot_tokens
from recexp.recommender.config import SASRecConfig
from recexp.recommender.sasrec import SASRec

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Here is a user's history of items. Which item will the recommender suggest next?",
    "The user likes Space Quest, Mario Kart and Zelda: Breath of the Wild.",
    "Will the user like the item? Answer Yes or No. Yes. No.",
    "Rank these candidate items by preference; most preferred first.",
    "system user assistant You are an assistant that explains a recommender system.",
    "The quick brown fox jumps over the lazy dog 0123456789 \"quoted\" titles; semicolons.",
]
N_ITEMS = 20
REC_DIM = 16


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (~300 tokens) trained on a few sentences, with a ChatML chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHATML
    return fast


def smollm_tokenizer() -> PreTrainedTokenizerBase | None:
    """The SmolLM2 tokenizer when the default model was fetched on this machine, else None
    (also None when ``RECEXP_TEST_TOKENIZER=tiny``)."""
    from transformers import AutoTokenizer

    from recexp.llm.paths import MARKER_FILE, default_model_path

    path = default_model_path()
    if os.environ.get("RECEXP_TEST_TOKENIZER") == "tiny" or not (path / MARKER_FILE).is_file():
        return None
    return AutoTokenizer.from_pretrained(path)


def tiny_llama(vocab_size: int, tie: bool = True, seed: int = 0) -> LlamaForCausalLM:
    """2 layers, hidden 64, 4 heads (2 kv heads: grouped-query attention), random init, fp32."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=tie, initializer_range=0.1,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config).eval()


def tiny_recommender(seed: int = 0) -> SASRec:
    """A random-init SASRec over ``N_ITEMS`` items, ``REC_DIM``-d, max_len 8."""
    torch.manual_seed(seed)
    return SASRec(SASRecConfig(n_items=N_ITEMS, d=REC_DIM, max_len=8, n_blocks=1, dropout=0.0)).eval()


def save_tiny_base(path: Path, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> Path:
    """A tiny Llama + tokenizer saved as an ordinary HF checkpoint directory."""
    tiny_llama(len(tokenizer), seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


SYSTEM = "You are an assistant that explains a recommender system."


def task_row(prompt: str, response: str, histories: list[list[int]] | None = None, items: list[int] | None = None) -> dict:
    """A task row as ``build-alignment-data`` writes it (system + user turn)."""
    return {
        "task": "t3", "form": "intention", "split": "train", "user_id": 0, "position": 3,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        "response": response, "history_ids": histories or [], "item_slot_ids": items or [], "meta": "{}",
    }


def interest_row(history: list[int], item: int) -> dict:
    """T3-style row with one ``<user>`` and one ``<item>`` slot; the answer depends on the item."""
    prompt = "Here is a user's history: <user>. Will the user like the item <item>? Answer Yes or No."
    return task_row(prompt, "Yes" if item % 2 == 0 else "No", [history], [item])


def varied_rows() -> list[dict]:
    """Rows of different lengths and slot layouts (none, users only, items only, both, several)."""
    return [
        interest_row([1, 2, 3], 4),
        task_row("Which item will the recommender suggest next?", "Mario Kart"),
        task_row("Rank these candidate items: <item>; <item>; <item>.", "Zelda; Space Quest; Mario Kart", items=[5, 6, 7]),
        task_row("The user <user> and the user <user>: same taste?", "Yes", histories=[[9], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]),
        interest_row([11, 12], 13),
    ]


def toy_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` interest rows over random histories and items (answer: item parity)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        history = torch.randint(0, N_ITEMS, (int(torch.randint(1, 8, (1,), generator=gen)),), generator=gen).tolist()
        rows.append(interest_row(history, int(torch.randint(0, N_ITEMS, (1,), generator=gen))))
    return rows


@dataclass
class Parts:
    """Everything an ``AlignedLM`` is made of."""

    base: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerBase
    slots: SlotTokens
    recommender: SASRec
    connectors: Connectors

    def aligned(self, mode: str) -> AlignedLM:
        return AlignedLM(self.base, self.recommender, self.connectors, self.slots, mode)

    def copy(self) -> Parts:
        """Independent modules with identical weights; the tokenizer is shared."""
        return Parts(
            copy.deepcopy(self.base), self.tokenizer, self.slots, copy.deepcopy(self.recommender),
            copy.deepcopy(self.connectors),
        )


def build_parts(tokenizer: PreTrainedTokenizerBase) -> Parts:
    """Tiny Llama + slot tokens (added to ``tokenizer``) + tiny SASRec + connectors, seeded."""
    base = tiny_llama(len(tokenizer))
    slots = add_slot_tokens(base, tokenizer, REC_DIM)
    torch.manual_seed(1)
    return Parts(base, tokenizer, slots, tiny_recommender(), Connectors(REC_DIM, base.config.hidden_size))
