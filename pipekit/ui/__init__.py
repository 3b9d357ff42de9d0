"""``pipekit ui``: a local web UI over the store (see docs/ui.md and docs/ui-api.md).

The ASGI app (:mod:`pipekit.ui.app`, starlette + uvicorn from the ``ui`` extra) serves the
pages in ``static/`` and a JSON API (:mod:`pipekit.ui.api`); what it changes goes through
:mod:`pipekit.runs` (:mod:`pipekit.ui.actions`).
"""
