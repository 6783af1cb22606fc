"""Screenshots of every console page for the README, by the same tooling as the browser
tests: the demo world trained, the real service, headless Chromium.

    python -m tests.browser.screenshots docs/console
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.browser.browser import chromium, console_errors
from tests.browser.test_console_browser import Console, build_console_home, sign_in
from tests.reliability.service import WRITE_KEY, start_service, stop_service


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory for the PNG files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="console-shots-") as tmp:
        home = Path(tmp) / "home"
        reports = build_console_home(home)
        service = start_service(
            home, Path(tmp) / "run", env={"RECSYS_REPORTS_DIR": str(home / "reports")}
        )
        try:
            console = Console(service, home, reports)
            with chromium(width=1366, height=900) as driver:
                sign_in(driver, console, WRITE_KEY)
                for name, path in console.pages().items():
                    if name == "find-user":
                        continue
                    driver.get(console.url(path))
                    errors = console_errors(driver)
                    if errors:
                        raise RuntimeError(f"{path}: {errors}")
                    target = args.out / f"{name}.png"
                    driver.save_screenshot(str(target))
                    print(f"{target}  ({path})")
        finally:
            stop_service(service)


if __name__ == "__main__":
    main()
