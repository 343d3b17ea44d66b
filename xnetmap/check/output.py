"""How a check result is shown: a short human summary, JSON, and JUnit XML for CI systems."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ..fsutil import atomic_write_text
from .result import CheckResult, Metric


def _fmt(m: Metric, x: float) -> str:
    if m.unit == "%":
        return f"{x:.2f} %"
    if m.unit == "points":
        return f"{x:+.2f} pts"
    return f"{x:.4g}"


def _line(m: Metric) -> str:
    value = _fmt(m, m.value) if math.isfinite(m.value) else "not measured"
    if m.interval is not None:
        lo, hi = m.interval
        value += f" [{lo:+.2f}, {hi:+.2f}]"
    gate = f"{m.op} {_fmt(m, m.threshold)}" if m.threshold is not None else "(not gated)"
    return f"{m.verdict():4}  {m.name:28} {value:28} {gate}"


def format_summary(result: CheckResult) -> str:
    """A few lines naming each metric, its value and its threshold, then the verdict."""
    lines = [
        f"xnetmap check: {result.candidate} against {result.reference}",
        f"  {result.n_val} val images, {'labelled' if result.labelled else 'no labels'}; "
        f"comparison: {', '.join(result.modes)}",
    ]
    lines += [f"  note: {n}" for n in result.notes]
    lines += ["  " + _line(m) for m in result.metrics]
    failed = [m.name for m in result.metrics if m.passed is False]
    n_gates = len(result.gated)
    if failed:
        lines.append(f"FAIL: {len(failed)} of {n_gates} gates failed ({', '.join(failed)})")
    else:
        lines.append(f"PASS: all {n_gates} gates passed")
    if n_gates == 0:
        lines[-1] = (
            "FAIL: no gate was measured; give thresholds for the metrics listed above "
            "(flags or --policy)"
        )
    return "\n".join(lines)


def write_json(result: CheckResult, path) -> Path:
    return atomic_write_text(path, json.dumps(result.to_dict(), indent=2) + "\n")


def junit_xml(result: CheckResult) -> str:
    """JUnit XML: one test case per metric (gated ones can fail; the rest pass with their value)."""
    suite = ET.Element(
        "testsuite",
        name="xnetmap.check",
        tests=str(len(result.metrics)),
        failures=str(sum(m.passed is False for m in result.metrics)),
        errors="0",
        skipped="0",
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("reference", result.reference),
        ("candidate", result.candidate),
        ("n_val", str(result.n_val)),
    ):
        ET.SubElement(props, "property", name=key, value=value)
    for m in result.metrics:
        case = ET.SubElement(suite, "testcase", classname="xnetmap.check", name=m.name, time="0")
        text = _line(m)
        if m.passed is False:
            failure = ET.SubElement(case, "failure", message=text, type="threshold")
            failure.text = m.description
        ET.SubElement(case, "system-out").text = text
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(result: CheckResult, path) -> Path:
    return atomic_write_text(path, junit_xml(result))
