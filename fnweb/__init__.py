"""fnweb: find functional networks in a language model, look at them, and use them.

The engine lives in this package and imports no Gradio: the CLIs, the tests and
the web app (``fnweb.ui``) all call the same functions.

What varies along an axis lives in one table, one record per entry; the code reads the
records and does not branch on their names:

- architectures: ``ARCHITECTURES`` in ``fnweb/archs.py`` (where a family keeps its
  decoder blocks, down-projection, MLP and default LoRA targets), and ``OUTPUT_HEADS``
  there (its final norm and unembedding, for direct effects);
- capture sites: ``SITES`` in ``fnweb/archs.py`` (the hooked module, input or output,
  width, the down-projection's weight axis, bias, unit names), hooked only through
  ``hook_site``;
- thresholds: ``THRESHOLDS`` in ``fnweb/thresholds.py`` (default, valid range, the
  function, CLI flag and help);
- metrics: ``METRICS`` in ``fnweb/metrics.py`` (labels, digits, scale, which way is
  better, the per-token computation); experiments pick theirs in
  ``LESION_METRICS`` / ``CURVE_METRICS`` (``fnweb/experiment_results.py``);
- interventions: ``INTERVENTIONS`` in ``fnweb/interventions.py`` (which channels it
  changes and by what factor; masks are ``x * keep + add`` per layer), and
  ``PRESERVE_SCOPES`` in ``fnweb/masks.py`` (which layers a preserve edits);
- tasks: ``TASKS`` in ``fnweb/tasks.py`` (where a labelled task's items come from, how
  they are asked) and ``SCORINGS`` there (how an answer is judged, and chance).

Each file format has one home: templates ``fnweb/templates.py``; run folders, their file
names and ``mask.json`` ``fnweb/finetune/runs.py``; experiment results
``fnweb/experiment_results.py``; model cards ``fnweb/hubcard.py`` (templates) and
``fnweb/finetune/card.py`` (runs, local and Hub). Users' files are read, and every file
written atomically, through ``fnweb/io.py``; what a model, dataset or repo name stands
for (the embedded model, a built-in set, a path, a Hub id) is ``fnweb/ids.py``'s.

The web app is ``fnweb.ui`` (its tabs in ``fnweb/ui/__init__.py``'s ``TABS``); the
README's "Where things live" maps every module.
"""

__version__ = "0.1.0"
