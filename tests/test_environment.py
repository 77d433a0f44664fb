"""What every record says about the machine: the CPU by name (py-cpuinfo, as the latency gate names it), not the
empty string `platform.processor()` gives on Linux."""

from __future__ import annotations

from cee_bench.results import cpu_name, environment


def test_records_name_the_cpu_as_py_cpuinfo_does():
    from cpuinfo import get_cpu_info

    brand = get_cpu_info()["brand_raw"]
    assert brand and cpu_name() == brand
    assert environment()["hardware"]["processor"] == brand
    assert "peft" not in environment()["packages"]
