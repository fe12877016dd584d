#!/usr/bin/env python3
"""Drives headless chromium over WebDriver (chromedriver, W3C JSON over HTTP; stdlib only)
for bench/web.sh: signs in to xferd's page, uploads one file with the page's picker and
prints the page's upload time, the BLAKE3 engine its workers used, and the CPU seconds
chromium (all its processes) spent, in total and per process type and thread name.

    web_driver.py https://127.0.0.1:PORT USER PASSWORD FILE [PAGE_QUERY]

PAGE_QUERY (e.g. `?blake3=js`) is appended to the page's address; CHROMIUM_ARGS in the
environment (space-separated) adds switches to chromium's command line.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

BASE, USER, PASSWORD, FILE = sys.argv[1:5]
QUERY = sys.argv[5] if len(sys.argv) > 5 else ''
# More chromium switches, e.g. `--disable-http2` (bench/web.sh's HTTP1=1).
CHROMIUM_ARGS = os.environ.get('CHROMIUM_ARGS', '').split()
TCK = os.sysconf('SC_CLK_TCK')


def free_port():
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


PORT = free_port()
driver = subprocess.Popen(['chromedriver', f'--port={PORT}'], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)


def wd(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f'http://127.0.0.1:{PORT}{path}', data=data, method=method,
                                 headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)['value']


def descendants(pid):
    """pid and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        # Children are listed per thread: chromium starts its zygote and renderers from
        # threads other than the main one.
        try:
            tasks = os.listdir(f'/proc/{p}/task')
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f'/proc/{p}/task/{t}/children') as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return out


def threads(pid):
    """{"process type/thread name": CPU ticks} of the processes under pid, chromedriver
    excluded: where chromium's time goes (the upload workers are "renderer/DedicatedWorker",
    TLS and sockets "NetworkService/Chrome_ChildIOThread")."""
    out = {}
    for p in descendants(pid)[1:]:
        try:
            with open(f'/proc/{p}/cmdline') as f:
                args = f.read().replace('\0', ' ').split()
            kind = next((a[len('--type='):] for a in args if a.startswith('--type=')), 'browser')
            kind = next((a.split('.')[-1] for a in args if a.startswith('--utility-sub-type=')), kind)
            for t in os.listdir(f'/proc/{p}/task'):
                with open(f'/proc/{p}/task/{t}/comm') as f:
                    name = f.read().strip()
                with open(f'/proc/{p}/task/{t}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
                key = f'{kind}/{name}'
                out[key] = out.get(key, 0) + int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return out


def cpu(pid):
    """CPU seconds (user + system) of the processes under pid, chromedriver excluded."""
    total = 0
    for p in descendants(pid)[1:]:
        try:
            with open(f'/proc/{p}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TCK


for _ in range(100):
    try:
        wd('GET', '/status')
        break
    except OSError:
        time.sleep(0.1)
profile = tempfile.mkdtemp(prefix='xfer-bench-chromium-')
try:
    sid = wd('POST', '/session', {'capabilities': {'alwaysMatch': {
        'browserName': 'chrome', 'acceptInsecureCerts': True,
        'goog:chromeOptions': {'args': ['--headless=new', '--no-sandbox', '--disable-gpu',
                                        '--disable-dev-shm-usage', f'--user-data-dir={profile}']
                                       + CHROMIUM_ARGS}}}})['sessionId']
    S = f'/session/{sid}'

    def js(script):
        return wd('POST', f'{S}/execute/sync', {'script': script, 'args': []})

    def until(script, timeout=900):
        start = time.time()
        while time.time() - start < timeout:
            v = js(script)
            if v:
                return v
            time.sleep(0.1)
        raise SystemExit(f'timed out: {script}')

    def element(css):
        until(f'return document.querySelector({json.dumps(css)})')
        found = wd('POST', f'{S}/element', {'using': 'css selector', 'value': css})
        return next(iter(found.values()))

    def keys(css, text):
        wd('POST', f'{S}/element/{element(css)}/value', {'text': text})

    wd('POST', f'{S}/url', {'url': BASE + '/' + QUERY})
    keys('#signin-user', USER)
    keys('#signin-password', PASSWORD)
    wd('POST', f'{S}/element/{element("#signin-submit")}/click', {})
    until(f"return document.getElementById('whoami').textContent === {json.dumps(USER)}")
    c0, t0, th0 = cpu(driver.pid), time.time(), threads(driver.pid)
    keys('#pick-files', FILE)
    state = until("const li = document.querySelector('#upload-list li'); "
                  "return li && ['done', 'failed', 'conflict'].includes(li.dataset.state) && li.dataset.state")
    wall, c1, th1 = time.time() - t0, cpu(driver.pid), threads(driver.pid)
    status = js("return document.querySelector('#upload-list li').textContent")
    ms = js("return Number(document.querySelector('#upload-list li').dataset.ms || 0)")
    engine = js("return document.querySelector('#upload-list li').dataset.engine || ''")
    busiest = sorted(((v - th0.get(k, 0)) / TCK, k) for k, v in th1.items())[::-1][:6]
    if state != 'done':
        raise SystemExit(f'upload {state}: {status}')
    size = os.path.getsize(FILE)
    workers = js('return navigator.hardwareConcurrency')
    # The page's own requests (the workers' share their connection): h2 or http/1.1.
    protocol = js("return performance.getEntriesByType('resource')"
                  ".map((e) => e.nextHopProtocol).filter(Boolean).pop() || ''")
    print(json.dumps({'bytes': size, 'page_ms': ms, 'wall_s': round(wall, 2),
                      'mb_s': round(size / 1e6 / (ms / 1000), 1),
                      'chromium_cpu_s': round(c1 - c0, 2), 'hardware_concurrency': workers,
                      'engine': engine, 'protocol': protocol, 'threads': [[k, round(v, 2)] for v, k in busiest],
                      'status': status}))
    wd('DELETE', S)
finally:
    driver.kill()
    subprocess.run(['rm', '-rf', profile])
