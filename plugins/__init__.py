"""zoo's built-in plugins, one subpackage per kind: ``architectures``, ``transforms``, ``strategies`` (resize
strategies) and ``sources``. Installed as the import package ``zoo_plugins``; ``zoo.plugin_host.BUILTIN_PLUGINS``
lists the modules zoo registers."""
