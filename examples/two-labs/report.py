#!/usr/bin/env python3
"""Turns examples/two-labs' results.jsonl into the markdown table of docs/fusion.md, with the
issue's targets checked. Perplexities are exp(mean held-out loss per token); a "gain" is a
reduction of that loss in nats."""
import json
import sys

rows = {}
order = []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        r = json.loads(line)
        rows[r["model"]] = r
        order.append(r["model"])


def ppl(m, dom):
    return rows[m][dom]["perplexity"]


def loss(m, dom):
    return rows[m][dom]["loss"]


doms = ("code", "stories")
print("| model | code ppl | stories ppl |")
print("|---|---|---|")
for m in order:
    print(f"| {m} | {ppl(m, 'code'):.3f} | {ppl(m, 'stories'):.3f} |")
print()
checks = []
own = {"code": "lab-code", "stories": "lab-stories"}
other = {"code": "lab-stories", "stories": "lab-code"}
for moe in ("moe", "moe-all"):
    if moe in rows:
        for d in doms:
            ratio = ppl(moe, d) / ppl(own[d], d)
            # moe is the target; moe-all (everything tuned) is there for comparison
            checks.append((f"{moe} on {d} within 3% of {own[d]}" + (" (comparison)" if moe != "moe" else ""),
                           f"{ratio:.4f}x", ratio <= 1.03))
for d in doms:
    ratio = ppl(other[d], d) / ppl(own[d], d)
    checks.append((f"{other[d]} clearly worse on {d} than {own[d]}", f"{ratio:.3f}x", ratio > 1.1))
for m in ("merge-linear", "merge-ties"):
    for d in doms:
        ratio = ppl(m, d) / ppl("base", d)
        checks.append((f"{m} beats base on {d}", f"{ratio:.4f}x base", ratio < 1.0))
if "student" in rows:
    for d in doms:
        gain_e = loss("base", d) - loss("ensemble", d)
        gain_s = loss("base", d) - loss("student", d)
        kept = gain_s / gain_e if gain_e > 0 else float("nan")
        checks.append((f"student keeps >= 90% of the ensemble's gain on {d}",
                       f"{100 * kept:.1f}% ({gain_s:.4f} of {gain_e:.4f} nats)", kept >= 0.9))
print("| target | measured | met |")
print("|---|---|---|")
for name, value, ok in checks:
    print(f"| {name} | {value} | {'yes' if ok else '**no**'} |")
