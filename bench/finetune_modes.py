"""Masked LoRA fine-tuning on the embedded model: learning and forgetting of each mask mode.

    python bench/finetune_modes.py [--dataset builtin:arithmetic] [--steps 30] [--modes none,lesion,preserve,random]
                                   [--out bench/results/finetune_modes.json]

Builds one template on the embedded model (SmolLM2-135M-Instruct) from a built-in
set, then fine-tunes the same data for the same steps with mask none, lesion,
preserve and the matched random control (and, on request, "updates only" rows: restricted
updates with the model unmasked),
and prints a table: task loss on the validation split before and after (learning),
KL from the base model and perplexity on general held-out prompts (forgetting), the
mask's share of neurons (zeroed; for "updates only" rows, frozen) and seconds per step.
Then times LoRA steps with and without a mask on the same model and batches,
interleaved, and prints their ratio (target <= 1.05).
Writes everything as JSON as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fnweb.archs import layout_of  # noqa: E402
from fnweb.build import BuildConfig, build_template  # noqa: E402
from fnweb.finetune import TrainConfig, finetune  # noqa: E402
from fnweb.finetune.data import collate, load_training_data, micro_batches  # noqa: E402
from fnweb.finetune.distributed import Distributed  # noqa: E402
from fnweb.finetune.lora import attach_lora, trainable_copy, trainable_parameters  # noqa: E402
from fnweb.finetune.network import MaskPlan, plan_for  # noqa: E402
from fnweb.finetune.train import _step, causal_lm_loss  # noqa: E402
from fnweb.masks import MaskSpec  # noqa: E402
from fnweb.models import load_model  # noqa: E402
from fnweb.prompts import PromptSource  # noqa: E402

RATIO_TARGET = 1.05


def build(lm, source: str, k: int, percentile: float, samples: int, seed: int):
    config = BuildConfig(sources=[PromptSource(source)], samples_per_dataset=samples, max_tokens=128, k=k,
                         threshold_value=percentile, seed=seed)
    start = time.perf_counter()
    template = build_template(lm, config).template
    return template, time.perf_counter() - start


ROWS = {  # label -> TrainConfig changes
    "none": dict(mask_mode="none"),
    "lesion": dict(mask_mode="lesion"),
    "preserve": dict(mask_mode="preserve"),
    "random": dict(mask_mode="random", control_of="lesion"),
    "random-preserve": dict(mask_mode="random", control_of="preserve"),
    # Updates only: the model runs unmasked; LoRA may change only the network's (or the rest's) MLP weights.
    "preserve-updates": dict(mask_mode="preserve", restrict_updates=True, mask_activations=False),
    "lesion-updates": dict(mask_mode="lesion", restrict_updates=True, mask_activations=False),
    "random-updates": dict(mask_mode="random", control_of="preserve", restrict_updates=True, mask_activations=False),
}


def run_mode(lm, args, template_path: str, row: str, runs_dir: Path) -> dict:
    changes = ROWS[row]
    config = TrainConfig(
        dataset=args.dataset, output_dir=str(runs_dir / row), max_steps=args.steps, learning_rate=args.lr,
        batch_size=args.batch, lora_r=args.lora_r,
        template_path=template_path if changes["mask_mode"] != "none" else None,
        component_ids=args.components, general_per_set=args.general_per_set, eval_interval=0, seed=args.seed,
        max_seq_len=256, **changes,
    )
    start = time.perf_counter()
    result = finetune(config, lm)
    s = result.summary
    return {
        "mode": row, "mask": s["mask"], "masked_share": s["masked_share"],
        "trainable_parameters": s["trainable_parameters"], "steps": s["steps"],
        "run_seconds": time.perf_counter() - start,
        "seconds_per_step": s["seconds_per_step"], **s["learning"], **s["forgetting"],
        "final_train_loss": s["final_train_loss"],
    }


def seconds_per_step_ratio(lm, template, dataset: str = "builtin:arithmetic", reps: int = 8, batch: int = 4) -> dict:
    """LoRA step time with a lesion mask vs without: same model, same batches, interleaved; medians."""
    config = TrainConfig(dataset=dataset, output_dir="unused", batch_size=batch, max_seq_len=256, lora_dropout=0.0)
    layout = layout_of(lm.model)
    model = attach_lora(trainable_copy(lm, config), config, layout, MaskPlan("none"))
    plan = plan_for(template, MaskSpec((0,), "lesion"), "lesion", template.infer_site(layout), False)
    plain = MaskPlan("none")
    data = load_training_data(lm.tokenizer, PromptSource(dataset), 256, 0.0, "response", 0)
    pad = lm.tokenizer.pad_token_id or 0
    batches = [collate(b, pad) for b, _ in zip(micro_batches(data.train, batch, 0), range(2))]
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-5)
    dist, device = Distributed(), lm.device
    model.train()

    def one(which, batch_):
        start = time.perf_counter()
        _step(model, model, [batch_], which, causal_lm_loss, dist, device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for b in batches:  # warm up both paths
        one(plain, b), one(plan, b)
    times = {"plain": [], "masked": []}
    for rep in range(reps):
        b = batches[rep % len(batches)]
        order = [("plain", plain), ("masked", plan)] if rep % 2 == 0 else [("masked", plan), ("plain", plain)]
        for name, which in order:
            times[name].append(one(which, b))
    plain_s, masked_s = statistics.median(times["plain"]), statistics.median(times["masked"])
    ratio = masked_s / plain_s
    return {"masked_s_per_step": masked_s, "plain_s_per_step": plain_s, "ratio": ratio,
            "target": f"<= {RATIO_TARGET}", "ok": ratio <= RATIO_TARGET, "reps": reps, "batch": batch,
            "masked_share": plan.share(layout)}


def table(rows: list[dict]) -> str:
    head = (f"{'mode':<18}{'mask %':>9}{'task loss before':>18}{'after':>8}{'change':>9}"
            f"{'KL before':>11}{'KL after':>10}{'ppl base':>10}{'ppl after':>11}{'s/step':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['mode']:<18}{100 * r['masked_share']:>9.2f}{r['task_loss_before']:>18.4f}{r['task_loss_after']:>8.4f}"
            f"{r['task_loss_change']:>+9.4f}{r['kl_before']:>11.4f}{r['kl_after']:>10.4f}{r['ppl_base']:>10.2f}"
            f"{r['ppl_after']:>11.2f}{r['seconds_per_step']:>8.3f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="builtin:arithmetic")
    p.add_argument("--template_from", default=None, help="built-in set the template is built from (the dataset)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--components", default="0", help="component ids, e.g. 0 or 0,1")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--percentile", type=float, default=98.0)
    p.add_argument("--samples", type=int, default=64, help="prompts the template is built from")
    p.add_argument("--modes", default="none,lesion,preserve,random",
                   help=f"rows, comma separated, from: {', '.join(ROWS)}")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--general_per_set", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs_dir", default=None, help="keep the run folders here (default: a temp folder)")
    p.add_argument("--skip_ratio", action="store_true", help="skip the masked-vs-plain step timing")
    p.add_argument("--out", default=str(HERE / "results" / "finetune_modes.json"))
    args = p.parse_args(argv)
    args.components = [int(c) for c in args.components.replace(",", " ").split()]
    unknown = [r for r in args.modes.split(",") if r.strip() not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model()
    torch.manual_seed(args.seed)
    template, build_s = build(lm, args.template_from or args.dataset, args.k, args.percentile, args.samples, args.seed)
    print(f"{lm.summary_line()}\ntemplate from {args.template_from or args.dataset}: k={args.k}, "
          f"p={args.percentile}, {build_s:.1f} s; components {args.components}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fnweb-bench-ft-") as scratch:
        runs_dir = Path(args.runs_dir or scratch)
        template_path = str(template.save(runs_dir / "template.json"))
        rows = []
        for row in args.modes.split(","):
            rows.append(run_mode(lm, args, template_path, row.strip(), runs_dir))
            print(f"  {row}: {rows[-1]['mask']}; {rows[-1]['run_seconds']:.0f} s", flush=True)
            print("    " + table(rows[-1:]).splitlines()[-1], flush=True)
            write(args, lm, build_s, rows, None)  # partial results survive an interrupted run
    print()
    print(f"{args.dataset}, {args.steps} steps, batch {args.batch}, lr {args.lr:g}, LoRA r {args.lora_r}, "
          f"seed {args.seed}; forgetting on {args.general_per_set} prompts from each other built-in set")
    print(table(rows))
    ratio = None
    if not args.skip_ratio:
        ratio = seconds_per_step_ratio(lm, template, args.dataset)
        print(f"\nmasked training: {ratio['masked_s_per_step']:.3f} s/step with a lesion mask vs "
              f"{ratio['plain_s_per_step']:.3f} s/step without: ratio {ratio['ratio']:.3f} "
              f"(target {ratio['target']}) {'OK' if ratio['ok'] else 'MISSED'}")
    write(args, lm, build_s, rows, ratio)
    print(f"\nJSON: {args.out}")
    return 0


def write(args, lm, build_s: float, rows: list[dict], ratio) -> None:
    out = {"settings": {k: v for k, v in vars(args).items()}, "model": lm.model_id, "template_build_s": build_s,
           "rows": rows, "masked_step_ratio": ratio, "threads": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
