#!/usr/bin/python3
"""console_browser.py -- one step of the operator console's browser test.

Started by tests/integration/console_test.cpp against a running flushgated:
a headless Chromium driven by Selenium (Debian's python3-selenium and
chromium-driver) logs in to http://127.0.0.1:PORT/console/ with the admin
token and does one step; the C++ test checks what the step changed (SMTP
answers, mail at Postfix, the queue) between steps.

Steps: forged, suspend, delete, flush, add.  Exit 0 when every check held,
1 with "got X, want Y" lines otherwise, 2 for a usage or start-up error.
Talks to 127.0.0.1 only; every wait is bounded.
"""
import argparse
import http.server
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException

failures = []


def check(ok, message):
    if not ok:
        failures.append(message)
        print("FAIL: " + message, flush=True)
    return ok


def browser():
    o = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,820"):
        o.add_argument(flag)
    o.binary_location = "/usr/lib/chromium/chromium"
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    d.set_page_load_timeout(30)
    return d


def text_of(d, css):
    found = d.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def log_in(d, base, token):
    d.get(base + "/console/login")
    d.find_element(By.ID, "token").send_keys(token)
    click(d, d.find_element(By.ID, "login"))
    return check(d.find_elements(By.ID, "customers") != [],
                 "got no customer list after logging in (at %s), want one" % d.current_url)


def click(d, element):
    """Clicks something that loads a new page; waits (bounded) until the old
    page is gone and the new one has loaded."""
    old = d.find_element(By.TAG_NAME, "html")
    element.click()

    def old_gone():
        try:
            old.is_enabled()
            return False
        except WebDriverException:
            # Stale, or (mid-navigation) "node does not belong to the document": gone.
            return True

    def loaded():
        try:
            return d.execute_script("return document.readyState") == "complete"
        except WebDriverException:
            return False

    if not (wait_for(old_gone, 20) and wait_for(loaded, 20)):
        raise TimeoutError("no new page 20 s after the click (at %s)" % d.current_url)


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)  # polling a page with a deadline, not synchronisation
    return predicate()


def shot(d, args, name):
    if args.shots:
        d.save_screenshot("%s/%s" % (args.shots, name))


def click_action(d, action, qid=None):
    css = "button[data-action='%s']" % action
    if qid:
        css += "[data-qid='%s']" % qid
    click(d, d.find_element(By.CSS_SELECTOR, css))


def step_suspend(d, args):
    d.get(args.url + "/console/customer?name=" + args.customer)
    click_action(d, "suspend")
    check("Suspend customer " + args.customer in text_of(d, "#question"),
          "got question %r, want a confirmation of the suspend" % text_of(d, "#question"))
    shot(d, args, "console-confirm.png")
    click(d, d.find_element(By.ID, "confirm"))
    state = d.find_element(By.CSS_SELECTOR, "h2 .badge").get_attribute("data-state")
    check(state == "suspended", "got state %r after confirming, want suspended" % state)
    check("suspended" in text_of(d, "#note"), "got note %r, want the suspend noted" % text_of(d, "#note"))
    shot(d, args, "console-customer.png")


def step_delete(d, args):
    d.get(args.url + "/console/message?qid=" + args.qid)
    check(text_of(d, "#qid") == args.qid, "got message page for %r, want %s" % (text_of(d, "#qid"), args.qid))
    check("bob@" in text_of(d, "#recipients"), "got recipients %r, want bob@..." % text_of(d, "#recipients"))
    shot(d, args, "console-message.png")
    click_action(d, "delete", args.qid)
    check("Delete message " + args.qid in text_of(d, "#question"),
          "got question %r, want a confirmation of the delete" % text_of(d, "#question"))
    # Cancel first: nothing may happen.
    click(d, d.find_element(By.ID, "cancel"))
    check(text_of(d, "#qid") == args.qid, "got %s after cancel, want the message page again" % d.current_url)
    click_action(d, "delete", args.qid)
    click(d, d.find_element(By.ID, "confirm"))
    check("deleted" in text_of(d, "#note"), "got note %r, want the delete noted" % text_of(d, "#note"))
    rows = d.find_elements(By.CSS_SELECTOR, "tr[data-qid='%s']" % args.qid)
    check(rows == [], "got %s still in the queue listing, want it gone" % args.qid)


def step_flush(d, args):
    d.get(args.url + "/console/customer?name=" + args.customer)
    click_action(d, "flush")
    check("/console/flush" in d.current_url, "got %s after flush, want the progress page" % d.current_url)

    def done():
        d.get(args.url + "/console/flush?name=" + args.customer)
        return text_of(d, "#messages-left") == "0" and text_of(d, "#flush-state") == "not running"

    check(wait_for(done, 30), "got messages left %r, state %r after 30 s, want 0 and not running"
          % (text_of(d, "#messages-left"), text_of(d, "#flush-state")))
    delivered = text_of(d, "#delivered")
    check(delivered == args.expect_delivered,
          "got %r recipients delivered, want %s" % (delivered, args.expect_delivered))
    shot(d, args, "console-flush.png")


