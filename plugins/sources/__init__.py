"""Sources: checkpoint formats zoo's own resolver does not read, through the ``resolve_source`` hook.

``onnx_source`` is a plugin of its own. ``gguf_reader`` and ``timm_reader`` are read through the hooks of the
``llama`` and ``vit`` plugins, which have served them from the start (their plugin names, and what
``ZOO_DISABLE_PLUGINS`` turns off, stay as they were)."""
