"""The CI switch ``MASKWATCH_FAIL_ON_SKIP`` and the per-environment summary line
(``tests/skip_policy.py``), run on a throwaway test suite in a separate pytest process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.skip_policy import (
    ALLOWED_SKIPS,
    FAIL_ON_SKIP,
    REAL_DATA_ABSENT,
    SUMMARY_FILE,
    AllowedSkip,
    allowed_skip,
)

ROOT = Path(__file__).resolve().parents[1]

#: Three skips: one the allow-list permits (real-data test, real-data reason), one allow-listed
#: test skipping for another reason, one test outside the list; and an expected failure.
SUITE = {
    "tests/test_data_import.py": f"""
import pytest

def test_real_data():
    pytest.skip("{REAL_DATA_ABSENT}: ../shared")

def test_other_reason():
    pytest.skip("mosquitto is not installed")
""",
    "tests/test_daemon.py": f"""
import pytest

@pytest.fixture
def shared():
    pytest.skip("{REAL_DATA_ABSENT}: ../shared")

def test_needs_shared(shared):
    pass

def test_runs():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
""",
}


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the plugin under test: tests.skip_policy
    monkeypatch.delenv(FAIL_ON_SKIP, raising=False)
    monkeypatch.delenv(SUMMARY_FILE, raising=False)
    for name, text in SUITE.items():
        (pytester.path / name).parent.mkdir(exist_ok=True)
        (pytester.path / name).write_text(text)
    return pytester


def run(pytester, *args: str):
    return pytester.runpytest_subprocess("-p", "tests.skip_policy", "-p", "no:cacheprovider", *args)


def test_allow_list_matches_test_and_reason():
    entry = allowed_skip("tests/test_data_import.py::test_x", f"{REAL_DATA_ABSENT}: /nonexistent")
    assert entry is not None and entry.why
    assert allowed_skip("tests/test_data_import.py::test_x", "mosquitto is not installed") is None
    assert allowed_skip("tests/test_daemon.py::test_x", f"{REAL_DATA_ABSENT}: /nonexistent") is None
    custom = (AllowedSkip("tests/test_a.py::test_b*", "no GPU", "why"),)
    assert allowed_skip("tests/test_a.py::test_b[1]", "skipped: no GPU here", custom) == custom[0]
    assert allowed_skip("tests/test_a.py::test_c", "no GPU", custom) is None


def test_the_browser_tests_may_skip_only_for_want_of_selenium():
    """The Pi-like env has no selenium (allowed); chromium missing where selenium is (CI without
    its apt packages) is not, and the web server's own tests may not skip at all."""
    from tests.skip_policy import NO_BROWSER

    node = "tests/test_web_browser.py::test_login_stream_status_and_test_alert"
    assert allowed_skip(node, f"{NO_BROWSER}: selenium is not installed here") is not None
    assert allowed_skip("tests/test_web_browser.py", f"{NO_BROWSER}: selenium is not installed here") is not None
    assert allowed_skip(node, "/usr/bin/chromium absent: apt-get install -y chromium chromium-driver") is None
    assert allowed_skip("tests/test_web.py::test_every_route_needs_the_password", NO_BROWSER) is None


def test_no_daemon_pipeline_fault_or_soak_test_may_skip():
    """The subject of these is the project's own code: they must run on any clone."""
    for entry in ALLOWED_SKIPS:
        for name in ("test_daemon", "test_pipeline", "test_faults", "test_soak", "test_device_benchmark", "test_walks"):
            assert not entry.tests.startswith(f"tests/{name}.py"), entry
        if entry.tests.startswith(("tests/test_monitor.py", "tests/test_capture.py", "tests/test_masks.py")):
            assert entry.reason != REAL_DATA_ABSENT, entry


def test_without_the_switch_skips_are_skips(suite):
    result = run(suite)
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == 0


def test_with_the_switch_only_allow_listed_skips_pass(suite, monkeypatch):
    monkeypatch.setenv(FAIL_ON_SKIP, "1")
    result = run(suite, "-rA")
    result.assert_outcomes(passed=1, skipped=1, failed=1, errors=1, xfailed=1)  # the fixture's skip: an error
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_needs_shared*",
        f"skipped, but {FAIL_ON_SKIP} is set and this skip is not in the allow-list*{REAL_DATA_ABSENT}*",
        "*test_other_reason*",
        f"skipped, but {FAIL_ON_SKIP} is set and this skip is not in the allow-list*mosquitto is not installed*",
        f"{FAIL_ON_SKIP} is set*",
        "SKIPPED*test_data_import.py*real data folder is absent*",
    ])


def test_with_the_switch_a_module_that_skips_whole_fails(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv(FAIL_ON_SKIP, "1")
    pytester.makepyfile(test_mod='import pytest\npytest.importorskip("no_such_module_here")\n\ndef test_x():\n    pass\n')
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*no_such_module_here*"])
    monkeypatch.setenv(FAIL_ON_SKIP, "0")  # "0" is off, like unset
    assert run(pytester).ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_summary_line_names_the_environment_and_counts(suite, monkeypatch, tmp_path):
    out = tmp_path / "summary" / "workstation.txt"
    monkeypatch.setenv(SUMMARY_FILE, str(out))
    result = run(suite)
    line = out.read_text().strip()
    assert line.startswith("workstation (Python ") and "numpy " in line
    assert line.endswith(": 1 passed, 3 skipped, 0 failed, 1 xfailed")
    result.stdout.fnmatch_lines([line])


def test_ci_cannot_skip_the_emulated_arm64_run():
    """make test-arm64 may skip Trixie where the mirror lacks it, never because arm64 cannot run."""
    from tests.skip_policy import allowed_skip

    node = "tests/arm64_emulated.py::test_provisioned_card_boots_and_reports_on_arm64[{}]"
    binfmt = "cannot run arm64 binaries here: binfmt_misc has no qemu-aarch64 entry"
    assert allowed_skip(node.format("bookworm"), binfmt) is None
    assert allowed_skip(node.format("trixie"), binfmt) is None
    assert allowed_skip(node.format("bookworm"), "the Debian mirror X does not serve bookworm") is None
    assert allowed_skip(node.format("trixie"), "the Debian mirror X does not serve trixie") is not None
