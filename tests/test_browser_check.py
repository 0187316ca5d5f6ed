"""The browser check finds what a reader would see broken: here, a figure
squeezed into the text column so far that its text cannot be read."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                                reason="Debian's chromium and chromium-driver are not installed")


def png(path: Path, width: int, height: int = 40) -> str:
    from PIL import Image
    Image.new("RGB", (width, height), "white").save(path)
    return path.name


def page(body: str) -> str:
    return f'<!DOCTYPE html><html><body><main><div style="width: 600px">{body}</div></main></body></html>'


def test_a_wide_figure_shown_in_a_narrow_column_is_a_problem_and_a_fitting_one_is_not(tmp_path):
    html = tmp_path / "html"
    (html / "_static").mkdir(parents=True)
    wide, narrow = png(html / "wide.png", 1500), png(html / "narrow.png", 560)
    figure = '<div class="cell_output"><img src="{}" style="max-width: 100%"></div>'
    (html / "squeezed.html").write_text(page(figure.format(wide)))
    (html / "fits.html").write_text(page(figure.format(narrow)))
    # a retina figure: twice the pixels, meant to be shown at the width it names
    sharp = png(html / "sharp.png", 1120)
    (html / "retina.html").write_text(page(f'<div class="cell_output"><img src="{sharp}" width="560" '
                                           'style="max-width: 100%"></div>'))
    (html / "retina-myst.html").write_text(page(f'<div class="cell_output"><img src="{sharp}" '
                                                'style="width: 560px; height: 20px; max-width: 100%"></div>'))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "browser_check.py"), str(html),
                           "--screenshots", str(tmp_path / "shots")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    findings = done.stdout.splitlines()
    assert [line.split(":")[0] for line in findings if "small figure" in line] == ["squeezed.html"]
    assert "1500 px wide, shown at 40%" in done.stdout
