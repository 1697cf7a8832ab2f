"""The page's look: a Gradio theme and the CSS for the HTML that ``render`` writes.

Gradio 6 takes both at ``launch`` (``launch_options()``), not in ``gr.Blocks``.
"""

from __future__ import annotations

import gradio as gr

from ..interventions import INTERVENTIONS

COLUMN_COLOURS = {"baseline": "#475569", **{i.name: i.colour for i in INTERVENTIONS.values()}, "random": "#d97706",
                  "run": "#7c3aed"}

CSS = """
.gradio-container { max-width: 1500px !important; margin: 0 auto; }
#fn-header h1 { font-size: 1.55rem; margin: 0 0 .15rem 0; }
#fn-header p { margin: 0; color: var(--body-text-color-subdued); }
.fn-bar-row { align-items: end; }
.fn-status { padding: .45rem .8rem; border-radius: 8px; font-size: .92rem; border: 1px solid; }
.fn-status-ok { background: #ecfdf5; border-color: #a7f3d0; color: #065f46; }
.fn-status-busy { background: #eff6ff; border-color: #bfdbfe; color: #1e40af; }
.fn-status-error { background: #fef2f2; border-color: #fecaca; color: #991b1b; }
.fn-status-idle { background: #f8fafc; border-color: #e2e8f0; color: #475569; }
.fn-step { margin-top: .3rem; }
.fn-step h4 { margin: .2rem 0 0 0; color: #4338ca; }
.fn-note { color: var(--body-text-color-subdued); font-size: .9rem; }

.fn-progress { border: 1px solid #c7d2fe; background: #eef2ff; border-radius: 10px; padding: .7rem .9rem; }
.fn-progress-head { display: flex; justify-content: space-between; gap: 1rem; font-size: .95rem; }
.fn-progress-head span { color: #3730a3; }
.fn-bar { height: 12px; background: #e0e7ff; border-radius: 6px; margin: .5rem 0 .35rem; overflow: hidden;
          position: relative; }
.fn-bar > div { height: 100%; background: linear-gradient(90deg, #6366f1, #4f46e5); border-radius: 6px;
                transition: width .25s ease; }
.fn-busy::after { content: ""; position: absolute; inset: 0;
  background: repeating-linear-gradient(-45deg, rgba(255,255,255,.0) 0 10px, rgba(255,255,255,.45) 10px 20px);
  background-size: 28px 28px; animation: fn-move 1s linear infinite; }
@keyframes fn-move { from { background-position: 0 0; } to { background-position: 28px 0; } }
.fn-progress-detail { font-size: .85rem; color: #4b5563; }

.fn-msg { border-radius: 10px; padding: .65rem .9rem; border: 1px solid; font-size: .95rem; }
.fn-msg-icon { font-weight: 700; margin-right: .5rem; }
.fn-msg-ok { background: #ecfdf5; border-color: #a7f3d0; color: #065f46; }
.fn-msg-error { background: #fef2f2; border-color: #fecaca; color: #991b1b; }
.fn-msg-stopped { background: #fffbeb; border-color: #fde68a; color: #92400e; }
.fn-msg-info { background: #f8fafc; border-color: #e2e8f0; color: #334155; }

.fn-empty { border: 1px dashed #cbd5e1; border-radius: 10px; padding: 1.2rem; text-align: center; color: #64748b; }
.fn-prompt { background: #f8fafc; border: 1px solid #e2e8f0; border-radius: 10px; padding: .55rem .8rem;
             margin-bottom: .6rem; display: flex; gap: .7rem; align-items: baseline; }
.fn-prompt span { font-size: .75rem; text-transform: uppercase; letter-spacing: .06em; color: #64748b; }
.fn-prompt em { margin-left: auto; font-size: .8rem; color: #64748b; white-space: nowrap; }
.fn-columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: .7rem; }
.fn-card { border: 1px solid #e2e8f0; border-top: 5px solid var(--fn-col); border-radius: 10px; background: white;
           display: flex; flex-direction: column; min-height: 220px; }
.fn-card-head { padding: .5rem .7rem .3rem; display: flex; flex-direction: column; gap: .05rem; }
.fn-card-head b { color: var(--fn-col); font-size: 1.02rem; }
.fn-card-head span { font-size: .78rem; color: #64748b; }
.fn-text { padding: .4rem .7rem .6rem; white-space: pre-wrap; word-break: break-word; font-size: .95rem;
           line-height: 1.45; flex: 1; color: #0f172a; max-height: 420px; overflow-y: auto; }
.fn-card-foot { padding: .35rem .7rem; border-top: 1px solid #f1f5f9; font-size: .78rem; color: #64748b; }
mark.fn-depart { background: color-mix(in srgb, var(--fn-col) 16%, white); color: inherit; border-radius: 3px;
                 padding: 0 .1rem; box-shadow: inset 2px 0 0 var(--fn-col); }
.fn-none { color: #94a3b8; font-style: italic; }
.fn-cursor { display: inline-block; width: .5em; height: 1em; background: #94a3b8; vertical-align: text-bottom;
             animation: fn-blink 1s step-end infinite; margin-left: 1px; }
@keyframes fn-blink { 50% { opacity: 0; } }
""" + "".join(f".fn-col-{name} {{ --fn-col: {colour}; }}\n" for name, colour in COLUMN_COLOURS.items()) + """
.fn-presets button { text-align: left; }
.fn-preset-note { font-size: .85rem; color: #64748b; }
/* Toasts at the bottom right: a message never covers the model bar or the template picker at the top. */
.toast-wrap { top: auto !important; bottom: var(--size-3); }
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
                          font=["Inter", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                          font_mono=["JetBrains Mono", "ui-monospace", "monospace"])  # no web fonts: works offline


def launch_options() -> dict:
    """Keyword arguments for ``demo.launch`` that give the page its look."""
    return {"theme": theme(), "css": CSS}
