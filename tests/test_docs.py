"""Every shell and Python example in README.md and docs/*.md runs, in document order.

A reader follows a guide literally, top to bottom, in an empty folder; so does this
test. Each document gets a fresh folder (and a fresh home, so keys and caches start
empty), ``.venv/bin`` first on PATH, and no network. Its examples run one after
another in that folder: a shell block with ``bash -e``; a Python block in fresh
globals, as a script of its own (blocks share files, never variables), in one
Python process per document, so that torch is imported once per guide rather
than once per block. Documents run two at a time, each in a thread of its own.
One test per example, named ``doc.md:LINE-lang``; asking for one example runs the
ones before it first.

Markers, HTML comments on the line(s) before a fenced block:

- ``<!-- not run: REASON -->``: the example cannot run here (a real Stable
  Diffusion checkpoint, a remote host); it is reported as skipped with REASON.
- ``<!-- output -->`` before a ``text`` block: lines the previous example must
  print, in order (``...`` inside a line matches anything).
- ``<!-- background until "TEXT" -->``: a server; it runs in the background until
  the document ends, and the next example starts once it has printed TEXT.

Examples keep their small settings in the docs themselves (``--steps 5``); nothing
here makes them cheaper behind the reader's back.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # the interpreter running the tests: .venv's
SHELL_LANGS = {"sh", "bash", "shell"}
PYTHON_LANGS = {"python", "py"}
EXAMPLE_TIMEOUT = 300  # seconds; the slowest example runs well under a minute
DOC_TIMEOUT = 1800  # seconds a test waits for its example: the documents before it run first
DOC_JOBS = min(2, os.cpu_count() or 1)  # documents run side by side (see document_runs)
FENCE = re.compile(r"^(```+)\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(.*?)\s*-->$")


@dataclass
class Example:
    doc: str
    line: int  # of the opening fence, 1-based
    lang: str  # "sh" or "python"
    code: str
    skip: str | None = None  # why it is not run
    background: str | None = None  # text a background example prints once ready
    expected: list[str] = field(default_factory=list)  # lines its stdout must contain

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}-{self.lang}"


def documents() -> list[Path]:
    """README.md, then the guides (sorted; each runs on its own, so order between them is moot)."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def parse(path: Path, root: Path = REPO) -> list[Example]:
    """The examples of one document, with their markers and expected output attached."""
    doc = str(path.relative_to(root))
    lines = path.read_text().splitlines()
    examples: list[Example] = []
    markers: list[str] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            marker = MARKER.match(lines[i].strip())
            if marker:
                markers.append(marker.group(1))
            elif lines[i].strip():
                markers = []  # a marker applies to the block right after it, not one further down
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)))
        body = "\n".join(lines[i + 1 : end]) + "\n"
        _attach(examples, doc, i + 1, fence.group(2).lower(), body, markers)
        markers = []
        i = end + 1
    return examples


def _attach(
    examples: list[Example], doc: str, line: int, lang: str, body: str, markers: list[str]
) -> None:
    """Turn one fenced block into an example, or into the expected output of the last one."""
    if "output" in markers:
        if not examples:
            raise ValueError(f"{doc}:{line}: an output block with no example before it")
        examples[-1].expected += [x for x in body.splitlines() if x.strip()]
        return
    if lang not in SHELL_LANGS | PYTHON_LANGS:
        return  # a diagram, a layout, a formula: not an example
    example = Example(doc, line, "sh" if lang in SHELL_LANGS else "python", body)
    for marker in markers:
        if marker.startswith("not run:"):
            example.skip = marker.removeprefix("not run:").strip()
        elif found := re.fullmatch(r'background until "(.+)"', marker):
            example.background = found.group(1)
    examples.append(example)


EXAMPLES = [example for path in documents() for example in parse(path)]


# The Python process of one document: it runs each block it is sent, as __main__ in fresh
# globals, and answers on its own copy of stdout, which the blocks never see (their
# output, at the Python level, is captured; anything a library writes to the file
# descriptors goes to the test's log).
PYTHON_WORKER = r"""
import contextlib, io, json, os, sys, time, traceback
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
for request in sys.stdin:
    block = json.loads(request)
    out, err, status, cpu = io.StringIO(), io.StringIO(), 0, time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            exec(compile(block["code"], block["name"], "exec"), {"__name__": "__main__"})
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else (stop.code is not None)
        except BaseException:
            traceback.print_exc()
            status = 1
    answer = {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}
    reply.write(json.dumps({**answer, "cpu": time.process_time() - cpu}) + "\n")
    reply.flush()
"""


