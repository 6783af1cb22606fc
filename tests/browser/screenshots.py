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
from tests.reliability.service import WRITE_KEY, bearer, start_service, stop_service


def simulate_traffic(base: str) -> None:
    """An experiment with simulated users of the demo world, so the experiments page and
    the user page's impressions have something to show."""
    import time

    import httpx

    from pipelines.demo_world import generate_world
    from pipelines.simulate import FeedClient, simulate

    experiment = {
        "name": "model-vs-popular",
        "variants": [
            {"name": "model", "share": 0.5},
            {"name": "popular", "share": 0.5, "ranker": "popularity"},
        ],
    }
    response = httpx.post(f"{base}/v1/experiments", json=experiment, headers=bearer(WRITE_KEY))
    response.raise_for_status()
    time.sleep(1.0)  # the workers follow the running experiment within a second
    world = generate_world(seed=7, scale=0.2)  # the world build_console_home trained
    simulate(FeedClient(base, api_key=WRITE_KEY), world, world.users["user_id"].tolist()[:120])
    time.sleep(1.5)  # impressions reach the store within a second


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
            simulate_traffic(service.base)
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
