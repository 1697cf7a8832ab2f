"""The page's look without a browser: heatmap colours, the presentation-mode sizes, the theme's text colours.

(The browser test tests/test_look_browser.py measures contrast, type size and width on the page itself.)
"""

from __future__ import annotations

from fnweb import plots
from fnweb.templates import Template
from fnweb.ui import present, theme


def luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in rgb]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_categorical_palette_is_distinct_and_stands_out_on_white():
    assert len(set(c.lower() for c in plots.PALETTE)) == len(plots.PALETTE) == 24
    # Every colour at least 1.9:1 against white (Plotly's pale yellows and greens were about 1.2:1).
    assert min(1.05 / (luminance(c) + 0.05) for c in plots.PALETTE) > 1.9


def test_one_component_cells_are_plainly_coloured_from_a_single_member():
    t = Template(layers=[0, 1], width=8, components={0: {0: [0, 1, 2], 1: [7]}})
    heat = plots.membership_heatmap(t, component=0, max_bins=2).data[0]  # bins of 4 neurons
    assert heat.zmax == 3  # the fullest bin is the full colour, not a bin of 4 that no component fills
    low, high = heat.colorscale[0][1], heat.colorscale[-1][1]
    assert high == plots.colour(0) and low == plots._tint(plots.colour(0), plots.SINGLE_FLOOR)
    assert luminance(low) < 0.7  # a one-member cell is tinted, not near-white (#e8eefc was 0.85)


def test_presentation_mode_redeclares_every_text_size_larger():
    for name, px in present.PRESENT_SIZES.items():
        normal = int(getattr(theme.theme(), f"text_{name}").removesuffix("px"))
        assert px > normal and f"--text-{name}: {px}px;" in present.CSS
    assert present.CSS in theme.CSS

