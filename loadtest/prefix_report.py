"""Report: prompt tokens shared across the contestants of one case at the first turn.

For each case in cases/, N contestants ask different first questions. Each
request's messages are rendered through a ChatML template (the shape Qwen
models served by vLLM use) and tokenised with the LLM simulator's tokenizer
(`loadtest.llm_sim.tokenize`: an English word, up to two CJK characters or one
other character per token, which runs a little long for Chinese against a real
BPE vocabulary). The shared prefix is the tokens common to *all* N prompts, and
the fraction is shared / mean prompt tokens. vLLM caches whole blocks of 16
tokens, so the block-aligned figure is printed too. Target: >= 90 %.

The baseline, in the same run, is the naive prompt a careless implementation
would send: the contestant's name and the time in the system prompt's first
line, which leaves almost nothing to share.

Long interviews: the same report replays a 60-turn interview under a context
budget and counts how often the summary cut moved (each move is one cache miss
past the fixed prefix).

    .venv/bin/python -m loadtest.prefix_report [--contestants 30] [--budget 4000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from arena.cases import Case, load_case
from arena.patient import PatientView, Turn, patient_view
from arena.prompt import build_messages, summary_cut
from loadtest.llm_sim import tokenize

CASES = Path(__file__).resolve().parents[1] / "cases"
BLOCK = 16  # vLLM prefix-cache block size, in tokens

FIRST_QUESTIONS = [
    "哪里不舒服？", "什么时候开始的？", "您好，请问您今天怎么了？", "能具体说说吗？",
    "疼了多久了？", "以前有过这样的情况吗？", "有什么基础病吗？", "平时吃什么药？",
    "有没有药物过敏？", "家里人有类似的病吗？", "抽烟喝酒吗？", "发烧了吗？",
    "吃饭怎么样？", "大小便正常吗？", "睡眠怎么样？", "您觉得是怎么回事？",
    "最担心的是什么？", "您希望我们怎么帮您？", "Hello, what brings you in today?",
    "哪儿最难受？指给我看看。", "这次是怎么发作的？", "做什么的时候开始的？",
    "有没有恶心呕吐？", "最近体重有变化吗？", "以前住过院吗？", "做过手术吗？",
    "您多大年纪了？", "一直这样还是一阵一阵的？", "现在比刚开始好点还是重了？", "还有别的吗？",
]


def chatml(messages: list[dict[str, str]]) -> str:
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


def common_prefix(seqs: list[list[str]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        tok = seqs[0][i]
        if any(s[i] != tok for s in seqs[1:]):
            return i
    return n


def shared(prompts: list[str]) -> tuple[float, int, float, float]:
    """Mean prompt tokens, shared tokens, shared fraction, block-aligned shared fraction."""
    toks = [tokenize(p) for p in prompts]
    mean = statistics.fmean(len(t) for t in toks)
    common = common_prefix(toks)
    return mean, common, common / mean, (common // BLOCK * BLOCK) / mean


def naive_prompts(view: PatientView, questions: list[str]) -> list[str]:
    out = []
    for i, q in enumerate(questions):
        msgs = build_messages(view, [], q)
        msgs[0] = {
            "role": "system",
            "content": f"选手：contestant-{i:03d}，时间：2025-05-01 09:{i:02d}:00\n"
            + msgs[0]["content"],
        }
        out.append(chatml(msgs))
    return out


def interview(case: Case, turns: int) -> list[Turn]:
    # Real case questions and answers, cycled: realistic lengths for the budget replay.
    pairs = [(f.questions[0], f.answer) for f in case.facts]
    return [Turn(*pairs[i % len(pairs)]) for i in range(turns)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contestants", type=int, default=30)
    ap.add_argument("--budget", type=int, default=4000, help="context budget, tokens")
    ap.add_argument("--turns", type=int, default=60)
    args = ap.parse_args()
    questions = [FIRST_QUESTIONS[i % len(FIRST_QUESTIONS)] for i in range(args.contestants)]
    print(f"first turn, {args.contestants} contestants per case, llm_sim tokens (ChatML)")
    print(f"{'case':<16}{'prompt':>8}{'shared':>8}{'frac':>8}{'blocks':>8}{'naive':>8}")
    fracs = []
    for path in sorted(CASES.glob("*.json")):
        case = load_case(path.read_bytes(), path.name)
        view = patient_view(case)
        prompts = [chatml(build_messages(view, [], q)) for q in questions]
        mean, common, frac, blocks = shared(prompts)
        naive = shared(naive_prompts(view, questions))[2]
        fracs.append(frac)
        print(
            f"{case.id:<16}{mean:>8.0f}{common:>8}{frac:>8.1%}{blocks:>8.1%}{naive:>8.1%}"
        )
    print(f"minimum shared fraction: {min(fracs):.1%} (target >= 90%)")
    print(f"\n{args.turns}-turn interview, budget {args.budget} tokens (arena.prompt estimate)")
    print(f"{'case':<16}{'moves':>6}{'final cut':>10}{'max prompt':>11}")
    for path in sorted(CASES.glob("*.json")):
        case = load_case(path.read_bytes(), path.name)
        view = patient_view(case)
        history = interview(case, args.turns)
        cuts = [summary_cut(view, history[:n], budget_tokens=args.budget)
                for n in range(args.turns + 1)]
        moves = sum(1 for a, b in itertools.pairwise(cuts) if a != b)
        longest = max(
            len(tokenize(chatml(build_messages(view, history[:n], "还有吗？",
                                               budget_tokens=args.budget))))
            for n in range(args.turns + 1)
        )
        print(f"{case.id:<16}{moves:>6}{cuts[-1]:>10}{longest:>11}")


if __name__ == "__main__":
    main()
