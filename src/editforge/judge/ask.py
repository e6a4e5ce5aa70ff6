"""Asking the judge: a yes/no score per pair, a short reason, or a drafted instruction.

    pairs = [Pair(inputs=(ref1, ref2), output=raw, instruction="put the cat on the sofa")]
    scores = score_pairs(judge, pairs, batch_size=8)     # P("yes") from the next-token logits, in [0, 1]
    texts = explain_pairs(judge, pairs)                   # greedy, a sentence at most
    drafts = draft_instructions(judge, pairs)             # the instruction is ignored: it is what is asked for

No sampling anywhere: the same pairs give the same scores and texts. Pairs go through the model `batch_size`
at a time, left-padded (so every sequence ends at the last position, where the answer is read, and
Qwen2.5-VL's rotary positions come from the attention mask), each image resized to the judge's area at its
own aspect (`judge_size`), with the same results as one at a time up to floating-point rounding (tested).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image

from editforge.errors import EditForgeError
from editforge.judge import prompts
from editforge.judge.model import Judge, judge_size

REASON_TOKENS = 48
INSTRUCTION_TOKENS = 64


@dataclass(frozen=True)
class Pair:
    inputs: tuple[Image.Image, ...]  # what the edit is given, in slot order
    output: Image.Image              # what it produced
    instruction: str = ""


def score_pairs(judge: Judge, pairs: Sequence[Pair], *, batch_size: int = 8,
                done: Callable[[int], None] | None = None) -> list[float]:
    """P(yes) / (P(yes) + P(no)) at the answer's first token, per pair; `done(n)` after each batch."""
    yes, no = answer_tokens(judge.processor.tokenizer)
    scores: list[float] = []
    for batch in _batches(pairs, batch_size):
        texts = [prompts.chat(len(p.inputs), prompts.SCORE_QUESTION.format(instruction=p.instruction)) for p in batch]
        with torch.inference_mode():
            logits = judge.model(**_encode(judge, texts, batch), logits_to_keep=1).logits[:, -1].float()
        chosen = torch.log_softmax(logits[:, yes + no], dim=-1)
        scores += chosen[:, : len(yes)].exp().sum(dim=-1).tolist()
        if done:
            done(len(batch))
    return scores


def explain_pairs(judge: Judge, pairs: Sequence[Pair], *, batch_size: int = 8,
                  done: Callable[[int], None] | None = None) -> list[str]:
    """A greedy one-sentence reason per pair (`prompts.REASON_QUESTION`)."""
    return _answers(judge, pairs, lambda p: prompts.REASON_QUESTION.format(instruction=p.instruction),
                    REASON_TOKENS, batch_size, done)


def draft_instructions(judge: Judge, pairs: Sequence[Pair], *, batch_size: int = 8,
                       done: Callable[[int], None] | None = None) -> list[str]:
    """A greedy training instruction per pair, from its images alone (`prompts.INSTRUCTION_QUESTION`)."""
    return _answers(judge, pairs, lambda p: prompts.INSTRUCTION_QUESTION, INSTRUCTION_TOKENS, batch_size, done)


def answer_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The token ids that start a yes and a no (`prompts.YES_WORDS`, `NO_WORDS`): the first token of each word."""
    def first_tokens(words):
        return sorted({tokenizer.encode(word, add_special_tokens=False)[0] for word in words})

    yes, no = first_tokens(prompts.YES_WORDS), first_tokens(prompts.NO_WORDS)
    if set(yes) & set(no):
        raise EditForgeError("the judge's tokenizer starts 'yes' and 'no' with the same token; it cannot be "
                             "scored by its first answer token")
    return yes, no


def _answers(judge: Judge, pairs: Sequence[Pair], question, max_new_tokens: int, batch_size: int, done) -> list[str]:
    tokenizer = judge.processor.tokenizer
    answers: list[str] = []
    for batch in _batches(pairs, batch_size):
        inputs = _encode(judge, [prompts.chat(len(p.inputs), question(p)) for p in batch], batch)
        with torch.inference_mode():
            tokens = judge.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                          temperature=None, top_p=None, top_k=None,
                                          pad_token_id=tokenizer.pad_token_id)
        new = tokens[:, inputs["input_ids"].shape[1]:]
        answers += [cell_safe(text) for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
        if done:
            done(len(batch))
    return answers


def cell_safe(text: str) -> str:
    """Generated text as one line a workbook cell takes: control characters (which xlsx cannot hold) and the
    replacement characters of cut-off byte sequences dropped, whitespace runs made one space."""
    kept = "".join(" " if c.isspace() else c for c in text
                   if c.isspace() or (unicodedata.category(c) != "Cc" and c != "\ufffd"))
    return " ".join(kept.split())


def _encode(judge: Judge, texts: list[str], batch: Sequence[Pair]):
    images = [image.resize(judge_size(image.size, judge.pixels), Image.BICUBIC)
              for pair in batch for image in (*pair.inputs, pair.output)]
    encoded = judge.processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    return encoded.to(judge.device)


def _batches(items: Sequence, size: int):
    if size < 1:
        raise EditForgeError(f"`batch_size` must be at least 1, not {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]
