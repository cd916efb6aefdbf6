"""The web portal in a real browser: Debian's Chromium (headless, driven by Playwright) on the
lab's HTTPS origin, with real tiny guests behind it. The tests read what the terminal shows
from xterm's own buffer, and save screenshots of the main pages as artefacts (in pytest's
temporary directory, or in $PORTAL_SCREENSHOT_DIR).

One VM and a one-instance scale set are shared by the module: the tests that change the VM's
state (reset) wait for it to be back at `login:` before they end."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.labharness import LabHarness

pytestmark = pytest.mark.integration
playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
RG_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/web-rg"
VM_ID = f"{RG_ID}/providers/Microsoft.Compute/virtualMachines/web1"
INSTANCE_ID = f"{RG_ID}/providers/Microsoft.Compute/virtualMachineScaleSets/webss/virtualMachines/0"
WEB_LAB = f"""\
subscriptionId: {SUBSCRIPTION}
resourceGroups:
  - name: web-rg
    storageAccounts:
      - name: webdiag
    virtualMachines:
      - name: web1
        image: tiny
        size: {{vcpus: 1, memoryMiB: 256}}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {{enabled: true, storageUri: "https://webdiag.blob.core.windows.net/"}}
    scaleSets:
      - name: webss
        sku: {{capacity: 1}}
        virtualMachineProfile:
          image: tiny
          size: {{vcpus: 1, memoryMiB: 256}}
          adminUsername: azureuser
          adminPassword: "Passw0rd!"
          diagnosticsProfile: {{bootDiagnostics: {{enabled: true}}}}
"""

#: Printed by the tiny image's init once per boot.
BOOT = r"lab: init done"
# The only browser console errors a test may cause: the API's refusals that the page shows.
REFUSED = re.compile(r"Failed to load resource: the server responded with a status of 403")


@pytest.fixture(scope="module")
def web_lab(harness: LabHarness) -> Iterator[LabHarness]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    lab_file = harness.write_lab("web.yaml", WEB_LAB)
    harness.cli("up", str(lab_file))
    try:
        harness.wait_for_log("web1", rb"web1 login: ", timeout=120)
        yield harness
    finally:
        # The harness is shared: the next modules must not find this VM and scale set.
        harness.cli("down", str(lab_file), check=False)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("PORTAL_SCREENSHOT_DIR")
    path = Path(where) if where else tmp_path_factory.mktemp("portal-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox cannot start as root (CI runs as root).
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Portal:
    """A browser tab on the portal, with what its console reported."""

    def __init__(self, lab: LabHarness, browser: Any) -> None:
        self.lab = lab
        # The lab's CA is not in the browser's store; the API's own tests verify it.
        self.context = browser.new_context(ignore_https_errors=True,
                                           viewport={"width": 1280, "height": 800})  # fmt: skip
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.url = f"https://127.0.0.1:{lab.api_port}/"

    def sign_in(self, *token_args: str) -> None:
        """With a `lab token`, through the sign-in page's token box (as scripts do)."""
        token = self.lab.cli("token", *token_args).stdout.strip()
        self.page.goto(self.url)
        self.page.click("summary:has-text('token')")
        self.page.fill("#token", token)
        self.page.click("#token-signin")
        self.page.wait_for_selector("h1:has-text('Resources')")

    def sign_in_as(self, username: str, password: str) -> None:
        """As a lab user, with a username and password (the lab's sign-in authority)."""
        self.page.goto(self.url)
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        self.page.click("#signin")

    def open_vm(self, resource_id: str, tab: str = "overview") -> None:
        self.page.goto(f"{self.url}#/vm{resource_id}/-/{tab}")
        self.page.wait_for_selector("#header-state")

    def screen(self) -> str:
        """Every line of the terminal (scrollback included), as text ("" while the page has
        no terminal yet: just after a click that opens one, `wait_screen` polls on)."""
        text: str = self.page.evaluate(
            """() => { if (!window.labTerminal) return '';
                       const b = window.labTerminal.buffer.active, out = [];
                       for (let i = 0; i < b.length; i++) {
                         out.push(b.getLine(i).translateToString(true)); }
                       return out.join('\\n'); }"""
        )
        return text

    def wait_screen(self, pattern: str, timeout: float = 60, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if len(re.findall(pattern, text)) >= count:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} x{count} not on the terminal: {text[-800:]}")
            time.sleep(0.25)

    def type(self, text: str) -> None:
        self.page.click("#terminal")
        self.page.keyboard.type(text, delay=20)

    def console_login(self) -> None:
        """From wherever the console is, to a fresh shell prompt."""
        self.wait_screen(r"login: |\$ ", timeout=90)
        if not re.search(r"login: \s*$", self.screen().rstrip() + " "):
            self.type("exit\n")
        self.type("\n")
        self.wait_screen(r"login: ", timeout=30)
        marks = len(re.findall(r"\$ ", self.screen()))
        self.type("azureuser\n")
        self.wait_screen(r"Password: ", timeout=30)
        self.type("Passw0rd!\n")
        self.wait_screen(r"\$ ", timeout=30, count=marks + 1)

    def confirm(self) -> None:
        self.page.click("#confirm-yes")

    def close(self) -> list[str]:
        self.context.close()
        return self.errors


