#!/usr/bin/env python3
"""The preference of the RLHF example, and the data it needs, in one place (standard library only).

The rule: a story continuation should mention a colour (one of COLOURS, as a whole word, any
case). TinyStories continuations do so about 9% of the time, so a model pretrained on them
does not follow it; a program can judge it exactly, which gives the "true score" of a model:
the share of its sampled continuations of held-out prompts that mention a colour.

    rule.py sft STORIES.txt OUT.jsonl [MAX]       prompt = first sentence, response = next two
    rule.py prompts STORIES.txt OUT.jsonl [MAX]   {"prompt": first sentence} per story
    rule.py pairs [--natural] SAMPLES.jsonl... OUT.jsonl
                                                  preference pairs from `alloy generate` records:
                                                  each continuation as a minimal pair of the same
                                                  length (a colour against a plain adjective after
                                                  its first article, or its colours against plain
                                                  adjectives), the colour chosen; a quarter of
                                                  them also against the empty response (any
                                                  continuation beats none); and for each
                                                  prompt, a sampled
                                                  continuation that follows the rule over one that
                                                  does not (--natural: only these)
    rule.py score SAMPLES.jsonl                   prints {"score": share following the rule, ...}
    rule.py responses SAMPLES.jsonl OUT.jsonl     {"prompt", "response"} lines for alloy score
    rule.py report RESULTS.jsonl [KL_BUDGET]     the markdown table of docs/alignment.md, targets
                                                  checked (default budget: 15 nats per response)
    rule.py accuracy METRICS.jsonl                a reward run's last held-out pair accuracy, as text
    rule.py kl POLICY.jsonl REF.jsonl             from `alloy score --logprobs` of the policy's own
                                                  samples under the policy and under the reference:
                                                  prints {"kl": mean of the differences, ...}, a
                                                  Monte Carlo estimate of KL(policy || reference)
                                                  in nats per response
"""
import json
import random
import re
import sys

COLOURS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "black", "brown",
           "gold", "grey", "gray"]
COLOUR_RE = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)


def follows(text):
    return COLOUR_RE.search(text) is not None


ARTICLE_RE = re.compile(r"\b(the|a|an|his|her|their|my|your)\s", re.IGNORECASE)


# Plain adjectives that stand in for a colour, so that an edited pair differs in the colour and
# not in length: a reward model trained on "colour inserted" against "nothing inserted" learns
# that longer is better as much as that colours are, and PPO then buys length.
PLAIN = ["big", "small", "little", "old", "new", "nice", "happy", "tall", "long", "soft", "funny"]


def with_word(text, word):
    """text with word after its first article or possessive, or None if it has none."""
    m = ARTICLE_RE.search(text)
    if not m:
        return None
    art = m.group(1)
    if art.lower() == "an":  # "an apple" -> "a red apple"
        art = art[0] if art[0] in "aA" else art
    return text[:m.start()] + art + " " + word + " " + text[m.end():]


def plain_for_colour(text, rng):
    """text with each colour replaced by a plain adjective."""
    return COLOUR_RE.sub(lambda m: rng.choice(PLAIN), text)


