"""Export of converted networks to other formats: NIR (:func:`export_nir`, :func:`import_nir`).

The ``nir`` package is imported only when a function here is called (``pip install
'snntorch-weighted[nir]'``).
"""

from .from_nir import import_nir
from .to_nir import NIRExportError, export_nir

__all__ = ["NIRExportError", "export_nir", "import_nir"]
