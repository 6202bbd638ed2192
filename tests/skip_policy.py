"""A pytest plugin: no silent skips in CI, and one summary line per test environment.

``MASKWATCH_FAIL_ON_SKIP=1`` (``.ci/run`` sets it) turns every skipped test into a failure,
except the few in :data:`ALLOWED_SKIPS`, each allowed for one named reason only. A green run
then means every other test ran: a missing broker binary, a missing cached model or a test that
quietly started to need ``../shared`` fails instead of hiding.

``MASKWATCH_TEST_SUMMARY=FILE`` makes the run write one line to FILE: how many tests passed,
skipped and failed, in which environment. ``make test`` prints the lines of both environments
at the end.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

FAIL_ON_SKIP = "MASKWATCH_FAIL_ON_SKIP"
SUMMARY_FILE = "MASKWATCH_TEST_SUMMARY"
#: How the ``shared`` fixture's skip message starts (matched by the allow-list).
REAL_DATA_ABSENT = "the real data folder is absent"
NO_TENSORFLOW = "could not import 'tensorflow'"
#: The Pi-like environment has no browser (and no selenium), by design.
NO_BROWSER = "no browser in this environment"


@dataclass(frozen=True)
class AllowedSkip:
    """Tests (an fnmatch pattern on the node id) that may skip, and only with this reason."""

    tests: str
    reason: str  # a substring of the skip message
    why: str


ALLOWED_SKIPS = (
    # Their subject is the real data in ../shared: on a clone without it there is nothing to test.
    AllowedSkip("tests/test_data_import.py::*", REAL_DATA_ABSENT, "imports the real datasets and counts their files"),
    AllowedSkip("tests/test_data_split.py::*", REAL_DATA_ABSENT, "splits the real faces-classify import"),
    AllowedSkip("tests/test_data_report.py::*", REAL_DATA_ABSENT, "reports on the real faces-voc import"),
    AllowedSkip("tests/test_readme_run.py::*", REAL_DATA_ABSENT, "the README walkthrough on real faces"),
    AllowedSkip("tests/test_blazeface.py::*", REAL_DATA_ABSENT, "boxes drawn by eye on the real photos"),
    AllowedSkip("tests/test_yunet.py::*", REAL_DATA_ABSENT, "YuNet's model file and photos are in ../shared"),
    AllowedSkip("tests/test_detect_cli.py::*", REAL_DATA_ABSENT, "prints the faces of the real photos"),
    AllowedSkip("tests/test_yunet_litert.py::test_same_faces_as_opencv_on_real_photos*", REAL_DATA_ABSENT,
                "compares with OpenCV on the real photos"),
    AllowedSkip("tests/test_yunet_litert.py::test_finds_the_faces_in_photos_of_any_size*", REAL_DATA_ABSENT,
                "counts the faces of the real photos"),
    AllowedSkip("tests/test_yunet_litert.py::test_int8_finds_the_faces_float32_finds*", REAL_DATA_ABSENT,
                "int8 against float32 on the real photos"),
    AllowedSkip("tests/test_yunet_litert.py::test_follows_frame_size_changes_and_blank_frames", REAL_DATA_ABSENT,
                "real photos of three sizes"),
    AllowedSkip("tests/test_fetch_models.py::test_pinned_yunet_is_the_one_in_shared", REAL_DATA_ABSENT,
                "its subject is the file in ../shared"),
    # They need a model that learnt: the ImageNet run (offline weights in ../shared) or a tiny CNN
    # trained from scratch on real faces (on the synthetic faces it stays near chance, measured).
    AllowedSkip("tests/test_train.py::test_imagenet_run_*", REAL_DATA_ABSENT, "learns from the ImageNet weights"),
    AllowedSkip("tests/test_evaluate.py::*", REAL_DATA_ABSENT, "evaluates the ImageNet run"),
    AllowedSkip("tests/test_predict.py::*", REAL_DATA_ABSENT, "predicts with the ImageNet run on real photos"),
    AllowedSkip("tests/test_model.py::*", REAL_DATA_ABSENT, "loads the offline ImageNet weights"),
    AllowedSkip("tests/test_weights.py::*", REAL_DATA_ABSENT, "compares with the offline ImageNet weights"),
    AllowedSkip("tests/test_convert.py::*", REAL_DATA_ABSENT, "parity of a tiny CNN trained on real faces"),
    AllowedSkip("tests/test_bench.py::*", REAL_DATA_ABSENT, "accuracy of that converted pair on real faces"),
    # make test-arm64: Trixie only where the Debian mirror serves it (Bookworm must run; a machine
    # that cannot run arm64 binaries at all is not allowed to skip).
    AllowedSkip("tests/arm64_emulated.py::*trixie*", "does not serve trixie", "the mirror has no Trixie"),
    # The Pi-like environment has neither TensorFlow nor Pillow, by design.
    AllowedSkip("tests/test_bench.py::*", NO_TENSORFLOW, "compares LiteRT with Keras (workstation only)"),
    AllowedSkip("tests/test_web_browser.py*", NO_BROWSER,
                "drives the web page in chromium; the Pi-like env has no selenium (its server tests run there)"),
    AllowedSkip("tests/test_monitor.py::test_relabelled_crops_import_as_a_dataset",
                "could not import 'train.data.importer'", "the importer is workstation-side (Pillow)"),
)


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The message a skip was given (``longrepr`` is ``(file, line, message)`` for skips)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def allowed_skip(nodeid: str, reason: str, allowed: tuple[AllowedSkip, ...] = ALLOWED_SKIPS) -> AllowedSkip | None:
    """The allow-list entry that lets ``nodeid`` skip with ``reason``, or None."""
    return next((a for a in allowed if fnmatchcase(nodeid, a.tests) and a.reason in reason), None)


def fail_on_skip() -> bool:
    return os.environ.get(FAIL_ON_SKIP, "").strip().lower() not in ("", "0", "false", "no")


def _refuse(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = skip_reason(report)
    if allowed_skip(report.nodeid, reason) is None:
        report.outcome = "failed"
        report.longrepr = (f"skipped, but {FAIL_ON_SKIP} is set and this skip is not in the allow-list of "
                           f"tests/skip_policy.py: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and fail_on_skip():
        _refuse(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and fail_on_skip():  # a whole module skipped (importorskip at import)
        _refuse(report)


def environment() -> str:
    """Python, numpy and whether TensorFlow is importable: what tells the two test runs apart."""
    import importlib.util

    import numpy as np

    tf = "TensorFlow" if importlib.util.find_spec("tensorflow") is not None else "no TensorFlow"
    return f"Python {platform.python_version()}, numpy {np.__version__}, {tf}"


def summary_line(name: str, stats: dict[str, list]) -> str:
    """``name (environment): N passed, N skipped, N failed`` (+ errors, xfails when there are any)."""
    counts = {k: len(stats.get(k, [])) for k in ("passed", "skipped", "failed", "error", "xfailed", "xpassed")}
    shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n or k in ("passed", "skipped", "failed"))
    return f"{name} ({environment()}): {shown}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if fail_on_skip():
        terminalreporter.write_line(f"{FAIL_ON_SKIP} is set: skips outside the allow-list of tests/skip_policy.py fail")
    path = os.environ.get(SUMMARY_FILE)
    if not path:
        return
    out = Path(path)
    line = summary_line(out.stem, terminalreporter.stats)
    terminalreporter.write_line(line)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n", encoding="utf-8")


def _main() -> int:  # python -m tests.skip_policy: print the allow-list
    for a in ALLOWED_SKIPS:
        print(f"{a.tests:<58} if '{a.reason}': {a.why}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