@pytest.fixture
def portal(web_lab: LabHarness, browser: Any) -> Iterator[Portal]:
    p = Portal(web_lab, browser)
    try:
        yield p
    finally:
        errors = p.close()
    assert errors == [], f"browser console errors: {errors}"


def test_sign_in_and_resource_list(portal: Portal, shots: Path) -> None:
    page = portal.page
    page.goto(portal.url)
    page.wait_for_selector("#username")
    page.screenshot(path=str(shots / "01-sign-in.png"))
    portal.lab.cli("user", "add", "alice", "--password", "Alice-pass-1", "--role", "Contributor",
                   "--scope", f"/subscriptions/{SUBSCRIPTION}")  # fmt: skip
    portal.sign_in_as("alice", "not-her-password")
    page.wait_for_selector("#signin-error:has-text('AADSTS50126')")
    page.click("summary:has-text('token')")
    page.fill("#token", "not-a-token")
    page.click("#token-signin")
    page.wait_for_selector("#token-error:has-text('InvalidAuthenticationToken')")
    portal.errors.clear()  # the refusals' 400 and 401 are the browser's network log, expected
    portal.sign_in_as("alice", "Alice-pass-1")
    page.wait_for_selector("h1:has-text('Resources')")
    assert page.inner_text("#user") == "alice"
    page.wait_for_selector(f"#roles:has-text('Contributor at /subscriptions/{SUBSCRIPTION}')")
    row = page.locator(f"tr[data-id='{VM_ID}']")
    assert row.locator("a").inner_text() == "web1"
    assert row.locator(".state-cell").inner_text() == "running"
    instance = page.locator(f"tr[data-id='{INSTANCE_ID}']")
    assert instance.locator("a").inner_text() == "webss_0"
    page.wait_for_selector(f"tr[data-id='{INSTANCE_ID}'] .state-running", timeout=120_000)
    assert "web-rg" in page.inner_text("main")
    assert "null" not in page.inner_text("body")  # no empty value rendered as text
    page.screenshot(path=str(shots / "02-resources.png"))


def test_overview(portal: Portal, shots: Path) -> None:
    portal.sign_in("--role", "Contributor")
    portal.page.click(f"tr[data-id='{VM_ID}'] a")
    portal.page.wait_for_selector(".overview")
    overview = portal.page.inner_text(".overview")
    assert "Boot diagnostics\nOn: webdiag" in overview
    assert "Lab_1vCPU_256MiB" in overview
    assert "tiny (Linux)" in overview
    assert portal.page.inner_text("#header-state") == "running"
    portal.page.screenshot(path=str(shots / "03-vm-overview.png"))


def test_console_login_and_command(portal: Portal, shots: Path) -> None:
    portal.sign_in("--role", "Virtual Machine Contributor", "--user", "trainee")
    portal.open_vm(VM_ID, "console")
    portal.wait_screen(r"web1 login: ", timeout=60)  # the replay shows it at once
    portal.console_login()
    portal.type("echo portal-$((6*7))\n")
    screen = portal.wait_screen(r"(?m)^portal-42\s*$", timeout=30)
    assert "echo portal-$((6*7))" in screen  # the guest echoed what was typed
    portal.page.screenshot(path=str(shots / "04-serial-console.png"))
    portal.type("exit\n")


def test_sysrq_help_from_the_toolbar(portal: Portal) -> None:
    portal.sign_in("--role", "Virtual Machine Contributor")
    portal.open_vm(VM_ID, "console")
    portal.wait_screen(r"login: |\$ ")
    before = len(re.findall(r"sysrq: HELP : loglevel", portal.screen()))
    portal.page.fill("#sysrq-keys", "h")
    portal.page.click("#send-sysrq")
    portal.page.wait_for_selector("#console-status:has-text('SysRq h sent')")
    portal.wait_screen(r"sysrq: HELP : loglevel", timeout=20, count=before + 1)


