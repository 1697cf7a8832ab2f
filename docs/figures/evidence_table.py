"""Print the README's evidence tables (Markdown) from the files ``evidence.py`` wrote.

    python docs/figures/evidence_table.py [docs/evidence]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(x, spec="+.3f"):
    return "—" if x is None else format(x, spec)


def _interval(stat):
    if not stat or stat.get("low") is None:
        return ""
    return f" [{stat['low']:+.2f}, {stat['high']:+.2f}]"


def seeds_table(folder: Path, site: str) -> list[str]:
    data = json.loads((folder / f"{site}_seeds.json").read_text())
    lines = []
    matched = {m["component"]: m for m in data["matched"]}
    for component, m in matched.items():
        effects = [e for e in data["effects"] if e["reference"] == component and e["row"]]
        for e, experiment in zip(effects, data["experiments"]):
            row = e["row"]
            variants = {v["variant"]: v for v in experiment["variants"] if v["component"] == row["component"]}
            layer = variants.get("vs same count per layer")
            spared = variants.get("without massive channels")
            lines.append(
                f"| {site} | {component} | {e['seed']} ({row['component']}, r {e['correlation']:+.2f}) | "
                f"{row['share']:.1%} | {_fmt(row['network']['dce'])} | "
                f"{_fmt(row['random']['dce']['mean'])} ± {_fmt(row['random']['dce']['sd'], '.3f')} | "
                f"{_fmt(row['tests']['excess']['mean'])}{_interval(row['tests']['excess'])} | "
                f"{row['tests']['p']['mean']:.3f} | "
                f"{_fmt(layer['random']['dce']['mean']) if layer else '—'} (p {layer['tests']['p']['mean']:.3f}) | "
                + (f"{_fmt(spared['network']['dce'])} vs {_fmt(spared['random']['dce']['mean'])} (p "
                   f"{spared['tests']['p']['mean']:.3f})" if spared else "no massive channel") + " |")
        lines.append(f"| {site} | **{component}: across seeds** | | | | | | Fisher {m['fisher_p']:.4f}, Holm "
                     f"{m['fisher_p_holm']:.4f} | | **{'survives' if m['survives'] else 'does not survive'}** |")
    return lines


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or ["docs/evidence"])[0])
    record = json.loads((folder / "evidence.json").read_text())
    print("| site | component | seed (its match, map r) | channels | ΔCE lesioned | ΔCE magnitude twins (mean ± sd) "
          "| beyond twins [95 %] | p | ΔCE layer twins (p) | without massive channels: ΔCE vs twins (p) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for site in record["sites"]:
        print("\n".join(seeds_table(folder, site["site"])))
    print()
    for site in record["sites"]:
        task = site["task"]
        if task:
            print(f"- {site['site']} task: baseline {_fmt(task['baseline_acc'], '.3f')}, component lesioned "
                  f"{_fmt(task['acc'], '.3f')} {task['acc_interval']}, random {_fmt(task['random_acc'], '.3f')}; "
                  f"chance {task['summary']['chance'] if task['summary'] else '—'}")
        for fmt, rec in site["recurrence"].items():
            shares = {}
            for cell in rec["cells"]:
                shares.setdefault(cell["component"], []).append(cell["share"])
            print(f"- {site['site']} recurrence ({fmt}): " + ", ".join(
                f"c{c} {sum(v) / len(v):.0%}" for c, v in shares.items()))
        print(f"- {site['site']} seconds: {site['seconds']}")
    for run in record.get("runs", [record]):
        print(f"- run: {run.get('command', '')} wall {run.get('wall_seconds', run.get('neurons_wall_seconds'))} s; "
              f"load {run.get('load_start')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
