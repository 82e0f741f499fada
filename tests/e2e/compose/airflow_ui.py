"""A small Selenium page driver for the Airflow 3.3 web UI, for end-to-end tests.

It drives Debian's headless Chromium (``apt-get install chromium chromium-driver``, ``pip install
selenium``) through the React UI that ``airflow api-server`` serves, logged in through the login form of
the FAB auth manager, as a person would. Every wait is explicit (it polls the DOM, never sleeps for a
fixed time), and every failure is an ``AssertionError`` that gives the current URL and the path of a
screenshot taken right then.

What it relies on in the 3.3 UI (checked against apache-airflow 3.3.2 with apache-airflow-providers-fab 3.10):

* Login: ``/`` redirects to the FAB page ``/auth/login/?next=/``: ``form[name=login]`` with
  ``#username``, ``#password`` and an ``input[type=submit]``. A wrong password leaves you there with a
  ``.alert`` ("Invalid login. Please try again."). A good one sets the httpOnly ``_token`` cookie (the
  API's JWT) and redirects into the React app, whose ``[data-testid=nav-sidebar]`` then shows.
* DAG list (``/dags``): an ``h2`` "N Dags" and one ``[data-testid=dag-card]`` per DAG whose
  ``a[data-testid=dag-id]`` links to ``/dags/<dag_id>`` (its text is the display name, so the id is
  read from the link). While the list loads it says "0 dag" above ``.chakra-skeleton`` placeholders, so
  counts are read only once no skeleton is left (and a 0 only once it has held for 2 s).
* DAG page (``/dags/<dag_id>``): ``[data-testid=trigger-dag-button]`` opens a Chakra dialog
  (``[role=dialog][data-scope=dialog][data-state=open]``) holding the "Run Parameters" form. Each
  Param ``p`` is rendered by type: boolean -> a switch ``label#switch:element_p`` around
  ``input[type=checkbox][name=element_p]``; string / integer -> ``input[name=element_p]``; enum ->
  a react-select ``div#element_p`` (a combobox input; menu options ``[id^=react-select-][id*=-option-]``,
  labelled by ``values_display`` when the Param has one; the value sits in a hidden
  ``input[name=element_p]``). Objects and arrays get a code editor, which this driver does not type into.
  "Advanced Options" holds ``input[name=dagRunId]``; ``[data-testid=trigger-dag-submit]`` triggers
  (disabled while the form has errors). A paused DAG also gets an "Unpause <dag> on trigger" checkbox,
  left as the UI sets it: checked, so triggering unpauses the DAG.
* After a trigger the UI shows a toast (``[data-scope=toast][data-part=root]``, ``data-type`` success or
  error) and navigates to ``/dags/<dag_id>/runs/<run_id>``: the new run id is read from that URL.
* Run page: ``[data-testid=header-card]`` holds the run id in an ``h2`` and the run's state in
  ``[data-testid=state-badge]`` ("Queued", "Running", "Success", "Failed"; ``wait_for_run`` returns it
  lower-cased); the page refreshes it itself while the run is active. The Task Instances table below has
  one row per task instance with ``[data-testid=table-cell-task_display_name]`` and
  ``[data-testid=table-cell-state]``.

REST API: ``api(path)`` runs ``fetch("/api/v2" + path)`` inside the logged-in page, so the request carries
the ``_token`` cookie that the FAB login set, the way the UI's own requests do; ``token`` is the same JWT
for ``Authorization: Bearer`` requests from outside the browser. ``submit_trigger`` uses the API only as
a fallback: if the UI does not navigate to the new run, the run id is the one run that the API lists for
the DAG after the click and did not list before it.

    with AirflowUI("http://127.0.0.1:8080", tmp_path / "shots") as ui:
        ui.login("admin", password)
        ui.open_trigger_form("lecture_to_pdf")
        ui.set_param("keep_byproducts", True)
        run_id = ui.submit_trigger()
        assert ui.api(f"/dags/lecture_to_pdf/dagRuns/{run_id}")["conf"]["keep_byproducts"] is True
        state = ui.wait_for_run("lecture_to_pdf", run_id, timeout=600)
        assert state == "success", (state, ui.task_states("lecture_to_pdf", run_id))
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, unquote, urlsplit

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

log = logging.getLogger(__name__)
T = TypeVar("T")
_failure_numbers = itertools.count(1)  # failure screenshots of one test process never overwrite each other

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1400,1000")
TERMINAL_RUN_STATES = ("success", "failed")
# Exceptions that mean "the React tree re-rendered under us, or is not there yet": poll again.
_RETRY = (StaleElementReferenceException, NoSuchElementException, ElementClickInterceptedException,
          ElementNotInteractableException)
DIALOG = "[role=dialog][data-scope=dialog][data-state=open]"
SUBMIT = "[data-testid=trigger-dag-submit]"


def _css_string(text: str) -> str:
    """``text`` as a quoted CSS string (for attribute selectors)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AirflowUI:
    """One headless Chromium session against one Airflow web UI."""

    def __init__(self, base_url: str, screenshots: Path, timeout: float = 60, *,
                 chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER) -> None:
        """Start Chromium and open ``base_url`` (which shows the FAB login form until ``login()``)."""
        self.base_url = base_url.rstrip("/")
        self.screenshots = Path(screenshots)
        self.screenshots.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._dag_id: str | None = None
        self._params: dict[str, tuple[Any, str]] = {}  # Params set in the open form: value, as the form shows it
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try the internet
        self._profile = tempfile.mkdtemp(prefix="airflow-ui-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
        service = Service(chromedriver, service_args=["--log-level=WARNING"],
                          log_output=str(self.screenshots / "chromedriver.log"))
        started = time.monotonic()
        try:
            self.driver = webdriver.Chrome(service=service, options=options)
        except BaseException:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(timeout)
        self.driver.set_script_timeout(timeout)
        with contextlib.suppress(WebDriverException):  # the start page (the login form); login() checks it
            self.driver.get(self.base_url + "/")
        log.info("chromium started in %.1fs", time.monotonic() - started)

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> AirflowUI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        try:
            return self.driver.current_url
        except WebDriverException as exc:
            return f"<unknown: {exc.__class__.__name__}>"

    def screenshot(self, name: str) -> Path:
        """Save what the browser window shows as ``screenshots/<name>.png``."""
        path = self.screenshots / (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") + ".png")
        self.driver.save_screenshot(str(path))
        return path

    def _fail(self, message: str) -> NoReturn:
        """Raise an AssertionError that says where the browser is and what it shows."""
        try:
            shot = str(self.screenshot(f"failure-{next(_failure_numbers):02d}-{message[:40]}"))
        except Exception as exc:  # noqa: BLE001 - a crashed browser must not hide the real failure
            shot = f"<none: {exc.__class__.__name__}: {exc}>"
        details = [message, f"  url: {self.url}", f"  screenshot: {shot}"]
        with contextlib.suppress(Exception):  # the console log is a bonus
            errors = [entry["message"] for entry in self.driver.get_log("browser")][-5:]
            if errors:
                details.append("  browser console errors:\n    " + "\n    ".join(errors))
        raise AssertionError("\n".join(details))

    def _wait(self, condition: Callable[[], T], what: str, timeout: float | None = None, poll: float = 0.25) -> T:
        """Poll ``condition`` until it returns something truthy and return that; fail after ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        last: Exception | None = None
        while True:
            try:
                value = condition()
                if value:
                    return value
            except _RETRY as exc:
                last = exc
            if time.monotonic() >= deadline:
                suffix = f" (last error: {last.__class__.__name__})" if last else ""
                self._fail(f"timed out after {self.timeout if timeout is None else timeout:.0f}s waiting for "
                           f"{what}{suffix}")
            time.sleep(poll)

    def _find(self, css: str, root: WebElement | None = None) -> list[WebElement]:
        return (root or self.driver).find_elements(By.CSS_SELECTOR, css)

    def _visible(self, css: str, root: WebElement | None = None) -> WebElement | None:
        return next((e for e in self._find(css, root) if e.is_displayed()), None)

    def _click(self, element: WebElement) -> bool:
        """Click like a user (scrolled to the middle of the window); False when something covers it."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'nearest'})", element)
        try:
            element.click()
        except (ElementClickInterceptedException, ElementNotInteractableException):
            return False
        return True

    def _reveal(self, element: WebElement) -> bool:
        """Open the collapsed accordion section (Run Parameters, Advanced Options) that holds ``element``."""
        if element.is_displayed():
            return True
        region = self.driver.execute_script(
            "const r = arguments[0].closest('[data-scope=accordion][data-part=item-content]');"
            "return r ? r.id : null;", element)
        if region:
            toggle = self._visible(f"button[aria-controls={_css_string(region)}]")
            if toggle is not None and toggle.get_attribute("aria-expanded") != "true":
                self._click(toggle)
        return element.is_displayed()

    def _loading(self) -> bool:
        """Whether the page still shows loading placeholders (while it loads, the DAG list says "0 dag")."""
        return bool(self._find("[data-testid=main-content] .chakra-skeleton"))

    def _count(self, heading: str) -> int | None:
        """N from the page's "N <heading>" title (e.g. "3 Dags"), once the page has loaded."""
        if self._loading():
            return None
        counts = [int(m.group(1)) for h in self._find("[data-testid=main-content] h2")
                  if (m := re.match(rf"^(\d+)\s+{heading}", h.text.strip(), re.IGNORECASE))]
        return counts[0] if counts else None

    def _goto(self, path: str) -> None:
        try:
            self.driver.get(self.base_url + path)
        except TimeoutException:
            self._fail(f"{path} did not load within {self.timeout:.0f}s")

    def _dialog(self) -> WebElement:
        return self._wait(lambda: next((d for d in self._find(DIALOG) if self._find(SUBMIT, d)), None),
                          "the Trigger Dag dialog")

    def _dialog_errors(self) -> list[str]:
        """The form's complaints: "<param>: <error>" for each invalid field, and any alert (a refused trigger)."""
        texts = self.driver.execute_script(
            "const d = document.querySelector(arguments[0]); if (!d) return [];"
            "const text = e => e ? e.innerText.trim() : '';"
            "const fields = Array.from(d.querySelectorAll('[data-scope=field][data-part=root][data-invalid]'))"
            "  .map(f => text(f.querySelector('label')).split('\\n')[0] + ': '"
            "           + (text(f.querySelector('[data-part=error-text]')) || 'invalid'));"
            "const alerts = d.querySelectorAll('[data-testid=error-alert], [role=alert]');"
            "return fields.concat(Array.from(alerts).map(e => text(e).replace(/\\s*\\n\\s*/g, ' ')))"
            "  .filter(Boolean);",
            DIALOG)
        return list(dict.fromkeys(texts))

    def _toasts(self) -> list[tuple[str, str]]:
        """(type, text) of each toast on screen: type is success, error, info, ..."""
        return [(t.get("type") or "", t.get("text") or "") for t in self.driver.execute_script(
            "return Array.from(document.querySelectorAll('[data-scope=toast][data-part=root]'))"
            ".map(e => ({type: e.getAttribute('data-type'), text: e.innerText.trim()}));")]

    # -- REST API through the logged-in browser -----------------------------------------------------

    @property
    def token(self) -> str:
        """The JWT that the FAB login put in the ``_token`` cookie: ``Authorization: Bearer <token>``."""
        cookie = self.driver.get_cookie("_token")
        if not cookie:
            self._fail("no _token cookie: not logged in")
        return cookie["value"]

    def api(self, path: str) -> Any:
        """GET ``/api/v2<path>`` from inside the page (it carries the login's cookie); the decoded JSON."""
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {credentials: 'same-origin', headers: {Accept: 'application/json'}})"
            ".then(r => r.text().then(t => done({status: r.status, body: t})))"
            ".catch(e => done({status: 0, body: String(e)}));", self.base_url + "/api/v2" + path)
        if result["status"] != 200:
            self._fail(f"GET /api/v2{path} answered {result['status']}: {result['body'][:500]}")
        return json.loads(result["body"])

    def _run_ids(self, dag_id: str) -> set[str] | None:
        try:
            runs = self.api(f"/dags/{quote(dag_id, safe='')}/dagRuns?limit=100&order_by=-run_after")
        except AssertionError:
            return None
        return {r["dag_run_id"] for r in runs.get("dag_runs", [])}

    # -- pages ---------------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> None:
        """Log in through the FAB login form that ``/`` redirects to; fails unless the React UI opens."""
        started = time.monotonic()
        self._goto("/")
        self._wait(lambda: self._visible("form[name=login] #username"), "the FAB login form (#username)")
        self.screenshot("login-form")
        form = self._find("form[name=login]")[0]
        for field, value in (("#username", username), ("#password", password)):
            element = self._find(field, form)[0]
            element.clear()
            element.send_keys(value)
        self._find("input[type=submit], button[type=submit]", form)[0].click()

        def landed() -> bool:
            if "/auth/login" in urlsplit(self.url).path:
                alert = self._visible(".alert")
                text = " ".join(line for line in (alert.text.splitlines() if alert else []) if line.strip("× "))
                if text:
                    self._fail(f"login as {username!r} refused: {text!r}")
                return False
            return self._visible("[data-testid=nav-sidebar]") is not None

        self._wait(landed, f"the UI after logging in as {username!r}")
        if not self.driver.get_cookie("_token"):
            self._fail("logged in, but the FAB login set no _token cookie")
        with contextlib.suppress(WebDriverException):
            self.driver.get_log("browser")  # drop the 401s of the logged-out pages from later failure reports
        log.info("logged in as %s in %.1fs", username, time.monotonic() - started)

    def dag_ids(self) -> list[str]:
        """The ids of the DAGs on the DAG list page (its first page), in the order it shows them."""
        started = time.monotonic()
        self._goto("/dags")

        empty_since: list[float] = []

        def listed() -> list[str] | None:
            count = self._count("dag")
            if count is None:
                return None
            links = self._find("a[data-testid=dag-id]")
            if count and not links:
                return None
            if not count:  # "0 Dags" must hold a while: it is also what the page says while it loads
                empty_since.append(time.monotonic())
                return ["-"] if empty_since[-1] - empty_since[0] > 2 else None
            return [unquote(urlsplit(a.get_attribute("href")).path.rsplit("/dags/", 1)[1]) for a in links]

        ids = [i for i in self._wait(listed, "the DAG list (an 'N Dags' heading and its DAG cards)") if i != "-"]
        log.info("DAG list (%d) in %.1fs", len(ids), time.monotonic() - started)
        return ids

    def wait_for_dags(self, *dag_ids: str, timeout: float | None = None) -> list[str]:
        """Reload the DAG list until it shows all of ``dag_ids`` (the DAG processor may still be parsing)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            shown = self.dag_ids()
            if not (missing := [d for d in dag_ids if d not in shown]):
                return shown
            if time.monotonic() >= deadline:
                self._fail(f"the DAG list shows {shown}, still without {missing}")
            time.sleep(2)

    def open_trigger_form(self, dag_id: str) -> None:
        """Open the DAG's page and its Trigger dialog, with the Params form."""
        started = time.monotonic()
        self._goto(f"/dags/{quote(dag_id, safe='')}")

        def opened() -> bool:
            if next((d for d in self._find(DIALOG) if self._find(SUBMIT, d)), None):
                return True
            button = self._visible("[data-testid=trigger-dag-button]")
            if button is not None and button.is_enabled():
                self._click(button)
            return False

        self._wait(opened, f"the Trigger button of DAG {dag_id!r} to open the Trigger Dag dialog")
        self._dag_id = dag_id
        self._params = {}
        log.info("trigger form of %s open in %.1fs", dag_id, time.monotonic() - started)

    def _param_shown(self, name: str) -> str | None:
        """What the open form holds for Param ``name``: "true"/"false" for a switch, else the field's value."""
        return self.driver.execute_script(
            "const d = document.querySelector(arguments[0]); if (!d) return null;"
            "const n = CSS.escape('element_' + arguments[1]);"
            "const box = d.querySelector(`input[type=checkbox][name=${n}]`);"
            "if (box) return box.checked ? 'true' : 'false';"
            "const sel = d.querySelector(`div#${n} input[type=hidden][name=${n}]`);"
            "if (sel) return sel.value;"
            "const f = d.querySelector(`input[name=${n}]:not([type=hidden]), textarea[name=${n}]`);"
            "return f ? f.value : null;", DIALOG, name)

    def set_param(self, name: str, value: Any) -> None:
        """Change one Param in the open Trigger form: a boolean switch, an enum select, or a text/number field."""
        dialog = self._dialog()
        key = _css_string(f"element_{name}")

        others_since: list[float] = []

        def field() -> tuple[str, WebElement] | None:
            if found := self._find(f"input[type=checkbox][name={key}]", dialog):
                return "switch", found[0]
            if (found := self._find(f"div[id={key}]", dialog)) and self._find("input[role=combobox]", found[0]):
                return "select", found[0]
            if found := self._find(f"input[name={key}]:not([type=hidden]), textarea[name={key}]", dialog):
                return "text", found[0]
            if not others_since and self._find("[name^=element_], [id^=element_]", dialog):
                others_since.append(time.monotonic())  # the form has rendered, without this Param
            if others_since and time.monotonic() - others_since[0] > 3:
                self._fail(f"the Trigger form has no field for Param {name!r}")
            return None

        def known() -> str:
            return ", ".join(sorted({(e.get_attribute("name") or e.get_attribute("id"))[len("element_"):] for e in
                                     self._find("[name^=element_], [id^=element_]", dialog)}))

        try:
            kind, element = self._wait(field, f"the field of Param {name!r}", timeout=min(self.timeout, 30))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n  Params in the form: {known() or 'none'}") from None
        shown = element.find_element(By.XPATH, "./ancestor::label[1]") if kind == "switch" else element
        self._wait(lambda: self._reveal(shown), f"the field of Param {name!r} to show", timeout=10)

        if kind == "switch":
            want = bool(value)
            label = shown

            def switched() -> bool:
                if element.is_selected() == want:
                    return True
                self._click(label)
                return element.is_selected() == want

            self._wait(switched, f"the switch of Param {name!r} to be {'on' if want else 'off'}", timeout=10)
        elif kind == "select":
            if isinstance(value, list | tuple | set | dict):
                self._fail(f"Param {name!r}: multi-select values are not supported by this driver")
            wanted = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            hidden = self._find(f"input[type=hidden][name={key}]", element)

            def chosen() -> bool:
                if hidden and hidden[0].get_attribute("value") == wanted:
                    return True
                options = [o for o in self._find("[id^=react-select-][id*=-option-]") if o.is_displayed()]
                if not options:
                    self._click(element)  # opens the menu
                    return False
                match = next((o for o in options if o.text.strip() == wanted), None)
                if match is None:
                    self._fail(f"Param {name!r}: no option {wanted!r} in "
                               f"{[o.text.strip() for o in options]}")
                self._click(match)
                return not hidden or hidden[0].get_attribute("value") == wanted

            self._wait(chosen, f"the select of Param {name!r} to hold {wanted!r}", timeout=15)
        else:
            text = json.dumps(value) if isinstance(value, bool) else "" if value is None else str(value)

            def typed() -> bool:
                if element.get_attribute("value") == text:
                    return True
                self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
                element.click()
                element.send_keys(Keys.CONTROL, "a")
                element.send_keys(Keys.DELETE)
                element.send_keys(text)
                return element.get_attribute("value") == text

            self._wait(typed, f"the field of Param {name!r} to hold {text!r}", timeout=15)
            element.send_keys(Keys.TAB)  # blur: number fields commit (and clamp to minimum/maximum) their value then
            if (shown_value := element.get_attribute("value")) != text:
                self._fail(f"Param {name!r}: typed {text!r}, the field turned it into {shown_value!r}")
        error = self.driver.execute_script(
            "const f = arguments[0].closest('[data-scope=field][data-part=root]');"
            "if (!f || !f.hasAttribute('data-invalid')) return null;"
            "const e = f.querySelector('[data-part=error-text]'); return e ? e.innerText.trim() : 'invalid';", element)
        if error is not None:
            self._fail(f"Param {name!r} = {value!r}: the form says {error!r}")
        self._params[name] = (value, self._param_shown(name) or "")

    def submit_trigger(self, run_id: str | None = None) -> str:
        """Click Trigger in the open form (optionally with a chosen run id); return the new run's id."""
        dag_id = self._dag_id
        if dag_id is None:
            self._fail("submit_trigger() before open_trigger_form()")
        started = time.monotonic()
        dialog = self._dialog()
        if run_id is not None:
            def run_id_field() -> WebElement | None:
                found = self._find("input[name=dagRunId]", dialog)
                return found[0] if found and self._reveal(found[0]) else None

            field = self._wait(run_id_field, "the Run ID field under Advanced Options", timeout=15)
            self._click(field)
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.DELETE)
            field.send_keys(run_id)
        before = self._run_ids(dag_id)

        for name, (value, shown) in list(self._params.items()):  # a re-render of the form must not undo them
            if (now := self._param_shown(name)) != shown:
                log.warning("Param %s reads %r again, not %r: setting it once more", name, now, shown)
                self.set_param(name, value)
        invalid_since: list[float] = []

        def enabled() -> WebElement | None:
            button = self._find(SUBMIT, dialog)[0]
            if button.is_enabled():
                return button
            if errors := self._dialog_errors():
                invalid_since.append(time.monotonic())
                if invalid_since[-1] - invalid_since[0] > 2:
                    self._fail(f"the Trigger button stays disabled: the form shows errors: {errors}")
            return None

        button = self._wait(enabled, "the Trigger button of the form to be enabled", timeout=15)
        self.screenshot(f"trigger-form-{dag_id}")
        form_url = self.url
        self._wait(lambda: self._click(button), "the Trigger button to take a click", timeout=15)
        pattern = re.compile(rf"/dags/{re.escape(quote(dag_id, safe=''))}/runs/([^/?#]+)")
        deadline = time.monotonic() + self.timeout

        def triggered() -> str | None:
            if self.url != form_url and (m := pattern.search(self.url)):
                return unquote(m.group(1))
            for kind, text in self._toasts():
                if kind == "error":  # the dialog explains (e.g. "409 Conflict ...") a moment after the toast
                    until = time.monotonic() + 3
                    while not (errors := self._dialog_errors()) and time.monotonic() < until:
                        time.sleep(0.25)
                    self._fail(f"triggering {dag_id!r} failed: {text!r}; the form says: {errors}")
            if time.monotonic() > deadline - self.timeout / 2 and before is not None \
                    and any(kind == "success" for kind, _ in self._toasts()):
                new = (self._run_ids(dag_id) or set()) - before
                if len(new) == 1:  # the UI said it worked but stayed put: ask the API which run is new
                    return new.pop()
            return None

        new_run = self._wait(triggered, f"the run page of the new run of {dag_id!r}")
        if run_id is not None and new_run != run_id:
            self._fail(f"asked for run id {run_id!r}, the UI opened run {new_run!r}")
        log.info("triggered %s run %s in %.1fs", dag_id, new_run, time.monotonic() - started)
        return new_run

    def _run_header(self) -> dict[str, str]:
        return self.driver.execute_script(
            "const h = document.querySelector('[data-testid=header-card]'); if (!h) return {};"
            "const b = h.querySelector('[data-testid=state-badge]');"
            "return {titles: Array.from(h.querySelectorAll('h2')).map(e => e.innerText.trim()).join('\\n'),"
            "        state: b ? b.innerText.trim() : ''};")

    def _open_run(self, dag_id: str, run_id: str) -> None:
        path = f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe=':+')}"
        if urlsplit(self.url).path.rstrip("/") != path:
            self._goto(path)
        self._wait(lambda: run_id in self._run_header().get("titles", "").split("\n"),
                   f"the page of run {run_id!r} of {dag_id!r}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Watch the run's page until its state badge shows a final state: "success" or "failed".

        That is the badge's text ("Success", "Failed") lower-cased, i.e. Airflow's name of the state. The page
        is loaded afresh, so a page left open since the trigger cannot show an old state.
        """
        started = time.monotonic()
        self._goto(f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe=':+')}")
        self._open_run(dag_id, run_id)
        deadline = started + timeout
        seen: list[str] = []
        last_change = time.monotonic()
        while True:
            header = self._run_header()
            state = header.get("state", "") if run_id in header.get("titles", "").split("\n") else ""
            if not seen or seen[-1] != state:
                seen.append(state)
                last_change = time.monotonic()
                log.info("run %s of %s: %s after %.0fs", run_id, dag_id, state or "?", time.monotonic() - started)
            if state.lower() in TERMINAL_RUN_STATES:
                self.screenshot(f"run-{dag_id}-{state.lower()}")
                return state.lower()
            if time.monotonic() >= deadline:
                try:
                    tasks: Any = self.task_states(dag_id, run_id)
                except AssertionError:
                    tasks = "unknown"
                self._fail(f"run {run_id!r} of {dag_id!r} not finished after {timeout:.0f}s; states seen: {seen}; "
                           f"tasks: {tasks}")
            if time.monotonic() - last_change > 60:  # the page refreshes itself; reload in case it stopped
                self.driver.refresh()
                self._open_run(dag_id, run_id)
                last_change = time.monotonic()
            time.sleep(1)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Task id (``id[map index]`` for mapped ones) -> state, from the run page's Task Instances table."""
        self._open_run(dag_id, run_id)
        empty_since: list[float] = []

        def table() -> list[list[str]] | None:
            count = self._count("Task Instance")
            if count is None:
                return None
            rows = self.driver.execute_script(
                "return Array.from(document.querySelectorAll('tr')).filter(r =>"
                " r.querySelector('[data-testid=table-cell-state]')).map(r => {"
                " const c = n => { const e = r.querySelector(`[data-testid=table-cell-${n}]`);"
                "                  return e ? e.innerText.trim() : ''; };"
                " return [c('task_display_name'), c('rendered_map_index'), c('state')]; });")
            if not count:
                empty_since.append(time.monotonic())
                return [["-", "", ""]] if empty_since[-1] - empty_since[0] > 2 else None
            return rows or None

        rows = [r for r in self._wait(table, f"the task instances of run {run_id!r}", timeout=30) if r[0] != "-"]
        return {f"{task}[{index}]" if index else task: state for task, index, state in rows}
