"""fnweb: find functional networks in a language model, look at them, and use them.

The engine lives in this package and imports no Gradio: the CLIs, the tests and
the web app (``fnweb.ui``) all call the same functions.
"""

__version__ = "0.1.0"
