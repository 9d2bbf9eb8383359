import subprocess
import sys


def test_importing_the_api_does_not_import_torch() -> None:
    code = ("import sys, api.app, api.cli; from api.app import create_app; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
