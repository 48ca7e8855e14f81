"""What a shop page pays for the customer widget, in a real browser (Debian's chromium, headless): requests and
bytes before the launcher is drawn, then after opening it until the panel's input is ready, and the milliseconds
each takes; beside it the Gradio staff page of the same app (the framework the customer page used to be), to the
moment its question box is on screen. Appends to benchmarks/RESULTS.md.

    python benchmarks/widget_weight.py --base http://127.0.0.1:7860 --staff-password ...
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
RESULTS = Path(__file__).with_name("RESULTS.md")


class Traffic:
    def __init__(self, page) -> None:
        self.requests = 0
        self.bytes = 0
        page.on("requestfinished", self._finished)

    def _finished(self, request) -> None:
        sizes = request.sizes()
        self.requests += 1
        self.bytes += sizes["responseBodySize"] + sizes["responseHeadersSize"]

    def take(self) -> tuple[int, int]:
        taken = (self.requests, self.bytes)
        self.requests, self.bytes = 0, 0
        return taken


def measure(base: str, password: str, username: str, runs: int) -> dict[str, list[tuple[int, int, float]]]:
    found: dict[str, list[tuple[int, int, float]]] = {"shop page + launcher": [], "open panel": [], "gradio": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        for _ in range(runs):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            # The example shop page also frames the panel (the iframe fallback): not what a shop with the script
            # tag loads, so it is left out (the widget's own frame is /chat/?embedded=1 and is not matched).
            page.route("**/chat/", lambda route: route.abort())
            traffic = Traffic(page)
            started = time.perf_counter()
            page.goto(f"{base}/embed")
            page.locator("#care-widget button.launcher").wait_for()
            page.wait_for_load_state("networkidle")
            found["shop page + launcher"].append((*traffic.take(), (time.perf_counter() - started) * 1000))
            started = time.perf_counter()
            page.locator("#care-widget button.launcher").click()
            page.frame_locator("#care-widget iframe").locator("#q").wait_for()
            found["open panel"].append((*traffic.take(), (time.perf_counter() - started) * 1000))
            context.close()

            context = browser.new_context(
                viewport={"width": 1280, "height": 800}, http_credentials={"username": username, "password": password}
            )
            page = context.new_page()
            page.goto(f"{base}/staff/")
            page.get_by_label("username").fill(username)
            page.get_by_label("password").fill(password)
            page.keyboard.press("Enter")
            page.locator("#staff-question textarea").wait_for()
            page.wait_for_load_state("networkidle")
            traffic = Traffic(page)
            started = time.perf_counter()
            page.reload()
            page.locator("#staff-question textarea").wait_for()
            page.wait_for_load_state("networkidle")
            found["gradio"].append((*traffic.take(), (time.perf_counter() - started) * 1000))
            context.close()
        browser.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:7860")
    parser.add_argument("--staff-username", default="staff")
    parser.add_argument("--staff-password", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()
    found = measure(args.base.rstrip("/"), args.staff_password, args.staff_username, args.runs)
    lines = [
        f"\n## {datetime.now(UTC).isoformat(timespec='seconds')} customer widget weight (benchmarks/widget_weight.py)",
        f"- machine {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; headless chromium on the same machine as the app; {args.runs} runs, median",
        f"- command: `python benchmarks/widget_weight.py --base {args.base} --runs {args.runs}`",
        "",
        "| what | requests | kB transferred | ms until ready |",
        "|---|---|---|---|",
    ]
    names = {
        "shop page + launcher": "example shop page with the widget's script (launcher drawn, page idle)",
        "open panel": "opening the widget (panel framed, input ready)",
        "gradio": "Gradio staff page of the same app, reloaded after login, warm browser cache (question box ready)",
    }
    for key, label in names.items():
        runs = sorted(found[key], key=lambda run: run[2])
        requests, size, ms = runs[len(runs) // 2]
        lines.append(f"| {label} | {requests} | {size / 1000:.1f} | {ms:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
