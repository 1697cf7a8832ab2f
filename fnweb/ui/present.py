"""Presentation mode: one toggle that makes every text on the page larger, for a projector at the back of a room.

The toggle is a button that runs in the browser only (no server round trip): it puts
the class ``fn-present`` on the page's root element and remembers the choice in the
browser's local storage, so a reload keeps it. Gradio declares its theme's text
sizes as CSS variables on ``:root``, and every derived size (labels, inputs, buttons,
tables) is computed from them on that same element; so ``:root.fn-present`` only has
to redeclare the base sizes (``PRESENT_SIZES``) and the root font size (which the
app's own rem-based styles follow) for the whole page to grow together.

It knows nothing about tabs, forms or models.
"""

from __future__ import annotations

import gradio as gr

CLASS = "fn-present"
STORAGE_KEY = "fnweb-present"
# The theme's text sizes in presentation mode (the normal ones are gr.themes.sizes.text_lg: 10 ... 28 px).
PRESENT_SIZES = {"xxs": 13, "xs": 15, "sm": 18, "md": 21, "lg": 24, "xl": 30, "xxl": 36}
ROOT_SCALE = 1.3  # the root font size (100 % = 16 px), which the app's rem-based text follows

CSS = (f":root.{CLASS} {{ font-size: {100 * ROOT_SCALE:.0f}%; "
       + " ".join(f"--text-{name}: {px}px;" for name, px in PRESENT_SIZES.items()) + " }\n"
       ".fn-header-row { flex-wrap: wrap; align-items: center; }\n"
       "#fn-header { flex: 1 1 420px; }\n"
       ".fn-present-toggle { flex-grow: 0 !important; min-width: max-content !important; }\n")

# Runs in the browser: flip the class and remember it. Returns nothing (the event has no outputs).
TOGGLE_JS = f"""() => {{
  const on = document.documentElement.classList.toggle("{CLASS}");
  try {{ localStorage.setItem("{STORAGE_KEY}", on ? "1" : "0"); }} catch (e) {{}}
  const button = document.querySelector("#fn-present-toggle");
  if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
}}"""

# Runs in the browser when the page loads: restore the visitor's last choice.
RESTORE_JS = f"""() => {{
  let on = false;
  try {{ on = localStorage.getItem("{STORAGE_KEY}") === "1"; }} catch (e) {{}}
  document.documentElement.classList.toggle("{CLASS}", on);
  const button = document.querySelector("#fn-present-toggle");
  if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
}}"""


def build_presentation_toggle(demo: gr.Blocks) -> gr.Button:
    """The toggle button (where it is called) and its browser-side events; ``demo`` restores the choice on load."""
    button = gr.Button("Presentation mode", size="sm", variant="secondary", elem_id="fn-present-toggle",
                       elem_classes="fn-present-toggle")
    button.click(None, None, None, js=TOGGLE_JS, queue=False, api_visibility="private", show_progress="hidden")
    demo.load(None, None, None, js=RESTORE_JS, queue=False, api_visibility="private", show_progress="hidden")
    return button
