"""Prompt validation and the object-shot template for the text-to-image stage.

The 3D stages want one whole object, centred, on a plain white background, seen from a
three-quarter view; the template wraps the user's words in that framing. The user's raw
prompt is always kept; the effective prompt is what the model saw. Text encoders read
a fixed number of tokens (CLIP: 77), so an over-long prompt is cut at a word boundary
with a warning instead of being silently clipped by the tokenizer (which would drop the
framing at the end).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Sequence

from orbitmesh.errors import InputError

PROMPT_TEMPLATE = ("{prompt}, a single whole object, centered, full view, three-quarter view, "
                   "isolated on a plain white background, studio lighting, sharp focus")
NEGATIVE_PROMPT = ("multiple objects, cropped, cut off, out of frame, close-up, partial view, busy background, "
                   "scenery, text, watermark, shadow, blurry, low quality")
# A prompt is cut to this many characters before tokenizing, so a pasted novel stays cheap.
MAX_PROMPT_CHARS = 2000
_EXAMPLE_FIX = "describe the object in a few words, e.g. 'a wooden chair'"


@dataclass
class PromptPlan:
    """The prompts a text-to-image call uses.

    ``raw``: what the user typed; ``user_part``: the cleaned (and maybe truncated) text that
    went into the template; ``effective``/``negative``: what the model got.
    """

    raw: str
    user_part: str
    effective: str
    negative: str
    truncated: bool = False
    max_tokens: int | None = None
    warnings: list[str] = field(default_factory=list)


def validate_prompt(prompt: Any) -> str:
    """The cleaned prompt (control characters dropped, whitespace collapsed) or InputError."""
    if prompt is None:
        raise InputError("no prompt given", fix=_EXAMPLE_FIX)
    if isinstance(prompt, bytes):
        raise InputError("the prompt must be text, got bytes", fix="decode it first (e.g. prompt.decode('utf-8'))")
    if not isinstance(prompt, str):
        raise InputError(f"the prompt must be text, got {type(prompt).__name__}", fix=_EXAMPLE_FIX)
    # Control/format characters (NUL, escape codes, zero-width) carry no meaning for the model.
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in prompt)
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()
    if not text:
        kind = "empty" if not prompt else "only whitespace or control characters"
        raise InputError(f"the prompt is {kind}", fix=_EXAMPLE_FIX)
    return text


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens ``text`` takes in ``tokenizer`` without the start/end tokens."""
    return len(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])


def token_limit(tokenizers: Sequence[Any]) -> int | None:
    """Content tokens the strictest tokenizer reads (its max length minus start/end), or None."""
    limits = []
    for tok in tokenizers:
        n = getattr(tok, "model_max_length", None)
        # Tokenizers without a limit report a huge sentinel (int(1e30)).
        if isinstance(n, int) and 4 < n < 100_000:
            limits.append(n - 2)
    return min(limits) if limits else None


def _fit_words(tokenizer: Any, template: str, words: list[str], budget: int) -> int:
    """The most leading words whose templated prompt fits in ``budget`` tokens (binary search)."""
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(tokenizer, template.format(prompt=" ".join(words[:mid]))) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def build_prompt(prompt: Any, tokenizers: Sequence[Any] = (), *, template: str | None = PROMPT_TEMPLATE,
                 negative: str | None = None) -> PromptPlan:
    """Validate ``prompt``, wrap it in ``template`` and make it fit the tokenizers' limit.

    ``template`` None sends the user's text as is. Over-long prompts lose words from the end
    of the user's part (the framing stays) and the plan carries a warning saying so.
    """
    raw = prompt
    text = validate_prompt(prompt)
    template = template or "{prompt}"
    negative = NEGATIVE_PROMPT if negative is None else negative
    plan = PromptPlan(raw=raw, user_part=text, effective=template.format(prompt=text), negative=negative)
    if len(text) > MAX_PROMPT_CHARS:
        text = text[:MAX_PROMPT_CHARS].rsplit(" ", 1)[0] or text[:MAX_PROMPT_CHARS]
        plan.truncated = True
    limit = token_limit(tokenizers)
    plan.max_tokens = limit
    if limit is not None:
        tok = min(tokenizers, key=lambda t: getattr(t, "model_max_length", 1 << 30))
        if count_tokens(tok, template.format(prompt=text)) > limit:
            words = text.split(" ")
            keep = _fit_words(tok, template, words, limit)
            if keep == 0 and template != "{prompt}":
                # The framing alone leaves no room (a tokenizer with a tiny limit): drop it.
                template, keep = "{prompt}", _fit_words(tok, "{prompt}", words, limit)
                plan.warnings.append("the prompt template does not fit the text encoder; sent the prompt alone")
            if keep == 0:  # one giant word: cut it by tokens
                ids = tok(text, add_special_tokens=False)["input_ids"][:limit]
                text = tok.decode(ids, skip_special_tokens=True).strip()
            else:
                text = " ".join(words[:keep])
            plan.truncated = True
        # The negative prompt is ours; clip it quietly by words if a small encoder needs that.
        neg_words = negative.split(" ")
        if negative and count_tokens(tok, negative) > limit:
            plan.negative = " ".join(neg_words[:_fit_words(tok, "{prompt}", neg_words, limit)])
    if plan.truncated:
        dropped = len(plan.user_part) - len(text)
        where = (f"the text encoder reads {limit} tokens" if limit
                 else f"prompts are cut at {MAX_PROMPT_CHARS} characters")
        kept = text if len(text) <= 80 else text[:77] + "..."
        plan.warnings.append(f"prompt too long: {where}; dropped the last {dropped} characters and kept "
                             f"{kept!r}; shorten the prompt to choose what is kept")
    plan.user_part = text
    plan.effective = template.format(prompt=text)
    return plan
