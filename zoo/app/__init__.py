"""The application layer: adding learngenes (:mod:`zoo.app.add`), materializing models from them
(:mod:`zoo.app.build`) and the registry's listing (:mod:`zoo.app.learngenes`), with the checks of what a job takes
from the machine (:mod:`zoo.app.resources`). :mod:`zoo.api` is the facade over it."""
