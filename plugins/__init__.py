"""pipekit's built-in plugins, installed as ``pipekit_plugins``.

Each module is an ordinary entry point of the ``pipekit`` group (see ``setup.cfg``), loaded
exactly as a third-party plugin is; the core never imports this package.
"""
