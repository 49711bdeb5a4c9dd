import subprocess
import sys
from pathlib import Path

from ctloop import __version__

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "ctloop")


def test_console_script_and_module_report_the_package_version():
    for command in ([CONSOLE_SCRIPT], [sys.executable, "-m", "ctloop"]):
        out = subprocess.run(command + ["--version"], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"ctloop {__version__}"
