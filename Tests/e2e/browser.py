"""Headless Chromium for the suite's browser tests: Debian's `chromium` driven through its `chromium-driver`, both
named explicitly so that Selenium never tries to download a browser or a driver (nothing but apt and pip is
reachable on CI machines). Options: `--headless=new` (no display), `--no-sandbox` (CI runs as root, where Chromium's
sandbox refuses to start), `--disable-dev-shm-usage` (a container's small /dev/shm crashes tabs), `--disable-gpu`
(no GPU), and a laptop-sized window so screenshots look as an operator would see the page."""
import os

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium(width=1400, height=1000):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        raise RuntimeError(f"headless Chromium needs {', '.join(missing)}: apt-get install chromium chromium-driver "
                           "(scripts/install-deps does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
