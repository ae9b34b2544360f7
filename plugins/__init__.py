"""zoo's built-in plugins. Installed as the import package ``zoo_plugins`` and registered via entry points."""
