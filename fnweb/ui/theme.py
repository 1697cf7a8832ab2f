"""The page's look: a Gradio theme and the CSS for the HTML that ``render`` writes.

Gradio 6 takes both at ``launch`` (``launch_options()``), not in ``gr.Blocks``. The
page is meant to be read on a projector and on a phone: body text is 16 px (the
theme's ``text_lg`` sizes), every text colour has a contrast of at least 4.5:1 on its
background (``TEXT`` below; the theme's subdued text is darkened to match), and no part
of a tab is wider than a 390 px screen (wide tables scroll inside themselves).
Presentation mode (``fnweb.ui.present``) makes every text larger.
"""

from __future__ import annotations

import gradio as gr

from ..compare import RANDOM_OF
from ..interventions import INTERVENTIONS
from .present import CSS as PRESENT_CSS

COLUMN_COLOURS = {"baseline": "#475569", **{i.name: i.colour for i in INTERVENTIONS.values()},
                  **{column: "#b45309" for column in RANDOM_OF}, "random": "#d97706", "run": "#7c3aed"}

CSS = """
.gradio-container { max-width: 1500px !important; margin: 0 auto; }
#fn-header h1 { font-size: 1.55rem; margin: 0 0 .15rem 0; }
#fn-header p { margin: 0; color: #334155; font-size: 1rem; }
.fn-bar-row { align-items: end; }
.fn-status { padding: .45rem .8rem; border-radius: 8px; font-size: .92rem; border: 1px solid; }
.fn-status-ok { background: #ecfdf5; border-color: #a7f3d0; color: #065f46; }
.fn-status-busy { background: #eff6ff; border-color: #bfdbfe; color: #1e40af; }
.fn-status-error { background: #fef2f2; border-color: #fecaca; color: #991b1b; }
.fn-status-idle { background: #f8fafc; border-color: #e2e8f0; color: #475569; }
.fn-step { margin-top: .3rem; }
.fn-step h4 { margin: .2rem 0 0 0; color: #4338ca; }
.fn-note { color: #475569; font-size: 1rem; }

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

.fn-empty { border: 1px dashed #cbd5e1; border-radius: 10px; padding: 1.2rem; text-align: center; color: #475569; }
.fn-prompt { background: #f8fafc; border: 1px solid #e2e8f0; border-radius: 10px; padding: .55rem .8rem;
             margin-bottom: .6rem; display: flex; flex-wrap: wrap; gap: .2rem .7rem; align-items: baseline; }
.fn-prompt span { font-size: .8rem; text-transform: uppercase; letter-spacing: .06em; color: #475569; }
.fn-prompt em { margin-left: auto; font-size: .85rem; color: #475569; }
.fn-columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(220px, 100%), 1fr)); gap: .7rem; }
.fn-card { border: 1px solid #e2e8f0; border-top: 5px solid var(--fn-col); border-radius: 10px; background: white;
           display: flex; flex-direction: column; min-height: 220px; }
.fn-card-head { padding: .5rem .7rem .3rem; display: flex; flex-direction: column; gap: .05rem; }
.fn-card-head b { color: var(--fn-col); font-size: 1.02rem; }
.fn-card-head span { font-size: .85rem; color: #475569; }
.fn-text { padding: .4rem .7rem .6rem; white-space: pre-wrap; word-break: break-word; font-size: 1rem;
           line-height: 1.45; flex: 1; color: #0f172a; max-height: 420px; overflow-y: auto; }
.fn-card-foot { padding: .35rem .7rem; border-top: 1px solid #f1f5f9; font-size: .85rem; color: #475569; }
mark.fn-depart { background: color-mix(in srgb, var(--fn-col) 16%, white); color: inherit; border-radius: 3px;
                 padding: 0 .1rem; box-shadow: inset 2px 0 0 var(--fn-col); }
.fn-none { color: #64748b; font-style: italic; }
.fn-draws { padding: 0 .7rem .3rem; }
.fn-draw summary { cursor: pointer; font-size: .85rem; color: #92400e; }
.fn-draw .fn-text { padding: .2rem 0 .3rem; max-height: 200px; }
.fn-verdict { margin: 0 .7rem .4rem; padding: .3rem .5rem; border-radius: 6px; font-size: .85rem; }
.fn-verdict-larger { background: #ecfdf5; color: #065f46; }
.fn-verdict-smaller { background: #eff6ff; color: #1e40af; }
.fn-verdict-indistinguishable { background: #fffbeb; color: #92400e; }
.fn-cursor { display: inline-block; width: .5em; height: 1em; background: #94a3b8; vertical-align: text-bottom;
             animation: fn-blink 1s step-end infinite; margin-left: 1px; }
@keyframes fn-blink { 50% { opacity: 0; } }
""" + "".join(f".fn-col-{name} {{ --fn-col: {colour}; }}\n" for name, colour in COLUMN_COLOURS.items()) + """
.fn-presets button { text-align: left; }
.fn-preset-note { font-size: 1rem; color: #475569; }
/* Preset buttons are read from the back of a room: body size, wherever the preset strip sits. */
button[id^="fn-preset-"] { font-size: var(--text-md) !important; }
/* Toasts at the bottom right: a message never covers the model bar or the template picker at the top. */
.toast-wrap { top: auto !important; bottom: var(--size-3); }
/* No sideways scrolling on a phone. The row of tab names must not ask for its full width (else the page grows to
   fit every name, and Gradio, seeing room for them all, never moves the last ones into its "more" menu), and a
   wide table scrolls inside its own box instead of widening the page. */
#fn-tabs .tab-container { contain: inline-size; }
.table-container { contain: inline-size; max-width: 100%; overflow-x: auto; }
""" + PRESENT_CSS


# Theme colours darkened for a contrast of at least 4.5:1: helper text (Soft's is slate-400, 2.5:1 on its
# background), labels on their tinted badges (indigo-500 on indigo-100, 3.6:1), white on the primary button (4.47:1).
TEXT = dict(body_text_color_subdued="*neutral_600", block_label_text_color="*primary_700",
            block_title_text_color="*primary_700", button_primary_background_fill="*primary_600",
            button_primary_background_fill_hover="*primary_700", button_primary_border_color="*primary_600",
            button_primary_border_color_hover="*primary_700",
            # an unticked box must show on a projector: slate 500 on white is 4.8:1 (the theme's own is 1.1:1)
            checkbox_border_color="*neutral_500", checkbox_border_width="1.5px")


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
                          text_size=gr.themes.sizes.text_lg,  # 16 px body text, 14 px helper text
                          font=["Inter", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                          font_mono=["JetBrains Mono", "ui-monospace", "monospace"]).set(**TEXT)  # no web fonts


def launch_options() -> dict:
    """Keyword arguments for ``demo.launch`` that give the page its look."""
    return {"theme": theme(), "css": CSS}