def stories(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # the training sample separates stories by <|endoftext|>, the validation split by blank lines
    for story in text.split("<|endoftext|>" if "<|endoftext|>" in text else "\n\n"):
        sents = re.split(r"(?<=[.!?])\s+", " ".join(story.split()))
        sents = [s for s in sents if s]
        if len(sents) >= 4 and len(sents[0]) < 200:
            yield sents


def write_jsonl(path, rows):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    import os
    os.replace(path + ".tmp", path)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd in ("sft", "prompts") and len(argv) in (4, 5):
        limit = int(argv[4]) if len(argv) == 5 else None
        rows = []
        for sents in stories(argv[2]):
            if cmd == "sft":
                rows.append({"prompt": sents[0], "response": " " + " ".join(sents[1:3])})
            else:
                rows.append({"prompt": sents[0]})
            if limit and len(rows) >= limit:
                break
        write_jsonl(argv[3], rows)
    elif cmd == "pairs" and len(argv) >= 4:
        natural_only = argv[2] == "--natural"
        if natural_only:
            argv = argv[:2] + argv[3:]
        by_prompt = {}
        for path in argv[2:-1]:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    by_prompt.setdefault(r["prompt"], []).append(r["text"])
        rng = random.Random(1337)
        rows = []
        for prompt, texts in by_prompt.items():
            good = [t for t in texts if follows(t) and t.strip()]
            bad = [t for t in texts if not follows(t) and t.strip()]
            for g, b in zip(good, bad):
                rows.append({"prompt": prompt, "chosen": g, "rejected": b})
            for t in texts:
                if natural_only or not t.strip():
                    continue
                if rng.random() < 0.25:  # a continuation is better than none
                    rows.append({"prompt": prompt, "chosen": t, "rejected": ""})
                if follows(t):
                    edit = plain_for_colour(t, rng)
                    if not follows(edit):
                        rows.append({"prompt": prompt, "chosen": t, "rejected": edit})
                else:
                    colour = with_word(t, rng.choice(COLOURS[:11]))
                    if colour:
                        rows.append({"prompt": prompt, "chosen": colour, "rejected": with_word(t, rng.choice(PLAIN))})
        rng.shuffle(rows)
        write_jsonl(argv[-1], rows)
        print(json.dumps({"prompts": len(by_prompt), "pairs": len(rows)}))
    elif cmd == "score" and len(argv) == 3:
        n = k = tokens = 0
        with open(argv[2], encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                n += 1
                k += follows(r["text"])
                tokens += r.get("tokens", 0)
        print(json.dumps({"samples": n, "score": k / n if n else 0.0, "mean_tokens": tokens / n if n else 0.0}))
    elif cmd == "responses" and len(argv) == 4:
        with open(argv[2], encoding="utf-8") as f:
            rows = [{"prompt": r["prompt"], "response": r["text"]} for r in map(json.loads, f)]
        write_jsonl(argv[3], rows)
    elif cmd == "report" and len(argv) in (3, 4):
        budget = float(argv[3]) if len(argv) == 4 else 15.0
        with open(argv[2], encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        base = next(r for r in rows if r["model"] == "sft")["score"]
        goal = base + (1.0 - base) / 2
        print("| model | true score (held-out) | mean KL to SFT (nats/response) | response tokens | target met |")
        print("|---|---|---|---|---|")
        for r in rows:
            met = "" if r["model"] == "sft" else \
                ("yes" if r["score"] >= goal and r["kl"] <= budget else "**no**")
            print(f"| {r['model']} | {r['score']:.3f} | {r['kl']:.2f} | {r['mean_tokens']:.1f} | {met} |")
        print(f"\nTarget: a true score of at least {goal:.3f} (halfway from SFT's {base:.3f} to 1) with a mean "
              f"KL to the SFT model of at most {budget:g} nats per response.")
    elif cmd == "accuracy" and len(argv) == 3:
        evals = [r for r in map(json.loads, open(argv[2], encoding="utf-8")) if r.get("type") == "eval"]
        if not evals:
            sys.exit(f"rule.py accuracy: {argv[2]} has no eval line")
        r = evals[-1]
        print(f"held-out pair accuracy {r['val_accuracy']:.3f} on {r['val_pairs']} pairs")
    elif cmd == "kl" and len(argv) == 4:
        def logps(path):
            with open(path, encoding="utf-8") as f:
                return [json.loads(line)["logps"][0] for line in f]
        pol, ref = logps(argv[2]), logps(argv[3])
        if len(pol) != len(ref) or not pol:
            sys.exit(f"rule.py kl: {argv[2]} and {argv[3]} score different samples")
        d = [p - q for p, q in zip(pol, ref)]
        print(json.dumps({"samples": len(d), "kl": sum(d) / len(d)}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
