"""Deterministic stand-ins for a tokenizer and a language model's output.

Token counts only need to be stable and roughly proportional to text length; generated text only needs to be
deterministic (same prompt, same answer) so tests and health checks can compare it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

_WORDS = """
the of and to in is that for it as with was on be by this are from at or an have not which but all
were when we there can more one has been would their if will each about up out them time into only
other new some could these two may first then do any like my now over such our man me even most made
after also did many before must through back years where much your way well down should because just
those people how too little state good very make world still own see men work long get here between
both life being under never day same another know while last might us great old year off come since
against go came right used take three model token answer system value engine batch cache memory
serve request stream signal vector matrix layer weight kernel tensor graph shard queue latency river
mountain forest ocean garden window bridge lantern harbor meadow valley canyon island desert glacier
comet planet orbit beacon anchor compass harvest ember falcon willow cedar maple
"""
# Words the simulated model "generates"; each one is exactly one token for count_tokens.
VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(_WORDS.split()))


def count_tokens(text: str) -> int:
    """Words and punctuation marks, counted the same way every time."""
    return len(_TOKEN_RE.findall(text))


def render_chat(messages: Sequence[tuple[str, str]]) -> str:
    """A minimal chat template: the prompt text the simulated model 'reads' for (role, content) pairs."""
    parts = [f"<|{role}|>\n{content}\n" for role, content in messages]
    parts.append("<|assistant|>\n")
    return "".join(parts)


def generate_words(prompt_key: str, count: int, seed: int | None = None) -> list[str]:
    """`count` words derived from a hash of the prompt (and seed): the same request always gets the same text."""
    digest = hashlib.blake2b(f"{seed}|{prompt_key}".encode(), digest_size=16).digest()
    rng = random.Random(digest)
    return rng.choices(VOCABULARY, k=count)