def step_add(d, args):
    d.get(args.url + "/console/new")
    d.find_element(By.ID, "f-name").send_keys("Not A Name!")
    d.find_element(By.ID, "f-domains").send_keys("beta.test")
    click(d, d.find_element(By.ID, "save"))
    check("customer name" in text_of(d, "#error"),
          "got error %r for a bad name, want the CLI's own message" % text_of(d, "#error"))
    name = d.find_element(By.ID, "f-name")
    name.clear()
    name.send_keys("beta")
    d.find_element(By.ID, "f-mode").send_keys("hold")
    click(d, d.find_element(By.ID, "save"))
    check(text_of(d, "#customer-name") == "beta", "got page %s, want customer beta's page" % d.current_url)
    check("added" in text_of(d, "#note"), "got note %r, want the add noted" % text_of(d, "#note"))
    # Change it: every field comes back filled in and must be accepted as it is.
    click(d, d.find_element(By.ID, "edit"))
    quota = d.find_element(By.ID, "f-quota")
    quota.clear()
    quota.send_keys("10M")
    click(d, d.find_element(By.ID, "save"))
    check("changed" in text_of(d, "#note"),
          "got note %r error %r after changing the quota, want the change noted"
          % (text_of(d, "#note"), text_of(d, "#error")))
    # The session also opens the read-only status page, without the token.
    click(d, d.find_element(By.LINK_TEXT, "Status page"))
    check(d.find_elements(By.ID, "t-messages") != [],
          "got no status page from the console's link (at %s), want it shown" % d.current_url)


class foreign_page(http.server.BaseHTTPRequestHandler):
    """Another origin (another port of 127.0.0.1) with a form aimed at the console."""
    target = ""
    customer = ""
    timeout = 5

    def do_GET(self):
        body = ("<!DOCTYPE html><html><body><form id=f method=post action='%s/console/action'>"
                "<input type=hidden name=action value=disable><input type=hidden name=name value='%s'>"
                "<input type=hidden name=confirm value=yes><input type=hidden name=csrf value=forged>"
                "</form><script>document.getElementById('f').submit()</script></body></html>"
                % (self.target, self.customer)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def post(url, body, cookie, origin):
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    req.add_header("Cookie", cookie)
    if origin:
        req.add_header("Origin", origin)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def step_forged(d, args):
    foreign_page.target = args.url
    foreign_page.customer = args.customer
    # Threads, and a timeout per connection: Chromium opens spare connections
    # it may never use, and one of those must not hold up the others or shutdown().
    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", args.foreign_port), foreign_page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        d.get("http://127.0.0.1:%d/" % args.foreign_port)
        # The foreign page submits its form by itself; wait (bounded) for the console's answer.
        wait_for(lambda: "did not come from" in text_of(d, "#notice"), 15)
        check("did not come from a page of this console" in text_of(d, "#notice"),
              "got %r at %s for the cross-site POST, want it refused" % (text_of(d, "#notice"), d.current_url))
    finally:
        server.shutdown()
        server.server_close()
    # The same forgery with the real cookie and even the real CSRF token, from a foreign Origin.
    d.get(args.url + "/console/customer?name=" + args.customer)
    cookie = "fg_console=" + d.get_cookie("fg_console")["value"]
    csrf = d.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    action = args.url + "/console/action"
    body = "action=disable&confirm=yes&name=%s&csrf=" % args.customer
    got = post(action, body + csrf, cookie, "http://127.0.0.1:%d" % args.foreign_port)
    check(got == 403, "got %s for a POST with a foreign Origin, want 403" % got)
    got = post(action, body + "0" * 64, cookie, args.url)
    check(got == 403, "got %s for a POST with a wrong CSRF token, want 403" % got)
    got = post(action, body + csrf, "", args.url)
    check(got == 403, "got %s for a POST without the session cookie, want 403" % got)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--step", required=True, choices=["forged", "suspend", "delete", "flush", "add"])
    p.add_argument("--customer", default="acme")
    p.add_argument("--qid", default="")
    p.add_argument("--foreign-port", type=int, default=0)
    p.add_argument("--expect-delivered", default="")
    p.add_argument("--shots", default="")
    args = p.parse_args()
    with open(args.token_file) as f:
        token = f.readline().strip()
    d = browser()
    try:
        if log_in(d, args.url, token):
            globals()["step_" + args.step](d, args)
    except Exception as e:  # a missing element, a timeout: the step failed
        check(False, "got %s: %s at %s, want the step to run through" % (type(e).__name__, e, d.current_url))
    finally:
        d.quit()
    print("%s: %s" % (args.step, "ok" if not failures else "%d failure(s)" % len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