def test_reset_shows_a_new_boot(portal: Portal, shots: Path) -> None:
    portal.sign_in("--role", "Virtual Machine Contributor")
    portal.open_vm(VM_ID, "console")
    before = portal.wait_screen(r"login: |\$ ")
    boots, logins = len(re.findall(BOOT, before)), len(re.findall("web1 login: ", before))
    portal.page.click("#console-reset")
    assert "Hard Reset the VM?" in portal.page.inner_text("#confirm-text")
    portal.page.screenshot(path=str(shots / "05-reset-confirmation.png"))
    portal.confirm()
    portal.page.wait_for_selector("#console-status:has-text('Reset sent')")
    # The same websocket shows the new boot, to its login prompt.
    portal.wait_screen(BOOT, timeout=90, count=boots + 1)
    # Counted before the reset: the new boot may have reached its prompt by now already.
    portal.wait_screen(r"web1 login: ", timeout=90, count=logins + 1)


def test_boot_diagnostics_view(portal: Portal, shots: Path) -> None:
    portal.sign_in("--role", "Virtual Machine Contributor")
    portal.open_vm(VM_ID, "bootdiag")
    portal.page.wait_for_selector("#serial-log:has-text('lab: init done')")
    assert portal.page.is_checked("#follow")
    href = portal.page.get_attribute("#log-download", "href") or ""
    assert "serialconsole.log?" in href and "sig=" in href
    portal.page.wait_for_function(
        "() => { const i = document.getElementById('screenshot'); "
        "return i.complete && i.naturalWidth > 0; }", timeout=30_000)  # fmt: skip
    # Follow mode: output printed after the page read the log shows up without a reload. An
    # earlier test already put `sysrq: HELP` in the log, so the page must show one more than it
    # had before the key was sent (the first read is one fetch from offset 0: it is all there).
    count = "(document.getElementById('serial-log').textContent.match(/sysrq: HELP/g) || []).length"
    before = portal.page.evaluate(f"() => {count}")
    portal.lab.cli("sysrq", "web1", "h")
    portal.page.wait_for_function(f"() => {count} > {before}", timeout=20_000)
    portal.page.screenshot(path=str(shots / "06-boot-diagnostics.png"))


def test_paste_limit_and_takeover_notice(portal: Portal, web_lab: LabHarness, browser: Any) -> None:
    portal.sign_in("--role", "Virtual Machine Contributor", "--user", "first")
    portal.open_vm(VM_ID, "console")
    portal.wait_screen(r"login: |\$ ")
    portal.page.evaluate(
        """() => { const data = new DataTransfer(); data.setData('text/plain', 'x'.repeat(3000));
                   document.querySelector('#terminal textarea').dispatchEvent(
                     new ClipboardEvent('paste', {clipboardData: data, bubbles: true})); }"""
    )
    status = portal.page.inner_text("#console-status")
    assert "Paste refused: 3,000 characters, over the limit of 2,048" in status
    assert "x" * 100 not in portal.screen()  # nothing was typed
    second = Portal(web_lab, browser)
    try:
        second.sign_in("--role", "Virtual Machine Contributor", "--user", "second")
        second.open_vm(VM_ID, "console")
        second.wait_screen(r"login: |\$ ")
        portal.page.wait_for_selector(
            "#console-status:has-text('another user connected to this console')")
    finally:
        assert second.close() == []


def test_instance_console(portal: Portal, shots: Path) -> None:
    portal.sign_in("--role", "Contributor")
    portal.open_vm(INSTANCE_ID, "console")
    portal.wait_screen(r"webss0+ login: ", timeout=120)
    portal.page.screenshot(path=str(shots / "07-instance-console.png"))


def test_reader_is_refused_console_and_power(portal: Portal, shots: Path) -> None:
    portal.sign_in("--role", "Reader", "--user", "reader")
    assert portal.page.locator(f"tr[data-id='{VM_ID}'] a").inner_text() == "web1"
    portal.open_vm(VM_ID, "console")
    refused = "does not have authorization to perform action"
    status = portal.page.wait_for_selector(f"#console-status:has-text('{refused}')")
    assert status is not None
    text = status.inner_text()
    assert text.startswith("AuthorizationFailed: The client 'reader'")
    assert "'Microsoft.SerialConsole/serialPorts/connect/action'" in text
    portal.page.screenshot(path=str(shots / "08-reader-console-refused.png"))
    portal.page.click("#vm-restart")
    portal.confirm()
    notice = portal.page.wait_for_selector(f"#notice:has-text('{refused}')")
    assert notice is not None
    assert "'Microsoft.Compute/virtualMachines/restart/action'" in notice.inner_text()
    portal.page.click("#vm-reset")
    portal.confirm()
    portal.page.wait_for_selector(
        "#notice:has-text('Microsoft.SerialConsole/serialPorts/connect/action')")
    assert portal.page.inner_text("#header-state") == "running"  # nothing happened to it
    # The 403s are in the browser's network log; nothing else may be.
    portal.errors[:] = [e for e in portal.errors if not REFUSED.search(e)]
