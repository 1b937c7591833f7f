"""The package root: the public API is importable from it, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys


def test_emocare_is_the_package_roots_public_api():
    import emocare
    from emocare.predict import EmoCare

    assert emocare.EmoCare is EmoCare
    assert "EmoCare" in emocare.__all__


def test_importing_the_package_does_not_import_torch():
    code = "import sys, emocare; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
