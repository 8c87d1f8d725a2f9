"""Dependency audit of uv.lock (run by `make lint`): pip-audit first, then PyPI's own data.

1. The lock is exported (`uv export --frozen`) and audited with `pip-audit --strict`
   against PyPI's vulnerability service, which reads PyPI's per-release JSON
   (`/pypi/<name>/<version>/json`).
2. Where that per-release API is not served (a registry mirror that serves only the
   simple index and the per-project JSON, as on this project's machines), pip-audit
   cannot collect its data and says "Dependency not found on PyPI" for every package.
   Then the per-project JSON (`/pypi/<name>/json`) is read instead: its `vulnerabilities`
   are PyPI's advisories (the same data pip-audit reads) for the newest release, so
   every package locked at its newest release is audited from it. Packages locked below
   their newest release cannot be audited that way: they are listed by name as NOT
   AUDITED, never counted as clean.

Exit status: 0 no known vulnerability in what was audited; 1 a known vulnerability;
2 the audit could not run (no vulnerability data reachable at all, or nothing audited).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYPI = os.environ.get("AUDIT_PYPI_URL", "https://pypi.org/pypi")
TIMEOUT = 20


def export_lock(directory: Path) -> Path:
    uv = ROOT / ".tools" / "bin" / "uv"
    requirements = directory / "requirements.txt"
    subprocess.run(  # noqa: S603 - fixed arguments, our own uv
        [
            str(uv) if uv.exists() else "uv",
            "export",
            "--frozen",
            "--format",
            "requirements-txt",
            "--no-hashes",
            "--no-emit-project",
            "--all-groups",
            "--quiet",
            "-o",
            str(requirements),
        ],
        check=True,
        cwd=ROOT,
    )
    return requirements


def pins_of(requirements: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def run_pip_audit(requirements: Path, report: Path) -> tuple[int, str]:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [
            str(pip_audit),
            "-r",
            str(requirements),
            "--no-deps",
            "--disable-pip",
            "--strict",
            "--progress-spinner",
            "off",
            "--format",
            "json",
            "--output",
            str(report),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stderr + result.stdout


def fetch_project(name: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{PYPI}/{name}/json", timeout=TIMEOUT) as response:  # noqa: S310 - https URL
            data: dict[str, Any] = json.load(response)
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def evaluate(
    pins: dict[str, str], projects: dict[str, dict[str, Any] | None]
) -> tuple[int, list[str]]:
    """The fallback's verdict: (exit status, report lines) from per-project JSON."""
    lines: list[str] = []
    vulnerable: list[str] = []
    audited: list[str] = []
    not_audited: list[str] = []
    unreachable: list[str] = []
    for name, version in sorted(pins.items()):
        project = projects.get(name)
        if project is None:
            unreachable.append(name)
            continue
        newest = str(project.get("info", {}).get("version", ""))
        if newest != version:
            not_audited.append(f"{name} {version} (newest {newest})")
            continue
        audited.append(name)
        for vuln in project.get("vulnerabilities") or []:
            if vuln.get("withdrawn"):
                continue
            fixed = ", ".join(vuln.get("fixed_in") or []) or "no fix listed"
            vulnerable.append(f"{name} {version}: {vuln.get('id')} (fixed in {fixed})")
    for entry in vulnerable:
        lines.append(f"VULNERABLE {entry}")
    if not_audited:
        lines.append(
            f"NOT AUDITED ({len(not_audited)}; PyPI's data here covers only newest releases): "
            + "; ".join(not_audited)
        )
    if unreachable:
        lines.append(f"NOT AUDITED ({len(unreachable)}; no data reached): {', '.join(unreachable)}")
    lines.append(
        f"audited {len(audited)} of {len(pins)} locked packages from PyPI's per-project data: "
        f"{len(vulnerable)} known vulnerabilit{'y' if len(vulnerable) == 1 else 'ies'}"
    )
    if vulnerable:
        return 1, lines
    if not audited:
        return 2, [*lines, "dependency audit could not run: no vulnerability data reachable"]
    return 0, lines


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="portal-audit-") as scratch:
        directory = Path(scratch)
        requirements = export_lock(directory)
        pins = pins_of(requirements)
        code, output = run_pip_audit(requirements, directory / "report.json")
        if code == 0:
            print(f"audit: pip-audit found no known vulnerability in {len(pins)} locked packages")
            return 0
        if "Dependency not found on PyPI" not in output:
            # Real findings (or another failure): pip-audit's own report decides.
            sys.stderr.write(output)
            print("audit: pip-audit failed (see above)")
            return 1
        print(
            'audit: pip-audit --strict could not collect its data ("Dependency not found on '
            "PyPI\": this registry does not serve PyPI's per-release JSON); falling back to "
            "PyPI's per-project JSON"
        )
        with ThreadPoolExecutor(max_workers=8) as pool:
            projects = dict(zip(pins, pool.map(fetch_project, pins), strict=True))
        status, lines = evaluate(pins, projects)
        for line in lines:
            print(f"audit: {line}")
        return status


if __name__ == "__main__":
    sys.exit(main())
