"""Sharing one learngene: ``zoo learngene export`` writes it as a folder, ``import`` (or ``add``) reads one back.

The folder is a Hugging Face Hub repository as it is (``hf upload ORG/NAME FOLDER .``)::

    README.md                 model card: what it is, how to use it (YAML front matter: library_name zoo)
    manifest.json             {"format": "zoo-learngene", "files": {path: {sha256, size}}}: every other part
    learngene.json            metadata, lineage, the gene table, assets, the content sha256
    genes/<gene>.safetensors  each gene's bytes exactly as the registry stores them (coeffs, mean, std)
    assets/<file>             tokenizer files and the like
    calibration.safetensors   importance scores, when the learngene was calibrated

A gene file is the registry's own bytes, so its sha256 is the gene's sha256 in every registry it passes through.
A learngene's *content sha256* covers everything but its name, creation time, zoo version and parent link; an
import of content already stored under that name is a no-op.

An artifact is untrusted input. Only JSON and safetensors are read (never pickle); every file an import stores is
named in the manifest under a plain relative path, must resolve inside the artifact (or, for a Hub snapshot, the
cache's blob folder), and must have its declared size and sha256; each safetensors header is parsed and checked
against the declared shapes and dtypes within fixed bounds, before the registry is opened for writing. A refused
artifact leaves the registry as it was, to the byte. The README is never read.

Modules: ``layout`` (names, bounds, the content sha256), ``export``, ``check`` (reading an untrusted artifact),
``importer`` (finding one, on disk or the Hub, and storing it).
"""

from .check import Artifact, is_artifact, read_artifact
from .export import Exported, export_learngene, model_card
from .importer import Imported, artifact_folder, find_artifact, import_learngene
from .layout import (CALIBRATION, FORMAT, FORMAT_VERSION, MANIFEST, METADATA, README, content_sha256,
                     stored_content_sha256)

__all__ = ["Artifact", "CALIBRATION", "Exported", "FORMAT", "FORMAT_VERSION", "Imported", "MANIFEST", "METADATA",
           "README", "artifact_folder", "content_sha256", "export_learngene", "find_artifact", "import_learngene", "is_artifact",
           "model_card", "read_artifact", "stored_content_sha256"]
