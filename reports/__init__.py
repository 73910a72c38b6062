"""Renderers: one module per output, each a function of a saved result and nothing else.

``terminal.render(result)`` gives a rich renderable; the HTML renderer comes with the
reports issue. Renderers read ``loadtune.results`` only.
"""
