# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Azurite, Microsoft's Azure Storage emulator, as a test target: its Blob service on a free port.

    with Azurite(workdir) as azurite:
        azurite.blob_endpoint      # http://127.0.0.1:PORT/devstoreaccount1
        azurite.account, azurite.key, azurite.connection_string

    with Azurite(workdir, tls=(cert_file, key_file)) as azurite:
        azurite.blob_endpoint      # https://127.0.0.1:PORT/devstoreaccount1, accepting Microsoft Entra ID tokens too

With TLS, Azurite also takes bearer tokens (``--oauth basic``: it checks a token's audience, issuer
and lifetime, not its signature), so a module signing in with Entra ID can be tested against it.

The program is ``azurite-blob`` from the npm package ``azurite`` (``make setup`` installs it); its
path comes from ``IMAGEPREP_AZURITE``, which the Makefile sets. It listens on 127.0.0.1 only, keeps
its data in WORKDIR, sends no telemetry, serves only its built-in account (``AZURITE_ACCOUNTS``
is not passed on), and is killed (with its process group) on exit.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import ssl
import subprocess
import threading
import time
import typing as t
import urllib.error
import urllib.request

# Azurite's one built-in account and its key, as Azurite's README publishes them ("Default Storage Account")
ACCOUNT = 'devstoreaccount1'
KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
# starting takes about 1 s; the bound is for a busy host
START_TIMEOUT = 60.0
LISTENING = re.compile(r'Blob service successfully listens on (https?://\S+)')


def azurite_program() -> str:
    """Return the path of azurite-blob from IMAGEPREP_AZURITE; raise with what to do when it is not there."""
    program = os.environ.get('IMAGEPREP_AZURITE')
    if not program:
        raise RuntimeError('IMAGEPREP_AZURITE is not set: it names the azurite-blob program '
                           '(make sets it to .cache/npm/node_modules/.bin/azurite-blob after make setup installs it)')
    if not os.access(program, os.X_OK):
        raise RuntimeError(f'IMAGEPREP_AZURITE names {program}, which is not an executable program: run make setup '
                           '(it installs Azurite with npm)')
    return program


class Azurite:
    """The Azurite Blob service, started on entry and killed on exit."""

    account = ACCOUNT
    key = KEY

    def __init__(self, workdir: pathlib.Path, tls: t.Optional[tuple[str, str]] = None) -> None:
        self.workdir = pathlib.Path(workdir)
        self.tls = tls
        self.process: t.Optional[subprocess.Popen] = None
        self.url = ''
        self.output: list[str] = []

    @property
    def blob_endpoint(self) -> str:
        """The Blob service URL of the account (path style, as Azurite serves it)."""
        return f'{self.url}/{self.account}'

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol={'https' if self.tls else 'http'};AccountName={self.account};AccountKey={self.key};"
                f'BlobEndpoint={self.blob_endpoint};')

    def __enter__(self) -> 'Azurite':
        program = azurite_program()
        location = self.workdir / 'azurite'
        location.mkdir(parents=True, exist_ok=True)
        tls = ['--cert', str(self.tls[0]), '--key', str(self.tls[1]), '--oauth', 'basic'] if self.tls else []
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with  # ended in __exit__
            [program, '--blobHost', '127.0.0.1', '--blobPort', '0', '--location', str(location),
             '--skipApiVersionCheck', '--loose', '--silent', '--disableTelemetry'] + tls,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env={k: v for k, v in os.environ.items() if k != 'AZURITE_ACCOUNTS'})
        try:
            self._wait_listening()
            self._wait_answering()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        self._stop()

    def _wait_listening(self) -> None:
        """Read Azurite's output until it says where it listens (port 0: it chose one)."""
        assert self.process is not None and self.process.stdout is not None
        found: list[str] = []
        stdout = self.process.stdout

        def read() -> None:
            for line in stdout:
                self.output.append(line.rstrip())
                match = LISTENING.search(line)
                if match and not found:
                    found.append(match.group(1))

        reader = threading.Thread(target=read, daemon=True)  # keeps draining the pipe while Azurite runs
        reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not found:
            if self.process.poll() is not None:
                reader.join(5)
                raise RuntimeError(f'azurite-blob exited ({self.process.returncode}):\n' + '\n'.join(self.output))
            if time.monotonic() > deadline:
                raise RuntimeError(f'azurite-blob did not listen within {START_TIMEOUT} s:\n' + '\n'.join(self.output))
            time.sleep(0.02)
        self.url = found[0].rstrip('/')

    def _wait_answering(self) -> None:
        """Wait until the Blob service answers HTTP (an anonymous request gets an error document, which is an answer)."""
        deadline = time.monotonic() + START_TIMEOUT
        # the certificate is the test's own: whether a client trusts it is the test's business, not the wait's
        context = ssl._create_unverified_context() if self.tls else None  # pylint: disable=protected-access
        while True:
            try:
                with urllib.request.urlopen(f'{self.blob_endpoint}?comp=list', timeout=5, context=context):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f'Azurite at {self.url} did not answer within {START_TIMEOUT} s') from None
                time.sleep(0.05)

    def _stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
