"""Built-in executors, registered through ``pipekit_executors`` like any plugin."""