@dataclass
class Outcome:
    """What happened to one example: passed (neither field set), failed, or skipped."""

    failure: str | None = None
    skipped: str | None = None
    seconds: float = 0.0
    cpu: float = 0.0


class DocumentRun:
    """One document's folder, environment and examples, run once each, in order, in a thread
    of its own (see ``document_runs``); each test waits for its example's outcome."""

    def __init__(self, examples: list[Example], root: Path) -> None:
        self.examples = examples
        self.folder = root / "work"
        self.home = root / "home"
        self.folder.mkdir(parents=True)
        self.home.mkdir()
        self.outcomes: dict[int, Outcome] = {}
        self.ready = threading.Condition()
        self.cancelled = False
        self.servers: list[subprocess.Popen[str]] = []
        self.python: subprocess.Popen[str] | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOIMMUNE_")}
        env.pop("VIRTUAL_ENV", None)
        # A new user's machine: .venv's commands first on PATH (as after activating it), an
        # empty home (no keys, no registry cache), no network for Hugging Face.
        env |= {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(self.home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "COLUMNS": "100",  # the width the issue checks tables at
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env = env

    def run_until(self, last: int) -> None:
        """Run examples 0..last in order; after a failure the rest are skipped, saying why."""
        failed: str | None = None
        try:
            for index, example in enumerate(self.examples[: last + 1]):
                if self.cancelled:
                    failed = failed or "the test session ended"
                if failed is not None:
                    outcome = Outcome(
                        skipped=f"an earlier example of {example.doc} failed ({failed})"
                    )
                elif example.skip is not None:
                    outcome = Outcome(skipped=example.skip)
                else:
                    outcome = self.attempt(example)
                    failed = example.name if outcome.failure else None
                self.publish(index, outcome)
        finally:
            self.stop()  # its servers and its Python process: the other guides need the cores

    def attempt(self, example: Example) -> Outcome:
        started = time.perf_counter()
        try:
            cpu = self.run(example)
        except Exception as err:  # reported by the example's own test
            return Outcome(failure=str(err), seconds=time.perf_counter() - started)
        return Outcome(seconds=time.perf_counter() - started, cpu=cpu)

    def publish(self, index: int, outcome: Outcome) -> None:
        with self.ready:
            self.outcomes[index] = outcome
            self.ready.notify_all()

    def outcome(self, example: Example) -> Outcome:
        index = self.examples.index(example)
        with self.ready:
            if not self.ready.wait_for(lambda: index in self.outcomes, timeout=DOC_TIMEOUT):
                raise AssertionError(f"{example.name}: no outcome within {DOC_TIMEOUT} s")
            return self.outcomes[index]

    def run(self, example: Example) -> float:
        """Run one example; return its CPU time, or raise with what went wrong."""
        if example.background is not None:
            self.servers.append(_start(_shell(example), self.folder, self.env, example))
            return 0.0
        if example.lang == "python":
            out, cpu = self.run_python(example)
        else:
            out, cpu = _run_shell(example, self.folder, self.env)
        if out.returncode != 0:
            raise AssertionError(_report(example, out))
        _check_output(example, out.stdout)
        return cpu

    def run_python(self, example: Example) -> tuple[subprocess.CompletedProcess[str], float]:
        """Run a block in the document's Python process (started on first use)."""
        if self.python is None:
            self.python = subprocess.Popen(
                ["python", "-c", PYTHON_WORKER],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self.python.stdin is not None and self.python.stdout is not None
        self.python.stdin.write(json.dumps({"code": example.code, "name": example.name}) + "\n")
        self.python.stdin.flush()
        ready, _, _ = select.select([self.python.stdout], [], [], EXAMPLE_TIMEOUT)
        line = self.python.stdout.readline() if ready else ""
        if not line:
            self.python.kill()
            raise AssertionError(f"{example.name}: no answer within {EXAMPLE_TIMEOUT} s")
        answer = json.loads(line)
        done = subprocess.CompletedProcess(
            ["python", example.name], answer["status"], answer["stdout"], answer["stderr"]
        )
        return done, answer["cpu"]

    def stop(self) -> None:
        if self.python is not None and self.python.poll() is None:
            self.python.kill()
            self.python.wait()
        for server in self.servers:  # each started in its own session: stop its whole group
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()


def _shell(example: Example) -> list[str]:
    return ["bash", "-e", "-o", "pipefail", "-c", example.code]


def _run_shell(
    example: Example, folder: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a shell example; return its result and the CPU time of its whole process tree
    (wait4 reports it per child, where getrusage would mix guides running side by side)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            _shell(example), cwd=folder, env=env, stdout=out, stderr=err, start_new_session=True
        )
        timer = threading.Timer(EXAMPLE_TIMEOUT, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    return done, usage.ru_utime + usage.ru_stime


def _start(
    command: list[str], folder: Path, env: dict[str, str], example: Example
) -> subprocess.Popen[str]:
    """Start a server example and return once it says it is ready (or fail with its output)."""
    server = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert server.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        seen.append(line)
        if example.background and example.background in line:
            return server
        if not line and server.poll() is not None:
            break
    os.killpg(server.pid, signal.SIGKILL)
    raise AssertionError(f"{example.name} never said {example.background!r}:\n{''.join(seen)}")


def _report(example: Example, out: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{example.name} exited {out.returncode}\n--- example\n{example.code}"
        f"--- stdout\n{out.stdout[-4000:]}--- stderr\n{out.stderr[-4000:]}"
    )


def _check_output(example: Example, stdout: str) -> None:
    """Each expected line must match a line of stdout, in order; ``...`` matches anything."""
    lines = iter(stdout.splitlines())
    for expected in example.expected:
        pattern = re.compile(".*".join(re.escape(p) for p in expected.strip().split("...")))
        if not any(pattern.fullmatch(line.strip()) for line in lines):
            raise AssertionError(
                f"{example.name}: expected a line {expected.strip()!r} (in this order) in\n{stdout}"
            )


@pytest.fixture(scope="session")
def document_runs(request, tmp_path_factory):
    """Start every document the session selected, DOC_JOBS at a time, each in a thread.

    Documents are independent (a folder and a home each), and a guide's commands spend
    much of their time importing torch on one core: two guides side by side keep two
    cores busy. Each runs only as far as its last selected example.
    """
    wanted: dict[str, int] = {}
    for item in request.session.items:
        example = getattr(getattr(item, "callspec", None), "params", {}).get("example")
        if isinstance(example, Example):
            index = [e for e in EXAMPLES if e.doc == example.doc].index(example)
            wanted[example.doc] = max(index, wanted.get(example.doc, 0))
    runs = {
        doc: DocumentRun(
            [e for e in EXAMPLES if e.doc == doc], tmp_path_factory.mktemp(Path(doc).stem)
        )
        for doc in wanted
    }
    pool = ThreadPoolExecutor(max_workers=DOC_JOBS, thread_name_prefix="docs")
    for doc, last in wanted.items():
        pool.submit(runs[doc].run_until, last)
    yield runs
    for run in runs.values():
        run.cancelled = True  # examples not yet started are skipped; running ones finish
    pool.shutdown(wait=True)


# Slow: a guide's examples take seconds to a minute (see the timings in the final report).
@pytest.mark.parametrize(
    "example", [pytest.param(e, id=e.name, marks=pytest.mark.slow) for e in EXAMPLES]
)
def test_example(example: Example, document_runs) -> None:
    outcome = document_runs[example.doc].outcome(example)
    if outcome.skipped is not None:
        pytest.skip(f"not run: {outcome.skipped}")
    # pytest -s shows what each example costs; CPU time too, since the wall clock of a busy
    # machine (or of two guides side by side) says little.
    print(f"\n{example.name}: {outcome.seconds:.1f} s, CPU {outcome.cpu:.1f} s", end="")
    if outcome.failure is not None:
        pytest.fail(outcome.failure, pytrace=False)


def test_parser_reads_markers(tmp_path) -> None:
    # The markers are the docs' only way to change how an example runs: check each is seen.
    doc = tmp_path / "guide.md"
    doc.write_text(
        "Intro.\n\n<!-- not run: needs a GPU -->\n```sh\nnvidia-smi\n```\n\n"
        '```python\nprint("a"); print("b")\n```\n<!-- output -->\n```text\nb\n```\n\n'
        '<!-- background until "ready" -->\n```bash\nserve\n```\n\n```\nnot an example\n```\n'
    )
    examples = parse(doc, root=tmp_path)
    assert [(e.lang, e.skip, e.background, e.expected) for e in examples] == [
        ("sh", "needs a GPU", None, []),
        ("python", None, None, ["b"]),
        ("sh", None, "ready", []),
    ]


def test_expected_output_is_matched_in_order() -> None:
    example = Example("d.md", 1, "python", "", expected=["first ...", "second"])
    _check_output(example, "noise\nfirst line\nsecond\n")
    with pytest.raises(AssertionError, match="in this order"):
        _check_output(example, "second\nfirst line\n")
