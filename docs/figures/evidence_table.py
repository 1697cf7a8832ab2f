"""Print the README's evidence tables (Markdown) from the files ``evidence.py`` wrote.

    python docs/figures/evidence_table.py [docs/evidence]

The screen (every component on template seed 0), then the confirmation (the selected
components on seeds 1 and 2, other prompts), then the task, recurrence and run times.
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


def _twins(row) -> str:
    return f"{_fmt(row['random']['dce']['mean'])} ± {_fmt(row['random']['dce']['sd'], '.3f')}"


def screen_table(folder: Path, site: dict) -> list[str]:
    data = json.loads((folder / f"{site['site']}_screen.json").read_text())
    lines = []
    for row in data["rows"]:
        c = int(row["component"])
        massive = site["massive_in_components"].get(str(c)) or site["massive_in_components"].get(c)
        lines.append(
            f"| {site['site']} | {c} | {row['share']:.1%} | {len(massive) if massive else 0} | "
            f"{_fmt(row['network']['dce'])} | {_twins(row)} | "
            f"{_fmt(row['tests']['excess']['mean'])}{_interval(row['tests']['excess'])} | "
            f"{row['tests']['p']['mean']:.2f} | {row['tests']['p_holm']['mean']:.2f} | "
            f"{'**yes**' if c in site['selected'] else 'no'} |")
    return lines


def confirm_table(folder: Path, site: dict) -> list[str]:
    path = folder / f"{site['site']}_confirm.json"
    if not path.exists():
        return [f"| {site['site']} | none selected | | | | | | | |"]
    data = json.loads(path.read_text())
    lines = []
    for m in data["matched"]:
        component = m["component"]
        effects = [e for e in data["effects"] if e["reference"] == component and e["row"]]
        for e, experiment in zip(effects, data["experiments"]):
            row = e["row"]
            variants = {v["variant"]: v for v in experiment["variants"] if v["component"] == row["component"]}
            layer, spared = variants.get("vs same count per layer"), variants.get("without massive channels")
            layer_words = (f"{_fmt(layer['random']['dce']['mean'])} (p {layer['tests']['p']['mean']:.3f})"
                           if layer else "—")
            spared_words = (f"{_fmt(spared['network']['dce'])} vs {_fmt(spared['random']['dce']['mean'])} (p "
                            f"{spared['tests']['p']['mean']:.3f})" if spared else "no massive channel")
            lines.append(
                f"| {site['site']} | {component} | {e['seed']} ({row['component']}, r {e['correlation']:+.2f}) | "
                f"{row['share']:.1%} | {_fmt(row['network']['dce'])} | {_twins(row)} | "
                f"{_fmt(row['tests']['excess']['mean'])}{_interval(row['tests']['excess'])} | "
                f"{row['tests']['p']['mean']:.3f} | {layer_words} | {spared_words} |")
        strict = site["holm_over_all_screened"].get(str(component))
        lines.append(f"| {site['site']} | **{component}: seeds 1-2** | | | | | Fisher {m['fisher_p']:.4f} | Holm "
                     f"{m['fisher_p_holm']:.4f} (all ten: {_fmt(strict, '.3f')}) | | "
                     f"**{'survives' if m['survives'] else 'does not survive'}** |")
    return lines


def notes(record: dict) -> list[str]:
    lines = []
    for site in record["sites"]:
        task = site.get("task")
        if task:
            lines.append(f"- {site['site']} task (component {task['component']}): baseline "
                         f"{_fmt(task['baseline_acc'], '.3f')}, lesioned {_fmt(task['acc'], '.3f')} "
                         f"{task['acc_interval']}, random {_fmt(task['random_acc'], '.3f')}; chance "
                         f"{task['summary']['chance'] if task['summary'] else '—'}")
        for fmt, rec in site["recurrence"].items():
            shares = {}
            for cell in rec["cells"]:
                shares.setdefault(cell["component"], []).append(cell["share"])
            lines.append(f"- {site['site']} recurrence ({fmt}): " + ", ".join(
                f"c{c} {sum(v) / len(v):.0%}" for c, v in shares.items()))
        lines.append(f"- {site['site']} seconds: {site['seconds']}; load {site['load_start']['loadavg']} -> "
                     f"{site['load_end']['loadavg']}")
    lines.append(f"- run: wall {record.get('wall_seconds')} s; load {record['load_start']['loadavg']} at "
                 f"{record['load_start']['at']} -> {record.get('load_end', {}).get('loadavg')}")
    return lines


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or ["docs/evidence"])[0])
    record = json.loads((folder / "evidence.json").read_text())
    print("| site | component | channels | massive channels | Δ CE lesioned | Δ CE magnitude-matched twins "
          "(mean ± sd) | beyond twins [95 %] | p | Holm (all ten) | confirmed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for site in record["sites"]:
        print("\n".join(screen_table(folder, site)))
    print()
    print("| site | component | template seed (its match, map r) | channels | Δ CE lesioned | Δ CE "
          "magnitude-matched twins (mean ± sd) | beyond twins [95 %] | p | Δ CE per-layer twins (p) | without "
          "massive channels: Δ CE vs twins (p) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for site in record["sites"]:
        print("\n".join(confirm_table(folder, site)))
    print()
    print("\n".join(notes(record)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
