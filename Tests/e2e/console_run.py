"""The operator console, driven in headless Chromium during the end-to-end run, as an operator would: sign in with the
operator token, read the figures, find the erasure that needs attention (e2e-billing failed it), press Retry, and
watch it complete. What the browser saw, and what the APIs said just before and after, is kept for the suite to
assert on (test_console.py); screenshots go to <run folder>/screenshots/. If the browser part fails, the erasure is
retried through the API so that the rest of the run goes on, and the failure is kept for the suite to report."""
import os
import time
import traceback

from lethe_demo.http_client import bearer, expect, http
from lethe_demo.launcher import say

# Figures of the overview (data-metric) and how to get each from the services' APIs.
FIGURES = ("tenants", "participants", "erasures-open", "erasures-needs-attention", "erasures-completed",
           "accounts-held", "audit-entries", "dead-letters")


class ConsoleRun:
    def __init__(self, system, tenant_id):
        self.system = system
        self.tenant_id = tenant_id
        self.screenshots = os.path.join(system.run_dir, "screenshots")
        self.done = False
        self.erasure_id = None
        self.figures = {}  # metric → (API before, shown, API after)
        self.status_after_retry = None  # the status the erasure page showed at the end
        self.flash_after_retry = None
        self.participant_outcomes = {}  # participant → outcome on the erasure page at the end
        self.retried_by_api = False
        self.export = None  # (status, Content-Disposition, lines, (audit entries the API counted before, after))
        self.error = None
        self.shots = []

    def step(self):
        """Called while the run waits for the erasures: once the tenant's erasure needs attention, the browser part."""
        if self.done:
            return
        waiting = self.admin_get("/v1/erasures?status=needs-attention")["erasures"]
        mine = [e for e in waiting if e["tenantId"] == self.tenant_id]
        if not mine:
            return
        self.done = True
        self.erasure_id = mine[0]["id"]
        say(f"console: erasure {self.erasure_id[:8]} of {self.tenant_id} needs attention; driving the console in Chromium")
        try:
            self.drive()
        except Exception:
            self.error = traceback.format_exc(limit=6)
            say(f"console: the browser part failed; retrying the erasure through the API instead\n{self.error}")
            expect(http("POST", self.executor(f"/v1/erasures/{self.erasure_id}/retry"),
                        headers=bearer(self.system.admin_token)), 200, "retry through the API")
            self.retried_by_api = True

    def drive(self):
        from browser import chromium  # imported here: a missing Chromium is this part's failure, not the run's
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.wait import WebDriverWait

        os.makedirs(self.screenshots, exist_ok=True)
        driver = chromium()
        try:
            console = self.system.url("operator-console")
            driver.get(console + "/")
            assert driver.current_url.startswith(console + "/login"), f"not sent to sign in: {driver.current_url}"
            driver.find_element(By.ID, "token").send_keys(self.system.admin_token)
            driver.find_element(By.CSS_SELECTOR, "[data-action=sign-in]").click()
            WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "summary"))
            before = self.api_figures()
            shown = {name: self.shown(driver, name) for name in FIGURES}
            after = self.api_figures()
            self.figures = {name: (before[name], shown[name], after[name]) for name in FIGURES}
            self.shoot(driver, "console-overview.png")
            # The audit export, downloaded with the browser's session as its link would.
            cookie = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
            export = http("GET", console + "/audit/export", headers={"Cookie": cookie})
            entries_after = self.admin_get("/v1/audit/verify")["entries"]
            self.export = (export.status, export.header("content-disposition") or "",
                           [line for line in export.body.decode().splitlines() if line],
                           (int(before["audit-entries"]), entries_after))

            row = driver.find_element(By.CSS_SELECTOR, f"tr[data-erasure='{self.erasure_id}']")
            row.find_element(By.CSS_SELECTOR, "button[data-action=retry]").click()
            # The click returns once the form is sent, not always once the answer's page is loaded.
            WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "erasure"))
            flash = driver.find_elements(By.CSS_SELECTOR, "[data-metric=flash]")
            self.flash_after_retry = flash[0].text if flash else None
            deadline = time.monotonic() + 90
            while True:
                section = driver.find_element(By.ID, "erasure")
                self.status_after_retry = section.get_attribute("data-status")
                if self.status_after_retry == "completed" or time.monotonic() > deadline:
                    break
                time.sleep(1)
                driver.refresh()
            self.participant_outcomes = {
                row.get_attribute("data-participant"): row.find_elements(By.TAG_NAME, "td")[1].text
                for row in driver.find_elements(By.CSS_SELECTOR, "#erasure tr[data-participant]")}
            self.shoot(driver, "console-erasure-after-retry.png")
            driver.get(console + "/")
            self.shoot(driver, "console-overview-after-retry.png")
            say(f"console: the erasure shows {self.status_after_retry} after Retry; screenshots in {self.screenshots}")
        finally:
            driver.quit()

    def shoot(self, driver, name):
        path = os.path.join(self.screenshots, name)
        # The whole page: the window is as tall as the document.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, max(900, min(int(height) + 40, 6000)))
        driver.save_screenshot(path)
        self.shots.append(path)

    @staticmethod
    def shown(driver, metric):
        from selenium.webdriver.common.by import By
        elements = driver.find_elements(By.CSS_SELECTOR, f"[data-metric='{metric}']")
        return elements[0].text.strip() if elements else None

    # -- what the APIs say
    def api_figures(self):
        counts = self.admin_get("/v1/erasures/counts")
        apps = expect(http("GET", self.system.url("pdr-reporter") + "/v1/apps",
                           headers=bearer(self.system.admin_token)), 200, "pdr-reporter apps").json()["apps"]
        tenants = expect(http("GET", self.system.gateway + "/v1/tenants", headers=bearer(self.system.admin_token)),
                         200, "gateway tenants").json()["tenants"]
        return {
            "tenants": str(len(tenants)),
            "participants": str(len(self.admin_get("/v1/participants")["declared"])),
            "erasures-open": str(counts["open"]),
            "erasures-needs-attention": str(counts["needsAttention"]),
            "erasures-completed": str(counts["completed"]),
            "accounts-held": str(sum(app["accountsHeld"] for app in apps)),
            "audit-entries": str(self.admin_get("/v1/audit/verify")["entries"]),
            "dead-letters": str(self.dead_letters()),
        }

    def dead_letters(self):
        """Records on the run's dead-letter topics, from the broker's watermarks (as the console counts them)."""
        from confluent_kafka import Consumer, TopicPartition
        consumer = Consumer({"bootstrap.servers": self.system.broker, "group.id": "e2e-console-watermarks"})
        try:
            topics = consumer.list_topics(timeout=10).topics
            total = 0
            for name, topic in topics.items():
                if name.startswith(self.system.namespace + ".") and name.endswith(".dlq"):
                    for partition in topic.partitions:
                        low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
                        total += max(0, high - low)
            return total
        finally:
            consumer.close()

    def executor(self, path):
        return self.system.url("erasure-executor") + path

    def admin_get(self, path):
        return expect(http("GET", self.executor(path), headers=bearer(self.system.admin_token)), 200,
                      f"executor {path}").json()
